"""Input a user can craft gets a clear answer and no 500, through the real views against a real
localhub: hostile query projections, a 800-deep hidden field, a 999999999-row claim; ids that
would be options on the simulator's command line."""

import json

import pytest
from django.urls import reverse
from pages import text
from support import create_identities

from devices import simulator_control
from devices.simulator_control import StartFailed

pytestmark = pytest.mark.django_db
LIST = reverse("devices:device-list")


@pytest.mark.parametrize(
    "query, shown",
    [
        ("SELECT deviceId AS properties FROM devices", '{"properties": "d1"}'),
        ("SELECT properties.desired AS deviceId FROM devices", '"$version": 2'),
        ("SELECT tags.a AS moduleId, deviceId FROM devices", '{"moduleId": 7}'),
    ],
)
def test_hostile_projections_are_shown_as_they_are(
    client_as, viewer, dashboard_hub, registry, query, shown
):
    create_identities(registry, "d1")
    registry.update_twin("d1", {"tags": {"a": 7}, "properties": {"desired": {"x": 1}}}, "*")

    response = client_as(viewer).get(LIST, {"hub_query": query})

    assert response.status_code == 200
    assert shown in text(response)


def desired_form(device_id: str, base: str, **rows) -> dict:
    data = {"etag": "*", "base": base, "rows-INITIAL_FORMS": "0", "rows-TOTAL_FORMS": "1"}
    data.update({"rows-0-key": "x", "rows-0-type": "number", "rows-0-value": "2"})
    data.update(rows)
    return data


def test_a_desired_form_whose_hidden_base_nests_800_deep_is_refused_at_once(
    client_as, operator, dashboard_hub, registry
):
    create_identities(registry, "d1")
    etag = registry.get_twin("d1").etag
    deep = '{"a":' * 800 + "1" + "}" * 800

    response = client_as(operator).post(
        reverse("devices:device-twin-form", args=["d1"]), desired_form("d1", deep)
    )

    assert response.status_code == 200  # the form again, saying why
    assert "nested deeper than 128 levels" in text(response)
    assert registry.get_twin("d1").etag == etag


def test_a_tiny_post_claiming_a_billion_rows_renders_only_the_rows_posted(
    client_as, operator, dashboard_hub, registry
):
    create_identities(registry, "d1")

    response = client_as(operator).post(
        reverse("devices:device-twin-form", args=["d1"]),
        {"etag": "*", "base": "{}", "rows-TOTAL_FORMS": "999999999", "add_row": ""},
    )

    assert response.status_code == 200
    assert len(response.context["form"].rows.forms) <= 2
    assert len(response.content) < 100_000


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    yield settings.VAR_DIR
    simulator_control.stop_all()


def test_a_device_id_shaped_like_an_option_stays_an_id_for_the_simulator(
    dashboard_hub, registry, var_dir
):
    """ "--settings=x" is a valid IoT Hub id; on the command line it must not make Django
    import a module named x."""
    with pytest.raises(StartFailed) as failed:
        simulator_control.start("--settings=nosuchmodule", "m1", events_url="")

    assert "No module named" not in failed.value.message
    assert "'--settings=nosuchmodule' was not found" in failed.value.message

    create_identities(registry, "--settings=nosuchmodule", "m1")
    running = simulator_control.start("--settings=nosuchmodule", "m1", events_url="")
    assert running.pid
    module = registry.get_module("--settings=nosuchmodule", "m1")
    assert module.connection_state == "Connected"
    assert json.loads(running.log_path.read_text().splitlines()[0])["type"] == "module.connected"
