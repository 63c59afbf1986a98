"""The Sync button: POST devices:sync runs sync_hub and says what it did."""

import pytest
from django.urls import reverse
from pages import text
from support import create_identities

from devices.models import Device

SYNC = reverse("devices:sync")
LIST = reverse("devices:device-list")


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operators_and_admins_sync_and_see_what_changed(
    request, role, db, dashboard_hub, registry, client_as
):
    create_identities(registry, "d1", "m1", "m2")
    create_identities(registry, "d2")
    client = client_as(request.getfixturevalue(role))

    response = client.post(SYNC)

    assert response.status_code == 302 and response.url == LIST
    page = text(client.get(LIST))
    assert "Synced with the hub: 2 devices, 2 modules: 4 created, 0 updated, 0 deleted." in page
    assert "d1</a>" in page and "d2</a>" in page
    assert "these rows were read from the hub 0\xa0minutes ago" in page


def test_viewers_get_the_403_page_saying_why(db, dashboard_hub, registry, viewer, client_as):
    create_identities(registry, "d1")

    response = client_as(viewer).post(SYNC)

    assert response.status_code == 403
    assert "Syncing the dashboard with the hub is for operators and admins" in text(response)
    assert not Device.objects.exists()


def test_sync_needs_a_login_and_a_post(db, client, operator, client_as):
    anonymous = client.post(SYNC)
    get = client_as(operator).get(SYNC)

    assert anonymous.status_code == 302 and anonymous.url.startswith(reverse("login"))
    assert get.status_code == 405


def test_sync_returns_to_the_filtered_list_it_came_from(db, dashboard_hub, operator, client_as):
    client = client_as(operator)

    back = client.post(SYNC, {"next": f"{LIST}?status=disabled"})
    elsewhere = client.post(SYNC, {"next": "https://evil.example/"})

    assert back.url == f"{LIST}?status=disabled"
    assert elsewhere.url == LIST


def test_with_htmx_the_browser_is_sent_back_to_the_list(db, dashboard_hub, operator, client_as):
    response = client_as(operator).post(SYNC, headers={"HX-Request": "true"})

    assert response.status_code == 200
    assert response["HX-Redirect"] == LIST


def test_with_the_hub_down_sync_says_so_and_the_list_still_renders(
    db, dashboard_hub, registry, operator, client_as
):
    create_identities(registry, "d1")
    client = client_as(operator)
    client.post(SYNC)
    dashboard_hub.stop()

    response = client.post(SYNC, follow=True)

    page = text(response)
    assert response.status_code == 200
    assert "Sync failed: Running the query: the hub at" in page
    assert "cannot be reached. Is it running?" in page
    assert "d1</a>" in page  # the mirror is still listed
