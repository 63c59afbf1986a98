"""The module page and its actions (reveal, create, regenerate a key, delete), for each role,
against a real localhub; the hub's state is checked through the SDK, and a revealed string
is used by a real module client."""

import re

import pytest
from azure.iot.device import IoTHubModuleClient
from pages import etag_on, messages_of, text, url
from support import create_identities, new_key, primary_key

from devices.models import AuditEntry, Module

pytestmark = pytest.mark.django_db


def keys_of(module) -> tuple[str, str]:
    sym = module.authentication.symmetric_key
    return sym.primary_key, sym.secondary_key


@pytest.fixture
def thermo(dashboard_hub, registry):
    """Device sensor-1 with module thermo, created outside the dashboard."""
    create_identities(registry, "sensor-1", "thermo")
    return "sensor-1", "thermo"


# -- the page, by role ---------------------------------------------------------------------
def test_viewer_sees_the_identity_but_no_key_material(client_as, viewer, thermo, registry):
    response = client_as(viewer).get(url("module-detail", *thermo))

    page = text(response)
    module = registry.get_module(*thermo)
    assert response.status_code == 200
    assert "thermo" in page and "Disconnected" in page and "never" in page
    assert module.generation_id in page and module.etag in page
    assert "Managed by" in page
    assert "HostName=" in page and "ModuleId=thermo" in page and "SharedAccessKey=••••" in page
    for key in (*keys_of(module), *keys_of(registry.get_device("sensor-1"))):
        assert key not in page
    assert "Reveal" not in page and "only operators and admins can reveal" in page
    assert url("module-delete", *thermo) not in page and "Regenerate" not in page


def test_operator_gets_reveal_buttons_but_no_admin_actions(client_as, operator, thermo):
    page = text(client_as(operator).get(url("module-detail", *thermo)))

    assert url("module-connection-string", *thermo, "primary") in page
    assert url("module-connection-string", *thermo, "secondary") in page
    assert url("module-delete", *thermo) not in page and "Regenerate" not in page


def test_admin_gets_delete_and_regenerate(client_as, admin, thermo, registry):
    response = client_as(admin).get(url("module-detail", *thermo))

    assert url("module-delete", *thermo) in text(response)
    assert url("module-keys", *thermo) in text(response)
    assert etag_on(response) == registry.get_module(*thermo).etag


def test_unknown_module_is_a_404_page_with_the_hubs_message(client_as, viewer, thermo):
    response = client_as(viewer).get(url("module-detail", "sensor-1", "nope"))

    assert response.status_code == 404
    assert "nope" in text(response) and "Not found on the hub" in text(response)


def test_hub_down_is_a_clear_page(client_as, viewer, thermo, localhub):
    localhub.stop()

    response = client_as(viewer).get(url("module-detail", *thermo))

    assert response.status_code == 503
    assert "cannot be reached" in text(response) and "Traceback" not in text(response)


def test_the_device_page_lists_the_module_and_its_audit_entries(client_as, operator, thermo):
    client = client_as(operator)
    client.post(url("module-connection-string", *thermo, "primary"), HTTP_HX_REQUEST="true")

    page = text(client.get(url("device-detail", "sensor-1")))

    assert url("module-detail", *thermo) in page
    audit = page[page.index('id="audit"') :]
    assert "connection_string.revealed" in audit and "thermo" in audit


# -- revealing -----------------------------------------------------------------------------
def test_operator_reveals_a_module_string_that_connects_a_module_client(
    client_as, operator, thermo, registry, localhub
):
    response = client_as(operator).post(
        url("module-connection-string", *thermo, "primary"), HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 200
    shown = re.search(r'id="cs-primary-value">([^<]+)<', text(response))[1]
    key = primary_key(registry.get_module(*thermo))
    assert (
        shown == f"HostName={localhub.host};DeviceId=sensor-1;ModuleId=thermo;SharedAccessKey={key}"
    )
    assert 'data-copy="#cs-primary-value"' in text(response)
    client = IoTHubModuleClient.create_from_connection_string(
        shown, server_verification_cert=localhub.ca_pem
    )
    try:
        client.connect()
        assert registry.get_module(*thermo).connection_state == "Connected"
    finally:
        client.shutdown()
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.username, entry.device_id, entry.module_id, entry.detail) == (
        "connection_string.revealed",
        operator.username,
        "sensor-1",
        "thermo",
        {"key": "primary"},
    )


def test_reveal_without_javascript_shows_the_whole_page_with_the_string(
    client_as, operator, thermo, registry
):
    response = client_as(operator).post(url("module-connection-string", *thermo, "secondary"))

    primary, secondary = keys_of(registry.get_module(*thermo))
    assert response.status_code == 200 and "<html" in text(response)
    assert f"ModuleId=thermo;SharedAccessKey={secondary}" in text(response)
    assert primary not in text(response)
    page = text(response)
    assert "connection_string.revealed" in page[page.index('id="audit"') :]


