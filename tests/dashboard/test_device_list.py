"""The device list: the mirror searched, filtered and paged; the IoT Hub query box."""

import re

import pytest
from django.urls import reverse
from pages import text
from support import create_identities, desired

from devices import mirror
from devices.models import Device, Module
from devices.views import device_list as view

LIST = reverse("devices:device-list")


def seed(*device_ids, modules=0, **fields):
    """Mirror rows, as a sync would leave them (the list never asks the hub)."""
    devices = Device.objects.bulk_create(Device(device_id=d, **fields) for d in device_ids)
    Module.objects.bulk_create(
        Module(device=device, module_id=f"m{j}") for device in devices for j in range(modules)
    )
    return devices


def test_the_list_needs_a_login(client, db):
    response = client.get(LIST)

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
def test_every_role_sees_the_devices_synced_from_the_hub(
    request, role, db, dashboard_hub, registry, client_as
):
    create_identities(registry, "thermostat-1", "sensor", "relay")
    create_identities(registry, "thermostat-2")
    registry.update_twin("thermostat-1", desired({"interval": 5}), "*")
    mirror.sync_hub()

    response = client_as(request.getfixturevalue(role)).get(LIST)

    assert response.status_code == 200
    rows = text(response).split("<tr>")[2:]
    assert len(rows) == 2
    first = rows[0]
    assert f'href="{reverse("devices:device-detail", args=["thermostat-1"])}"' in first
    assert 'class="badge badge-enabled">enabled' in first
    assert 'class="badge badge-Disconnected">Disconnected' in first
    assert "never" in first  # last activity
    assert "<td>2</td>" in first  # modules
    assert "<td>2</td>\n      <td>1</td>" in first  # desired $version 2, reported $version 1
    assert "<td>0</td>" in rows[1]
    assert "2 devices in the dashboard's mirror" in text(response)


def test_search_finds_ids_containing_the_text(db, viewer, client_as):
    seed("sensor-01", "Sensor-02", "pump-01")

    page = text(client_as(viewer).get(LIST, {"search": "sensor"}))

    assert "sensor-01" in page and "Sensor-02" in page
    assert "pump-01" not in page
    assert 'value="sensor"' in page  # the search stays in its box
    assert "2 devices match" in page


def test_filters_by_status_and_connection_state(db, viewer, client_as):
    seed("on-connected", connection_state="Connected")
    seed("on-idle")
    seed("off-idle", "off-idle-2", status="disabled", status_reason="stolen")
    client = client_as(viewer)

    disabled = text(client.get(LIST, {"status": "disabled"}))
    connected = text(client.get(LIST, {"connection": "Connected"}))
    both = text(client.get(LIST, {"status": "enabled", "connection": "Disconnected"}))
    nonsense = text(client.get(LIST, {"status": "purple"}))

    assert "off-idle" in disabled and "off-idle-2" in disabled and "on-" not in disabled
    assert '<option value="disabled" selected>' in disabled
    assert "on-connected" in connected and "on-idle" not in connected
    assert 'class="badge badge-Connected">Connected' in connected
    assert "on-idle" in both and "on-connected" not in both and "off-idle" not in both
    assert "4 devices in the dashboard's mirror" in nonsense  # an unknown value filters nothing


def test_pages_keep_the_filters_and_cost_the_same_queries_on_any_page(
    db, viewer, client_as, django_assert_max_num_queries
):
    seed(*(f"dev-{i:04d}" for i in range(6 * view.PAGE_SIZE)), modules=3)
    seed("other-device")
    client = client_as(viewer)
    client.get(LIST)  # the session and permission caches warm up

    with django_assert_max_num_queries(7) as first_queries:
        first = text(client.get(LIST, {"search": "dev-"}))
    with django_assert_max_num_queries(len(first_queries)) as last_queries:
        last = text(client.get(LIST, {"search": "dev-", "page": 6}))

    assert len(last_queries) == len(first_queries)
    assert "dev-0000" in first and f"dev-{view.PAGE_SIZE:04d}" not in first
    assert "Page 1 of 6" in first and "Page 6 of 6" in last
    assert 'href="?search=dev-&page=2"' in first
    assert 'href="?search=dev-&page=5"' in last and 'rel="next"' not in last
    assert f"dev-{6 * view.PAGE_SIZE - 1:04d}" in last and "other-device" not in last
    assert last.count("<td>3</td>") == view.PAGE_SIZE  # module counts, one query for the page


def test_a_page_number_out_of_range_shows_the_last_page(db, viewer, client_as):
    seed("a", "b")

    response = client_as(viewer).get(LIST, {"page": "99"})
    junk = client_as(viewer).get(LIST, {"page": "x"})

    assert response.status_code == 200 and junk.status_code == 200
    assert "a</a>" in text(response) and "a</a>" in text(junk)


def test_an_empty_mirror_says_so_and_points_each_role_to_what_it_can_do(
    db, viewer, operator, admin, client_as
):
    as_viewer = text(client_as(viewer).get(LIST))
    as_operator = text(client_as(operator).get(LIST))
    as_admin = text(client_as(admin).get(LIST))

    assert "No devices yet." in as_viewer and "ask an operator to sync" in as_viewer
    assert reverse("devices:sync") not in as_viewer
    assert reverse("devices:device-create") not in as_viewer
    assert "Sync with the hub" in as_operator and reverse("devices:sync") in as_operator
    assert reverse("devices:device-create") not in as_operator
    assert f'href="{reverse("devices:device-create")}">Create a device' in as_admin


