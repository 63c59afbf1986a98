"""The device page and its actions (reveal, create, enable/disable, regenerate a key, delete),
for each role, against a real localhub; the hub's state is checked through the SDK."""

import pytest
from pages import etag_on, messages_of, text, url
from support import create_identities, new_key, primary_key

from devices.models import AuditEntry, Device, Module

pytestmark = pytest.mark.django_db


def all_keys(registry, device_id) -> list[str]:
    keys = registry.get_device(device_id).authentication.symmetric_key
    found = [keys.primary_key, keys.secondary_key]
    for module in registry.get_modules(device_id):
        sym = module.authentication.symmetric_key
        found += [sym.primary_key, sym.secondary_key]
    return found


@pytest.fixture
def sensor(dashboard_hub, registry):
    """A device with two modules, created outside the dashboard."""
    create_identities(registry, "sensor-1", "thermo", "camera")
    return "sensor-1"


# -- the page, by role ---------------------------------------------------------------------
def test_viewer_sees_identity_and_modules_but_no_key_material(client_as, viewer, sensor, registry):
    response = client_as(viewer).get(url("device-detail", sensor))

    page = text(response)
    assert response.status_code == 200
    assert "sensor-1" in page and "enabled" in page and "Disconnected" in page
    assert registry.get_device(sensor).generation_id in page
    assert url("module-detail", sensor, "thermo") in page
    assert url("module-detail", sensor, "camera") in page
    assert "HostName=" in page and "SharedAccessKey=••••" in page
    for key in all_keys(registry, sensor):
        assert key not in page
    assert "Reveal" not in page
    assert "only operators and admins can reveal" in page
    assert "Regenerate" not in page and url("device-delete", sensor) not in page


def test_the_page_shows_the_hub_and_never_writes_the_mirror(client_as, viewer, sensor, registry):
    """A viewer may not sync: opening a page must not add a device to the mirror either."""
    registry.update_device_with_sas(sensor, "*", None, None, "disabled", status_reason="broken")

    page = text(client_as(viewer).get(url("device-detail", sensor)))
    client_as(viewer).get(url("module-detail", sensor, "thermo"))

    assert "disabled: broken" in page
    assert not Device.objects.exists()
    assert not Module.objects.exists()


def test_operator_gets_reveal_buttons_but_no_admin_actions(client_as, operator, sensor, registry):
    page = text(client_as(operator).get(url("device-detail", sensor)))

    assert url("device-connection-string", sensor, "primary") in page
    assert url("device-connection-string", sensor, "secondary") in page
    for key in all_keys(registry, sensor):
        assert key not in page
    assert "Regenerate" not in page and "New module" not in page


def test_admin_gets_every_action(client_as, admin, sensor, registry):
    response = client_as(admin).get(url("device-detail", sensor))

    page = text(response)
    for name in ("device-status", "device-keys", "device-delete", "module-create"):
        assert url(name, sensor) in page
    assert etag_on(response) == registry.get_device(sensor).etag


def test_unknown_device_is_a_404_page_with_the_hubs_message(client_as, viewer, dashboard_hub):
    response = client_as(viewer).get(url("device-detail", "nobody"))

    assert response.status_code == 404
    assert "nobody" in text(response) and "Not found on the hub" in text(response)


def test_hub_down_is_a_clear_page(client_as, viewer, sensor, localhub):
    localhub.stop()

    response = client_as(viewer).get(url("device-detail", sensor))

    assert response.status_code == 503
    assert "cannot be reached" in text(response)
    assert "Traceback" not in text(response)


def test_pages_need_a_login(client, sensor):
    response = client.get(url("device-detail", sensor))

    assert response.status_code == 302 and response.url.startswith("/login/")


# -- revealing connection strings ----------------------------------------------------------
def test_operator_reveals_the_primary_string_with_htmx_and_it_is_audited(
    client_as, operator, sensor, registry, localhub
):
    response = client_as(operator).post(
        url("device-connection-string", sensor, "primary"), HTTP_HX_REQUEST="true"
    )

    key = primary_key(registry.get_device(sensor))
    expected = f"HostName={localhub.host};DeviceId={sensor};SharedAccessKey={key}"
    assert response.status_code == 200
    assert expected in text(response)
    assert 'data-copy="#cs-primary-value"' in text(response)
    assert "<html" not in text(response)  # the partial only
    assert response["Vary"] and "HX-Request" in response["Vary"]
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.username, entry.device_id, entry.module_id) == (
        "connection_string.revealed",
        operator.username,
        sensor,
        "",
    )
    assert entry.detail == {"key": "primary"}