def test_viewer_posting_the_reveal_url_gets_403(client_as, viewer, thermo, registry):
    response = client_as(viewer).post(url("module-connection-string", *thermo, "primary"))

    assert response.status_code == 403
    assert "only operators and admins may see them" in text(response)
    for key in keys_of(registry.get_module(*thermo)):
        assert key not in text(response)
    assert not AuditEntry.objects.exists()


def test_revealing_for_an_unknown_module_is_a_404(client_as, operator, thermo):
    response = client_as(operator).post(url("module-connection-string", "sensor-1", "x", "primary"))

    assert response.status_code == 404
    assert not AuditEntry.objects.exists()


# -- creating ------------------------------------------------------------------------------
def test_admin_creates_a_module_with_generated_keys(client_as, admin, dashboard_hub, registry):
    registry.create_device_with_sas("myFirstDevice", None, None, "enabled")
    client = client_as(admin)
    assert client.get(url("module-create", "myFirstDevice")).status_code == 200

    response = client.post(
        url("module-create", "myFirstDevice"), {"module_id": "myFirstModule", "keys": "generated"}
    )

    assert response.url == url("module-detail", "myFirstDevice", "myFirstModule")
    made = registry.get_module("myFirstDevice", "myFirstModule")
    assert len(primary_key(made)) == 44
    assert Module.objects.get(module_id="myFirstModule").device.device_id == "myFirstDevice"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.module_id, entry.detail) == (
        "module.created",
        "myFirstModule",
        {"keys": "generated"},
    )


def test_admin_creates_a_module_with_supplied_keys(client_as, admin, thermo, registry):
    primary, secondary = new_key(), new_key(64)

    client_as(admin).post(
        url("module-create", "sensor-1"),
        {
            "module_id": "camera",
            "keys": "supplied",
            "primary_key": primary,
            "secondary_key": secondary,
        },
    )

    assert keys_of(registry.get_module("sensor-1", "camera")) == (primary, secondary)


def test_asking_for_an_existing_module_opens_it(client_as, admin, thermo, registry):
    before = registry.get_module(*thermo)

    response = client_as(admin).post(
        url("module-create", "sensor-1"), {"module_id": "thermo", "keys": "generated"}, follow=True
    )

    assert response.redirect_chain == [(url("module-detail", *thermo), 302)]
    assert "thermo already exists on sensor-1" in text(response)
    assert keys_of(registry.get_module(*thermo)) == keys_of(before)
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize(
    ("primary", "secondary", "message"),
    [
        ("%%%", new_key(), "Not valid base64"),
        (new_key(15), new_key(), "decodes to 15 bytes"),
        ("", new_key(), "Supply both keys"),
    ],
    ids=["not-base64", "too-short", "one-missing"],
)
def test_bad_supplied_keys_are_refused(
    client_as, admin, thermo, registry, primary, secondary, message
):
    response = client_as(admin).post(
        url("module-create", "sensor-1"),
        {
            "module_id": "camera",
            "keys": "supplied",
            "primary_key": primary,
            "secondary_key": secondary,
        },
    )

    assert response.status_code == 400
    assert message in text(response) and 'value="camera"' in text(response)
    assert [m.module_id for m in registry.get_modules("sensor-1")] == ["thermo"]


def test_the_same_key_twice_is_refused(client_as, admin, thermo):
    key = new_key()

    response = client_as(admin).post(
        url("module-create", "sensor-1"),
        {
            "module_id": "camera",
            "keys": "supplied",
            "primary_key": key,
            "secondary_key": key,
        },
    )

    assert response.status_code == 400 and "must differ" in text(response)


@pytest.mark.parametrize(
    "module_id, why",
    [
        ("no/slash^", "Not a valid module id"),
        ("...", "Not a valid module id"),
        ("m;x", "The module id 'm;x' holds ';'"),
    ],
)
def test_an_invalid_module_id_is_flagged_before_the_hub_is_asked(
    client_as, admin, thermo, registry, module_id, why
):
    response = client_as(admin).post(
        url("module-create", "sensor-1"), {"module_id": module_id, "keys": "generated"}
    )

    assert response.status_code == 400
    assert why in text(response)
    assert f'value="{module_id}"' in text(response)
    assert [m.module_id for m in registry.get_modules("sensor-1")] == ["thermo"]


