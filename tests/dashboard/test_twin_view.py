"""The read-only twin on device and module pages: versions, etag, desired beside reported, delta."""

import pytest
from django.template.loader import render_to_string
from django.urls import reverse
from support import create_identities, desired

from devices import hub, twins

DEVICE = "dev-1"
MODULE = "mod-1"


@pytest.fixture(params=["", MODULE], ids=["device", "module"])
def target(request, dashboard_hub, registry):
    """The device and module on the hub, keys by module id; the param picks the twin."""
    return request.param


@pytest.fixture
def keys(dashboard_hub, registry):
    return create_identities(registry, DEVICE, MODULE)


def detail_url(module_id=""):
    if module_id:
        return reverse("devices:module-detail", args=[DEVICE, module_id])
    return reverse("devices:device-detail", args=[DEVICE])


def squeezed(response) -> str:
    """The page's HTML with runs of whitespace made one space."""
    return " ".join(response.content.decode().split())


def set_desired(registry, module_id, values):
    if module_id:
        registry.update_module_twin(DEVICE, module_id, desired(values))
    else:
        registry.update_twin(DEVICE, desired(values))


def report(client_for, keys, module_id, values):
    device = client_for(DEVICE, keys[module_id], module_id)
    device.connect()
    device.patch_twin_reported_properties(values)
    device.shutdown()


def test_the_page_shows_versions_desired_beside_reported_and_the_delta(
    target, keys, registry, client_for, viewer, client_as
):
    set_desired(registry, target, {
        "telemetryInterval": 122, "mode": "eco", "fan": True, "targetTemperature": 30,
        "limits": {"low": 1, "high": 9},
    })  # fmt: skip
    report(client_for, keys, target, {
        "telemetryInterval": 122, "mode": "fast", "fan": 1, "serial": "A-7",
        "targetTemperature": {"value": 30, "ac": 200, "av": 2, "ad": "applied"},
        "limits": {"low": 1, "high": 9, "unit": "C"},
    })  # fmt: skip
    twin = hub.get_twin(DEVICE, target)

    page = client_as(viewer).get(detail_url(target))

    html = squeezed(page)
    assert page.status_code == 200
    assert f"<dd>{twin['version']}</dd>" in html
    assert twin["etag"] in html
    assert f'<dd class="desired-version">{twin["properties"]["desired"]["$version"]}</dd>' in html
    assert f'<dd class="reported-version">{twin["properties"]["reported"]["$version"]}</dd>' in html
    # Delta: "mode" differs, "fan" true is not 1; the Plug and Play acknowledgement and the
    # reported object carrying more than was desired are not differences.
    assert "Delta: 2 desired properties not reported with the desired value" in html
    assert "<code>mode</code>: desired <code>&quot;eco&quot;</code>, reported" in html
    assert "<code>fan</code>: desired <code>true</code>, reported <code>1</code>" in html
    assert html.count('<tr class="delta">') == 2
    assert "<code>serial</code>" in html  # reported-only keys are listed too
    assert "$metadata" in html and "$lastUpdated" in html  # the whole twin, read-only
    assert "Edit desired properties" not in html  # viewers get no editor links


def test_a_desired_property_not_reported_is_in_the_delta(
    target, keys, registry, client_as, operator
):
    set_desired(registry, target, {"telemetryInterval": 5})

    html = squeezed(client_as(operator).get(detail_url(target)))

    assert "<code>telemetryInterval</code>: desired <code>5</code>, not reported" in html
    suffix = f"modules/{MODULE}/" if target else ""
    assert f'href="/devices/{DEVICE}/{suffix}twin/desired/"' in html
    assert f'href="/devices/{DEVICE}/{suffix}twin/json/"' in html


def test_a_twin_that_matches_has_no_delta(target, keys, registry, client_for, client_as, viewer):
    set_desired(registry, target, {"a": {"b": [1, 2]}})
    report(client_for, keys, target, {"a": {"b": [1, 2]}})

    html = squeezed(client_as(viewer).get(detail_url(target)))

    assert "No delta: every desired property is reported with its desired value." in html


@pytest.mark.django_db
def test_the_partial_says_so_when_the_twin_could_not_be_read():
    context = {"twin": None, "device_id": DEVICE, "module_id": "", "can_edit_twin": True,
               "twin_error": "Reading the twin of dev-1: the hub cannot be reached"}  # fmt: skip

    html = render_to_string("devices/partials/twin.html", context)

    assert "The twin could not be read from the hub: Reading the twin of dev-1" in html


# -- the delta itself ----------------------------------------------------------------------
def test_delta_compares_json_values_and_plug_and_play_acknowledgements():
    desired = {
        "same": 1, "float": 1, "bool": True, "missing": "x", "ack": 30, "ack_old": 30,
        "nested": {"a": 1, "b": {"c": 2}}, "object_vs_scalar": {"a": 1},
    }  # fmt: skip
    reported = {
        "same": 1, "float": 1.0, "bool": 1, "ack": {"value": 30, "ac": 200, "av": 4},
        "ack_old": {"value": 25, "ac": 202, "av": 3}, "nested": {"a": 1, "b": {"c": 3}, "z": 0},
        "object_vs_scalar": 5,
    }  # fmt: skip

    found = {d.path: d for d in twins.delta(desired, reported)}

    assert sorted(found) == ["ack_old", "bool", "missing", "nested.b.c", "object_vs_scalar"]
    assert found["missing"].missing
    assert found["ack_old"].reported == 25 and found["ack_old"].ack == {"ac": 202, "av": 3}
    assert found["nested.b.c"].reported == 3