def test_reveal_without_javascript_shows_the_whole_page_with_the_string(
    client_as, operator, sensor, registry
):
    response = client_as(operator).post(url("device-connection-string", sensor, "secondary"))

    secondary = registry.get_device(sensor).authentication.symmetric_key.secondary_key
    assert response.status_code == 200
    assert f"SharedAccessKey={secondary}" in text(response)
    assert "<html" in text(response) and "Modules (2)" in text(response)
    assert primary_key(registry.get_device(sensor)) not in text(response)
    assert AuditEntry.objects.get().detail == {"key": "secondary"}


def test_the_reveal_shows_up_in_the_audit_log_on_the_page(client_as, operator, sensor):
    client = client_as(operator)
    client.post(url("device-connection-string", sensor, "primary"), HTTP_HX_REQUEST="true")

    page = text(client.get(url("device-detail", sensor)))

    audit = page[page.index('id="audit"') :]
    assert "connection_string.revealed" in audit and operator.username in audit
    assert "key: primary" in audit


def test_viewer_may_not_reveal(client_as, viewer, sensor):
    response = client_as(viewer).post(url("device-connection-string", sensor, "primary"))

    assert response.status_code == 403
    assert "only operators and admins may see them" in text(response)
    assert not AuditEntry.objects.exists()


def test_revealing_an_unknown_key_is_a_404(client_as, operator, sensor):
    response = client_as(operator).post(url("device-connection-string", sensor, "tertiary"))

    assert response.status_code == 404
    assert not AuditEntry.objects.exists()


# -- creating ------------------------------------------------------------------------------
def test_admin_creates_a_device_with_keys_generated_by_the_hub(
    client_as, admin, dashboard_hub, registry
):
    client = client_as(admin)
    assert client.get(url("device-create")).status_code == 200

    response = client.post(
        url("device-create"),
        {"device_id": "myFirstDevice", "status": "enabled", "keys": "generated"},
    )

    assert response.status_code == 302 and response.url == url("device-detail", "myFirstDevice")
    made = registry.get_device("myFirstDevice")
    assert made.status == "enabled" and len(primary_key(made)) == 44
    assert Device.objects.get(device_id="myFirstDevice").etag == made.etag
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.detail) == (
        "device.created",
        {"status": "enabled", "keys": "generated"},
    )


def test_admin_creates_a_disabled_device_with_supplied_keys(
    client_as, admin, dashboard_hub, registry
):
    primary, secondary = new_key(), new_key(16)

    client_as(admin).post(
        url("device-create"),
        {
            "device_id": "d1",
            "status": "disabled",
            "keys": "supplied",
            "primary_key": primary,
            "secondary_key": secondary,
        },
    )

    made = registry.get_device("d1")
    assert made.status == "disabled"
    assert (
        made.authentication.symmetric_key.primary_key,
        made.authentication.symmetric_key.secondary_key,
    ) == (primary, secondary)


@pytest.mark.parametrize(
    ("primary", "secondary", "message"),
    [
        ("not base64!", new_key(), "Not valid base64"),
        (new_key(8), new_key(), "decodes to 8 bytes; IoT Hub needs 16 to 64"),
        (new_key(), new_key(65), "decodes to 65 bytes"),
        (new_key(), "", "Supply both keys"),
    ],
    ids=["not-base64", "too-short", "too-long", "one-missing"],
)
def test_bad_supplied_keys_are_refused_before_anything_is_sent(
    client_as, admin, dashboard_hub, registry, primary, secondary, message
):
    response = client_as(admin).post(
        url("device-create"),
        {
            "device_id": "keyed",
            "status": "enabled",
            "keys": "supplied",
            "primary_key": primary,
            "secondary_key": secondary,
        },
    )

    assert response.status_code == 400
    assert message in text(response)
    assert 'value="keyed"' in text(response)
    assert registry.get_devices() == []


def test_creating_an_existing_device_says_so_links_it_and_keeps_the_form(
    client_as, admin, sensor, registry
):
    etag = registry.get_device(sensor).etag

    response = client_as(admin).post(
        url("device-create"), {"device_id": sensor, "status": "disabled", "keys": "generated"}
    )

    assert response.status_code == 409
    assert "A device with that id exists." in text(response)
    assert f'href="{url("device-detail", sensor)}"' in text(response)
    assert f'value="{sensor}"' in text(response)
    assert registry.get_device(sensor).etag == etag
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    "device_id, why",
    [
        ("has space", "Not a valid device id"),
        ("..", "Not a valid device id"),
        ("a;b", "holds ';', which separates a connection string's fields"),
    ],
)
def test_an_id_the_hub_or_a_connection_string_refuses_is_flagged_by_the_field(
    client_as, admin, registry, device_id, why
):
    response = client_as(admin).post(
        url("device-create"), {"device_id": device_id, "status": "enabled", "keys": "generated"}
    )

    page = text(response)
    assert response.status_code == 400
    assert why in page
    assert page.index(why) > page.index('name="device_id"')
    assert f'value="{device_id}"' in page
    assert registry.get_devices() == []