def test_a_module_on_an_unknown_device_is_a_404(client_as, admin, dashboard_hub):
    client = client_as(admin)

    assert client.get(url("module-create", "ghost")).status_code == 404
    response = client.post(url("module-create", "ghost"), {"module_id": "m", "keys": "generated"})
    assert response.status_code == 404 and "ghost" in text(response)


def test_creating_while_the_hub_is_down_keeps_the_form(client_as, admin, thermo, localhub):
    client = client_as(admin)
    localhub.stop()

    response = client.post(
        url("module-create", "sensor-1"), {"module_id": "later", "keys": "generated"}
    )

    assert response.status_code == 503
    assert "cannot be reached" in text(response) and 'value="later"' in text(response)


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_create_modules(client_as, make_user, thermo, registry, role):
    client = client_as(make_user(role))

    assert client.get(url("module-create", "sensor-1")).status_code == 403
    response = client.post(
        url("module-create", "sensor-1"), {"module_id": "m", "keys": "generated"}
    )
    assert response.status_code == 403
    assert [m.module_id for m in registry.get_modules("sensor-1")] == ["thermo"]


# -- keys ----------------------------------------------------------------------------------
def test_admin_regenerates_the_secondary_key(client_as, admin, thermo, registry):
    primary, secondary = keys_of(registry.get_module(*thermo))
    client = client_as(admin)
    etag = etag_on(client.get(url("module-detail", *thermo)))

    response = client.post(url("module-keys", *thermo), {"etag": etag, "which": "secondary"})

    assert response.url == url("module-detail", *thermo)
    new_primary, new_secondary = keys_of(registry.get_module(*thermo))
    assert new_primary == primary and new_secondary != secondary
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.detail) == ("module.key_regenerated", {"key": "secondary"})


def test_regenerating_with_a_stale_etag_changes_nothing(client_as, admin, thermo, registry):
    client = client_as(admin)
    seen = etag_on(client.get(url("module-detail", *thermo)))
    registry.update_module_with_sas(*thermo, "someone", "*", None, None)
    before = keys_of(registry.get_module(*thermo))

    response = client.post(
        url("module-keys", *thermo), {"etag": seen, "which": "primary"}, follow=True
    )

    assert "was changed on the hub after you loaded the page" in text(response)
    assert "someone" in text(response)  # the page shows the module as it is now
    assert keys_of(registry.get_module(*thermo)) == before
    assert not AuditEntry.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_regenerate_module_keys(client_as, make_user, thermo, registry, role):
    before = keys_of(registry.get_module(*thermo))
    etag = registry.get_module(*thermo).etag

    response = client_as(make_user(role)).post(
        url("module-keys", *thermo), {"etag": etag, "which": "primary"}
    )

    assert response.status_code == 403
    assert keys_of(registry.get_module(*thermo)) == before


# -- delete --------------------------------------------------------------------------------
def test_admin_deletes_a_module_after_confirming(client_as, admin, thermo, registry):
    client = client_as(admin)
    client.post(url("sync"))  # the mirror holds it
    confirm = client.get(url("module-delete", *thermo))
    assert confirm.status_code == 200 and "Delete module thermo?" in text(confirm)

    response = client.post(url("module-delete", *thermo), {"etag": etag_on(confirm)})

    assert response.url == url("device-detail", "sensor-1")
    assert "thermo was deleted from sensor-1" in messages_of(response)[0]
    assert registry.get_modules("sensor-1") == []
    assert not Module.objects.exists()
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.module_id) == ("module.deleted", "thermo")


def test_deleting_a_module_changed_meanwhile_asks_again(client_as, admin, thermo, registry):
    client = client_as(admin)
    seen = etag_on(client.get(url("module-delete", *thermo)))
    registry.update_module_with_sas(*thermo, "someone", "*", None, None)

    response = client.post(url("module-delete", *thermo), {"etag": seen})

    assert response.status_code == 412
    assert "was changed on the hub after you loaded the page" in text(response)
    assert [m.module_id for m in registry.get_modules("sensor-1")] == ["thermo"]
    assert etag_on(response) == registry.get_module(*thermo).etag


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_delete_modules(client_as, make_user, thermo, registry, role):
    client = client_as(make_user(role))
    etag = registry.get_module(*thermo).etag

    assert client.get(url("module-delete", *thermo)).status_code == 403
    assert client.post(url("module-delete", *thermo), {"etag": etag}).status_code == 403
    assert [m.module_id for m in registry.get_modules("sensor-1")] == ["thermo"]


@pytest.mark.parametrize("htmx", [{"HTTP_HX_REQUEST": "true"}, {}], ids=["htmx", "page"])
def test_a_revealed_string_is_never_stored_by_a_cache(client_as, operator, thermo, htmx):
    response = client_as(operator).post(url("module-connection-string", *thermo, "primary"), **htmx)

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"]
