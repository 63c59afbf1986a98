"""Ids from the URL are IoT Hub ids before any view sees them: dot ids (".", "..", "%2e%2e")
reach no route, for any role and method, and the hub is checked afterwards; ids using the
hub's special characters reach exactly their own identity."""

import re

import pytest
from pages import text, url
from support import create_identities

from devices.urls import urlpatterns

pytestmark = pytest.mark.django_db

DOTS = ["..", ".", "%2e%2e", "%2E.", "..."]


def routes_with_ids() -> list[str]:
    """Every dashboard route that takes an id, as a path template (``{device}``...)."""
    found = []
    for pattern in urlpatterns:
        route = str(pattern.pattern)
        if "<hubid:" not in route:
            continue
        route = route.replace("<hubid:device_id>", "{device}")
        route = route.replace("<hubid:module_id>", "{module}")
        found.append("/" + route.replace("<str:which>", "primary"))
    return found


ROUTES = routes_with_ids()


def hostile_paths() -> list[str]:
    paths = []
    for route in ROUTES:
        for dots in DOTS:
            if "{module}" in route:
                paths.append(route.format(device="sensor-1", module=dots))
            paths.append(route.format(device=dots, module="thermo"))
    return paths


def hub_state(registry) -> dict:
    device = registry.get_device("sensor-1")
    return {
        "device": (device.etag, device.status),
        "twin": registry.get_twin("sensor-1").etag,
        "modules": sorted((m.module_id, m.etag) for m in registry.get_modules("sensor-1")),
        "module twin": registry.get_module_twin("sensor-1", "thermo").etag,
    }


@pytest.fixture
def sensor(dashboard_hub, registry):
    create_identities(registry, "sensor-1", "thermo")
    return registry


def test_every_route_with_an_id_is_covered():
    assert len(ROUTES) >= 15  # device and module pages, actions, twin editors, simulator


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_dot_ids_reach_no_route_and_change_nothing(client_as, make_user, sensor, role):
    registry = sensor
    before = hub_state(registry)
    client = client_as(make_user(role))
    keys = [registry.get_device("sensor-1").authentication.symmetric_key.primary_key]
    keys.append(registry.get_module("sensor-1", "thermo").authentication.symmetric_key.primary_key)
    form = {"etag": "*", "which": "primary", "action": "start", "status": "disabled"}
    form.update(desired='{"x": 1}', tags="{}", mode="patch", base="{}")

    for path in hostile_paths():
        for answer in (client.get(path), client.post(path, form)):
            assert answer.status_code == 404, (path, answer.status_code)
            assert "There is no such page" in text(answer), path
            for key in keys:
                assert key not in text(answer), path

    assert hub_state(registry) == before
    assert registry.get_module("sensor-1", "thermo").module_id == "thermo"


SPECIAL = ["a#b", "a?b", "a%2Fb", "it's", "$edge", "a=b", "-x", "--settings=x"]


def test_ids_with_the_hubs_special_characters_open_their_own_identity(
    client_as, viewer, dashboard_hub, registry
):
    create_identities(registry, "a")  # what a truncated "a#b" or "a?b" would reach
    for device_id in SPECIAL:
        create_identities(registry, device_id, "m#1")

    for device_id in SPECIAL:
        device_page = text(client_as(viewer).get(url("device-detail", device_id)))
        module_page = text(client_as(viewer).get(url("module-detail", device_id, "m#1")))

        generation = registry.get_device(device_id).generation_id
        assert generation in device_page, device_id
        assert registry.get_module(device_id, "m#1").generation_id in module_page, device_id
        assert re.search(rf"DeviceId={re.escape(device_id)};ModuleId=m#1;", module_page)
