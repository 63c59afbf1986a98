"""devices.mirror after a write through the dashboard: rows from the hub's answers."""

import pytest
from azure.iot.hub.models import Twin
from support import create_identities

from devices import hub, mirror
from devices.models import Device, Module

pytestmark = pytest.mark.django_db


def test_save_module_creates_its_device_row_from_the_hub(dashboard_hub, registry):
    create_identities(registry, "gateway", "camera")

    module = mirror.save_module(hub.get_module("gateway", "camera"))

    assert module.device.device_id == "gateway"
    device = Device.objects.get(device_id="gateway")
    assert device.generation_id == hub.get_device("gateway")["generationId"]
    assert (device.status, module.etag) == ("enabled", hub.get_module("gateway", "camera")["etag"])


def test_save_twin_stores_the_answer_without_asking_the_hub_again(dashboard_hub, registry):
    create_identities(registry, "gateway", "camera")
    mirror.save_device(hub.get_device("gateway"), hub.get_twin("gateway"))
    mirror.save_module(hub.get_module("gateway", "camera"))
    twin = registry.update_module_twin("gateway", "camera", Twin(tags={"room": "42"}), "*")
    answer = hub.get_twin("gateway", "camera")
    dashboard_hub.stop()  # the rows exist: nothing more to read from the hub

    module = mirror.save_twin("gateway", "camera", answer)

    assert module.twin_tags == {"room": "42"}
    assert module.twin_etag == twin.etag and module.synced_at is not None


def test_save_twin_creates_the_rows_the_mirror_lacks(dashboard_hub, registry):
    create_identities(registry, "gateway", "camera")

    mirror.save_twin("gateway", "camera", hub.get_twin("gateway", "camera"))
    device = mirror.save_twin("gateway", "", hub.get_twin("gateway"))

    assert Module.objects.get().device == device
    assert device.twin_desired_version == 1


def test_forget_device_takes_its_modules_along(dashboard_hub, registry):
    create_identities(registry, "gateway", "camera", "relay")
    for module_id in ("camera", "relay"):
        mirror.save_module(hub.get_module("gateway", module_id))

    mirror.forget_module("gateway", "relay")
    assert list(Module.objects.values_list("module_id", flat=True)) == ["camera"]
    mirror.forget_device("gateway")

    assert not Device.objects.exists() and not Module.objects.exists()
