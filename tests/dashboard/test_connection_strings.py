"""The connection strings the pages reveal are ones the device SDK connects with: no port,
wherever the hub is, and none at all for an id that a connection string cannot carry."""

import re

import azure.iot.device
import pytest
from pages import text, url
from support import create_identities

pytestmark = pytest.mark.django_db


@pytest.fixture
def remote_hub(localhub, settings):
    """localhub named by IOTHUB_CONNECTION_STRING, as the README's recipe for a localhub on
    another machine does: its service string says ``HostName=<host>:8443``."""
    settings.IOTHUB_CONNECTION_STRING = localhub.connection_string
    settings.IOTHUB_CA_FILE = str(localhub.ca_file)
    assert ":8443;" in localhub.connection_string
    return localhub


def revealed(client, *ids) -> str:
    name = "module-connection-string" if len(ids) == 2 else "device-connection-string"
    page = text(client.post(url(name, *ids, "primary")))
    return re.search(r'id="cs-primary-value">([^<]+)<', page)[1]


def connects(localhub, connection_string: str, module: bool) -> bool:
    sdk = azure.iot.device
    kind = sdk.IoTHubModuleClient if module else sdk.IoTHubDeviceClient
    client = kind.create_from_connection_string(
        connection_string, server_verification_cert=localhub.ca_pem
    )
    try:
        client.connect()
        return client.connected
    finally:
        client.shutdown()


@pytest.mark.parametrize("ids", [("d1",), ("d1", "m1")], ids=["device", "module"])
def test_strings_of_a_hub_named_with_its_service_port_carry_no_port_and_connect(
    client_as, operator, remote_hub, registry, ids
):
    create_identities(registry, "d1", "m1")

    string = revealed(client_as(operator), *ids)

    assert string.startswith(f"HostName={remote_hub.host};DeviceId=d1;")
    assert connects(remote_hub, string, module=len(ids) == 2)


def test_an_id_with_an_equals_sign_gets_a_string_that_connects(
    client_as, operator, dashboard_hub, registry
):
    create_identities(registry, "a=b", "m=1")

    assert connects(dashboard_hub, revealed(client_as(operator), "a=b"), module=False)
    assert connects(dashboard_hub, revealed(client_as(operator), "a=b", "m=1"), module=True)


def test_an_id_with_a_semicolon_gets_no_string_and_says_why(
    client_as, operator, dashboard_hub, registry
):
    """IoT Hub allows ';' in ids (this one was made with the SDK); a string cannot carry it."""
    create_identities(registry, "a;b")
    client = client_as(operator)

    page = text(client.get(url("device-detail", "a;b")))
    reveal = client.post(url("device-connection-string", "a;b", "primary"))

    assert "holds ';', which separates a connection string's fields" in page
    assert "SharedAccessKey=" not in page and "Reveal" not in page
    assert reveal.status_code == 400
    assert "holds ';'" in text(reveal)