def test_creating_while_the_hub_is_down_keeps_the_form(client_as, admin, dashboard_hub):
    dashboard_hub.stop()

    response = client_as(admin).post(
        url("device-create"), {"device_id": "later", "status": "disabled", "keys": "generated"}
    )

    assert response.status_code == 503
    assert "cannot be reached" in text(response)
    assert 'value="later"' in text(response)
    assert "Traceback" not in text(response)


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_create_devices(client_as, make_user, dashboard_hub, registry, role):
    client = client_as(make_user(role))

    refused = client.post(
        url("device-create"), {"device_id": "x", "status": "enabled", "keys": "generated"}
    )

    assert client.get(url("device-create")).status_code == 403
    assert refused.status_code == 403 and "for admins" in text(refused)
    assert registry.get_devices() == []


# -- enable / disable ----------------------------------------------------------------------
def test_admin_disables_with_a_reason_then_enables(client_as, admin, sensor, registry):
    client = client_as(admin)
    etag = etag_on(client.get(url("device-detail", sensor)))

    response = client.post(
        url("device-status", sensor), {"etag": etag, "status": "disabled", "reason": "stolen"}
    )

    assert response.status_code == 302 and response.url == url("device-detail", sensor)
    device = registry.get_device(sensor)
    assert (device.status, device.status_reason) == ("disabled", "stolen")
    assert Device.objects.get(device_id=sensor).status == "disabled"
    assert "now disabled" in messages_of(response)[0]

    page = client.get(url("device-detail", sensor))
    assert "stolen" in text(page) and "Enable" in text(page)
    client.post(
        url("device-status", sensor), {"etag": etag_on(page), "status": "enabled", "reason": ""}
    )

    assert registry.get_device(sensor).status == "enabled"
    assert [(e.action, e.detail) for e in AuditEntry.objects.all()] == [
        ("device.enabled", {"reason": ""}),
        ("device.disabled", {"reason": "stolen"}),
    ]


def test_the_status_form_works_on_its_own_page(client_as, admin, sensor):
    response = client_as(admin).get(url("device-status", sensor))

    assert response.status_code == 200
    assert 'name="reason"' in text(response) and 'name="status"' in text(response)


def test_a_device_changed_meanwhile_is_not_overwritten(client_as, admin, sensor, registry):
    client = client_as(admin)
    seen = etag_on(client.get(url("device-detail", sensor)))
    registry.update_device_with_sas(sensor, "*", None, None, "enabled", status_reason="checked")

    response = client.post(
        url("device-status", sensor), {"etag": seen, "status": "disabled", "reason": "my reason"}
    )

    assert response.status_code == 412
    assert "was changed on the hub after you loaded the page" in text(response)
    assert 'value="my reason"' in text(response) and "(checked)" in text(response)
    device = registry.get_device(sensor)
    assert (device.status, device.status_reason) == ("enabled", "checked")
    assert etag_on(response) == device.etag  # a second submit is a deliberate choice
    assert not AuditEntry.objects.exists()


def test_changing_status_while_the_hub_is_down_keeps_the_reason(client_as, admin, sensor, localhub):
    client = client_as(admin)
    etag = etag_on(client.get(url("device-detail", sensor)))
    localhub.stop()

    response = client.post(
        url("device-status", sensor), {"etag": etag, "status": "disabled", "reason": "flaky"}
    )

    assert response.status_code == 503
    assert "cannot be reached" in text(response) and 'value="flaky"' in text(response)


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_change_status(client_as, make_user, sensor, registry, role):
    etag = registry.get_device(sensor).etag

    response = client_as(make_user(role)).post(
        url("device-status", sensor), {"etag": etag, "status": "disabled", "reason": "x"}
    )

    assert response.status_code == 403
    assert registry.get_device(sensor).status == "enabled"