def test_filters_that_match_nothing_say_so(db, viewer, client_as):
    seed("sensor-01")

    page = text(client_as(viewer).get(LIST, {"search": "pump"}))

    assert "No device matches these filters." in page
    assert f'<a href="{LIST}">Clear the filters</a>' in page


def test_the_list_shows_when_its_rows_were_read_from_the_hub(
    dashboard_hub, registry, client_as, viewer
):
    create_identities(registry, "d1")
    client = client_as(viewer)
    assert "has not read any device from the hub" in text(client.get(LIST))

    mirror.sync_hub()

    page = text(client.get(LIST))
    assert "these rows were read from the hub 0\xa0minutes ago" in page
    assert f"({Device.objects.get().synced_at:%Y-%m-%d %H:%M:%S} UTC)" in page


def test_an_htmx_request_gets_only_the_results(db, viewer, client_as):
    seed("sensor-01", "pump-01")

    response = client_as(viewer).get(
        LIST, {"search": "pump"}, headers={"HX-Request": "true", "HX-Target": "results"}
    )

    body = text(response)
    assert "<html" not in body and "<form" not in body
    assert "pump-01" in body and "sensor-01" not in body
    assert "HX-Request" in response["Vary"]


# -- the IoT Hub query box ----------------------------------------------------------------
def tag(registry, device_id, **tags):
    from azure.iot.hub.models import Twin

    registry.update_twin(device_id, Twin(tags=tags), "*")


def test_a_condition_runs_on_the_hub_not_the_mirror(dashboard_hub, registry, client_as, viewer):
    for device_id, place in [("lab-1", "lab"), ("lab-2", "lab"), ("yard-1", "yard")]:
        create_identities(registry, device_id)
        tag(registry, device_id, location=place)

    page = text(client_as(viewer).get(LIST, {"hub_query": "tags.location = 'lab'"}))

    assert "Run on the hub: <code>SELECT * FROM devices WHERE tags.location = 'lab'</code>" in page
    assert f'href="{reverse("devices:device-detail", args=["lab-1"])}"' in page
    assert "lab-2" in page and "yard-1" not in page
    assert '{"location": "lab"}' in page
    assert "value=\"tags.location = 'lab'\"" in page  # the query stays in its box
    assert Device.objects.count() == 0  # nothing was read from (or written to) the mirror


def test_whole_queries_list_modules_and_projections(dashboard_hub, registry, client_as, viewer):
    create_identities(registry, "gateway", "camera")
    tag(registry, "gateway", location="roof")
    client = client_as(viewer)

    modules = text(client.get(LIST, {"hub_query": "SELECT * FROM devices.modules"}))
    projected = text(
        client.get(LIST, {"hub_query": "SELECT deviceId, tags.location AS place FROM devices"})
    )
    where = text(client.get(LIST, {"hub_query": "WHERE deviceId = 'gateway'"}))

    assert f'href="{reverse("devices:module-detail", args=["gateway", "camera"])}"' in modules
    assert "Selected values" in projected and '{"place": "roof"}' in projected
    assert "gateway</a>" in where


def test_query_results_page_with_the_hubs_continuation_token(
    dashboard_hub, registry, client_as, viewer, monkeypatch
):
    monkeypatch.setattr(view, "HUB_PAGE_SIZE", 2)
    for i in range(5):
        create_identities(registry, f"d{i}")
    client = client_as(viewer)

    pages, url = [], f"{LIST}?hub_query=SELECT+*+FROM+devices"
    while url:
        page = text(client.get(url))
        pages.append([d for d in ("d0", "d1", "d2", "d3", "d4") if f"{d}</a>" in page])
        assert ("« First page" in page) == (len(pages) > 1)
        link = re.search(r'<a href="(\?[^"]*)"[^>]*rel="next"', page)
        url = LIST + link.group(1) if link else None

    assert pages == [["d0", "d1"], ["d2", "d3"], ["d4"]]


def test_a_bad_query_shows_the_hubs_message_and_keeps_the_text(
    dashboard_hub, registry, client_as, viewer
):
    response = client_as(viewer).get(LIST, {"hub_query": "tags.location = "})

    page = text(response)
    assert response.status_code == 200
    assert "The hub refused the query: Invalid query:" in page
    assert 'value="tags.location = "' in page


def test_a_token_the_hub_did_not_issue_is_refused_clearly(dashboard_hub, client_as, viewer):
    page = text(
        client_as(viewer).get(LIST, {"hub_query": "SELECT * FROM devices", "continuation": "x"})
    )

    assert "x-ms-continuation is not a token this hub issued" in page


def test_with_the_hub_down_the_query_says_so_and_the_page_still_renders(
    dashboard_hub, client_as, viewer
):
    seed("mirrored-1")
    dashboard_hub.stop()
    client = client_as(viewer)

    queried = client.get(LIST, {"hub_query": "tags.location = 'lab'"})
    listed = client.get(LIST)

    assert queried.status_code == 200
    assert "The query could not run:" in text(queried)
    assert "cannot be reached. Is it running?" in text(queried)
    assert "value=\"tags.location = 'lab'\"" in text(queried)
    assert listed.status_code == 200 and "mirrored-1</a>" in text(listed)
