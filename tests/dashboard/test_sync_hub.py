"""`python manage.py sync_hub`: the mirror made equal to the hub, whoever changed the hub."""

import io
import os
import subprocess
import sys

import pytest
from azure.iot.hub.models import Twin, TwinProperties
from django.core.management import CommandError, call_command
from support import REPO, create_identities, primary_key

from devices import hub, mirror
from devices.models import Device, Module


def sync(**options) -> str:
    out = io.StringIO()
    call_command("sync_hub", stdout=out, **options)
    return out.getvalue()


def hub_state(registry) -> dict:
    """What the hub holds, read through the SDK: by device id, its status, tags, desired
    $version and modules."""
    state = {}
    for device in registry.get_devices():
        twin = registry.get_twin(device.device_id)
        modules = {
            m.module_id: registry.get_module_twin(device.device_id, m.module_id).etag
            for m in registry.get_modules(device.device_id)
        }
        state[device.device_id] = (
            device.status,
            twin.tags or {},
            twin.properties.desired["$version"],
            twin.etag,
            modules,
        )
    return state


def mirror_state() -> dict:
    modules = {}
    for module in Module.objects.select_related("device"):
        modules.setdefault(module.device.device_id, {})[module.module_id] = module.twin_etag
    return {
        d.device_id: (
            d.status,
            d.twin_tags,
            d.twin_desired_version,
            d.twin_etag,
            modules.get(d.device_id, {}),
        )
        for d in Device.objects.all()
    }


@pytest.fixture
def small_pages(monkeypatch):
    """Ten twins a page, so that 25 devices and their modules need several pages."""
    monkeypatch.setattr(hub, "QUERY_PAGE_SIZE", 10)


@pytest.mark.django_db
def test_sync_follows_creates_changes_and_deletes_made_outside_the_dashboard(
    dashboard_hub, registry, small_pages
):
    for i in range(25):
        create_identities(registry, f"dev-{i:02d}", *(["edge", "camera"] if i < 3 else []))

    out = sync()

    assert mirror_state() == hub_state(registry)
    pages = [line for line in out.splitlines() if line.startswith("page ")]
    assert pages[:3] == [
        "page 1: 10 devices, 0 modules",
        "page 2: 20 devices, 0 modules",
        "page 3: 25 devices, 0 modules",
    ]
    assert pages[-1] == "page 4: 25 devices, 6 modules"
    assert "25 devices, 6 modules: 31 created, 0 updated, 0 deleted (in " in out

    # Changed outside the dashboard, through the service SDK.
    registry.update_twin("dev-05", Twin(tags={"location": "lab"}), "*")
    registry.update_twin("dev-06", Twin(properties=TwinProperties(desired={"interval": 30})), "*")
    disabled = registry.get_device("dev-07")
    registry.update_device_with_sas(
        "dev-07", disabled.etag, primary_key(disabled), None, "disabled", status_reason="lost"
    )
    registry.update_module_twin("dev-01", "edge", Twin(tags={"role": "gateway"}), "*")
    registry.delete_device("dev-00")  # with its two modules
    registry.delete_module("dev-02", "camera")
    registry.create_module_with_sas("dev-10", "fresh", None, None, None)
    create_identities(registry, "dev-25", "added")

    out = sync()

    assert mirror_state() == hub_state(registry)
    assert "25 devices, 5 modules: 3 created, 4 updated, 4 deleted" in out
    lab = Device.objects.get(device_id="dev-05")
    assert lab.twin_tags == {"location": "lab"}
    assert Device.objects.get(device_id="dev-06").twin_desired["interval"] == 30
    lost = Device.objects.get(device_id="dev-07")
    assert (lost.status, lost.status_reason) == ("disabled", "lost")
    assert Module.objects.get(device__device_id="dev-01", module_id="edge").twin_tags == {
        "role": "gateway"
    }
    assert not Module.objects.filter(device__device_id="dev-00").exists()

    assert "25 devices, 5 modules: 0 created, 0 updated, 0 deleted" in sync()


@pytest.mark.django_db
def test_a_device_that_connects_is_updated_by_the_next_sync(dashboard_hub, registry, client_for):
    keys = create_identities(registry, "sensor")
    sync()
    client = client_for("sensor", keys[""])
    client.connect()

    assert "1 devices, 0 modules: 0 created, 1 updated, 0 deleted" in sync()
    assert Device.objects.get().connection_state == "Connected"


@pytest.mark.django_db
def test_rows_the_hub_confirmed_unchanged_count_as_synced(dashboard_hub, registry):
    create_identities(registry, "d1", "m1")
    mirror.sync_hub()
    first = Device.objects.get().synced_at

    assert mirror.sync_hub().updated == 0
    assert Device.objects.get().synced_at > first
    assert Module.objects.get().synced_at == Device.objects.get().synced_at


@pytest.mark.django_db
def test_an_empty_hub_empties_the_mirror(dashboard_hub, registry):
    create_identities(registry, "d1", "m1")
    sync()
    registry.delete_device("d1")

    assert "0 devices, 0 modules: 0 created, 0 updated, 2 deleted" in sync()
    assert not Device.objects.exists() and not Module.objects.exists()


@pytest.mark.django_db
def test_progress_is_not_printed_at_verbosity_0(dashboard_hub, registry):
    create_identities(registry, "d1")

    out = sync(verbosity=0)

    assert "page" not in out and "1 devices, 0 modules: 1 created" in out


@pytest.mark.django_db
def test_with_the_hub_down_the_command_fails_with_its_message(dashboard_hub, registry):
    create_identities(registry, "d1")
    sync()
    dashboard_hub.stop()

    with pytest.raises(CommandError, match=r"cannot be reached\. Is it running\?"):
        sync()

    assert Device.objects.filter(device_id="d1").exists()  # the mirror is left as it was


def test_from_the_shell_a_hub_down_exits_1_with_a_message_and_no_traceback(localhub, tmp_path):
    localhub.stop()
    env = {
        **os.environ,
        "IOTADMIN_VAR_DIR": str(tmp_path / "var"),
        "LOCALHUB_DIR": str(localhub.settings.data_dir),
        "IOTHUB_CONNECTION_STRING": "",
    }

    done = subprocess.run(
        [sys.executable, "manage.py", "sync_hub"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert "CommandError: Running the query: the hub at " in done.stderr
    assert "cannot be reached. Is it running?" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