# -- keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["primary", "secondary"])
def test_admin_regenerates_one_key(client_as, admin, sensor, registry, which):
    registry.update_device_with_sas(sensor, "*", None, None, "disabled", status_reason="parked")
    before = registry.get_device(sensor).authentication.symmetric_key
    client = client_as(admin)
    etag = etag_on(client.get(url("device-detail", sensor)))

    response = client.post(url("device-keys", sensor), {"etag": etag, "which": which})

    assert response.status_code == 302
    after = registry.get_device(sensor)
    keys = after.authentication.symmetric_key
    other = "secondary" if which == "primary" else "primary"
    assert getattr(keys, f"{which}_key") != getattr(before, f"{which}_key")
    assert getattr(keys, f"{other}_key") == getattr(before, f"{other}_key")
    assert (after.status, after.status_reason) == ("disabled", "parked")
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.detail) == ("device.key_regenerated", {"key": which})
    assert f"New {which} key" in messages_of(response)[0]


def test_regenerating_with_a_stale_etag_changes_nothing(client_as, admin, sensor, registry):
    client = client_as(admin)
    seen = etag_on(client.get(url("device-detail", sensor)))
    registry.update_device_with_sas(sensor, "*", None, None, "enabled", status_reason="new")
    before = primary_key(registry.get_device(sensor))

    response = client.post(
        url("device-keys", sensor), {"etag": seen, "which": "primary"}, follow=True
    )

    assert "was changed on the hub after you loaded the page" in text(response)
    assert primary_key(registry.get_device(sensor)) == before
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_regenerate_keys(client_as, make_user, sensor, registry, role):
    before = primary_key(registry.get_device(sensor))
    etag = registry.get_device(sensor).etag

    response = client_as(make_user(role)).post(
        url("device-keys", sensor), {"etag": etag, "which": "primary"}
    )

    assert response.status_code == 403
    assert primary_key(registry.get_device(sensor)) == before


# -- delete --------------------------------------------------------------------------------
def test_admin_deletes_after_confirming(client_as, admin, sensor, registry):
    client = client_as(admin)
    client.get(url("device-detail", sensor))  # the mirror holds it
    confirm = client.get(url("device-delete", sensor))
    assert confirm.status_code == 200
    assert "2 modules" in text(confirm) and "thermo" in text(confirm)
    assert registry.get_device(sensor)  # nothing deleted by looking

    response = client.post(url("device-delete", sensor), {"etag": etag_on(confirm)})

    assert response.status_code == 302 and response.url == url("device-list")
    assert "sensor-1 and its modules were deleted" in messages_of(response)[0]
    assert [d.device_id for d in registry.get_devices()] == []
    assert not Device.objects.exists()
    assert AuditEntry.objects.get().action == "device.deleted"


def test_deleting_a_device_changed_meanwhile_asks_again(client_as, admin, sensor, registry):
    client = client_as(admin)
    seen = etag_on(client.get(url("device-delete", sensor)))
    registry.update_device_with_sas(sensor, "*", None, None, "disabled")

    response = client.post(url("device-delete", sensor), {"etag": seen})

    assert response.status_code == 412
    assert "was changed on the hub after you loaded the page" in text(response)
    assert registry.get_device(sensor).status == "disabled"
    assert etag_on(response) == registry.get_device(sensor).etag
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_delete(client_as, make_user, sensor, registry, role):
    client = client_as(make_user(role))
    etag = registry.get_device(sensor).etag

    assert client.get(url("device-delete", sensor)).status_code == 403
    assert client.post(url("device-delete", sensor), {"etag": etag}).status_code == 403
    assert registry.get_device(sensor)


def test_deleting_an_unknown_device_is_a_404_page(client_as, admin, dashboard_hub):
    response = client_as(admin).get(url("device-delete", "ghost"))

    assert response.status_code == 404 and "ghost" in text(response)


def test_disabling_and_rekeying_an_edge_device_keeps_its_edge_capability(
    client_as, admin, dashboard_hub, registry
):
    registry.create_device_with_sas("edge-1", None, None, "enabled", iot_edge=True)
    client = client_as(admin)

    client.post(
        url("device-status", "edge-1"),
        {"etag": etag_on(client.get(url("device-detail", "edge-1"))), "status": "disabled"},
    )
    etag = etag_on(client.get(url("device-detail", "edge-1")))
    client.post(url("device-keys", "edge-1"), {"etag": etag, "which": "secondary"})

    device = registry.get_device("edge-1")
    assert device.status == "disabled"
    assert device.capabilities.iot_edge is True


@pytest.mark.parametrize("htmx", [{"HTTP_HX_REQUEST": "true"}, {}], ids=["htmx", "page"])
def test_a_revealed_string_is_never_stored_by_a_cache(client_as, operator, sensor, htmx):
    response = client_as(operator).post(url("device-connection-string", sensor, "primary"), **htmx)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
