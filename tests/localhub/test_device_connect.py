"""Device and module connections over MQTT: authentication, connection state, one
connection per identity, and the hub dropping connections it no longer accepts."""

import contextlib
import queue
import ssl
import threading
import time

import paho.mqtt.client as paho
import pytest
from azure.iot.device import IoTHubDeviceClient
from azure.iot.device.exceptions import CredentialError
from azure.iot.hub.models import Twin, TwinProperties
from support import primary_key, wait_for

from localhub import sas

CONNACK_ACCEPTED, CONNACK_NOT_AUTHORIZED = 0, 5


@contextlib.contextmanager
def raw_mqtt(localhub, client_id, password):
    """A bare MQTT 3.1.1 client, for tokens the SDK refuses to send (it checks them itself).

    Yields (connacks, disconnected): a queue of CONNACK return codes and an Event set when the
    connection drops.
    """
    connacks, disconnected = queue.Queue(), threading.Event()
    client = paho.Client(client_id=client_id, protocol=paho.MQTTv311, clean_session=False)
    client.tls_set(ca_certs=str(localhub.ca_file), tls_version=ssl.PROTOCOL_TLSv1_2)
    client.username_pw_set(f"{localhub.host}/{client_id}/?api-version=2021-04-12", password)

    def on_connect(_client, _userdata, _flags, rc):
        connacks.put(rc)
        if rc != CONNACK_ACCEPTED:
            client.disconnect()  # rather than retrying with the same refused token

    client.on_connect = on_connect
    client.on_disconnect = lambda _client, _userdata, _rc: disconnected.set()
    client.connect(localhub.host, 8883)
    client.loop_start()
    try:
        yield connacks, disconnected
    finally:
        client.disconnect()
        client.loop_stop()


def raw_connack(localhub, client_id, password):
    with raw_mqtt(localhub, client_id, password) as (connacks, _disconnected):
        return connacks.get(timeout=10)


# Connection state


def test_a_connected_device_shows_as_connected_and_back_to_disconnected_after_shutdown(
    localhub, registry, client_for
):
    before = registry.create_device_with_sas("d1", None, None, "enabled")
    assert before.connection_state == "Disconnected"
    client = client_for("d1", primary_key(before))

    client.connect()
    connected = registry.get_device("d1")
    assert connected.connection_state == "Connected"
    assert connected.connection_state_updated_time > before.connection_state_updated_time
    assert connected.last_activity_time > before.last_activity_time
    assert registry.get_twin("d1").connection_state == "Connected"

    client.shutdown()
    wait_for(lambda: registry.get_device("d1").connection_state == "Disconnected")
    after = registry.get_device("d1")
    assert after.connection_state_updated_time > connected.connection_state_updated_time
    assert registry.get_twin("d1").connection_state == "Disconnected"


def test_a_connected_module_shows_as_connected_and_its_device_does_not(
    localhub, registry, client_for
):
    registry.create_device_with_sas("d1", None, None, "enabled")
    before = registry.create_module_with_sas("d1", "m1", None, None, None)
    client = client_for("d1", primary_key(before), "m1")

    client.connect()
    connected = registry.get_module("d1", "m1")
    assert connected.connection_state == "Connected"
    assert connected.connection_state_updated_time > before.connection_state_updated_time
    assert connected.last_activity_time > before.last_activity_time
    assert registry.get_module_twin("d1", "m1").connection_state == "Connected"
    assert registry.get_device("d1").connection_state == "Disconnected"

    client.shutdown()
    wait_for(lambda: registry.get_module("d1", "m1").connection_state == "Disconnected")
    assert registry.get_module_twin("d1", "m1").connection_state == "Disconnected"


# Refused connections (CONNACK 5, which the SDK raises as CredentialError)


def test_a_wrong_key_is_refused(registry, client_for):
    registry.create_device_with_sas("d1", None, None, "enabled")
    other = registry.create_device_with_sas("d2", None, None, "enabled")
    client = client_for("d1", primary_key(other), connection_retry=False)

    with pytest.raises(CredentialError):
        client.connect()
    assert registry.get_device("d1").connection_state == "Disconnected"


def test_an_unknown_device_is_refused(registry, client_for):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = client_for("nobody", key, connection_retry=False)

    with pytest.raises(CredentialError):
        client.connect()


def test_an_unknown_module_is_refused(registry, client_for):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = client_for("d1", key, "nomodule", connection_retry=False)

    with pytest.raises(CredentialError):
        client.connect()


def test_a_disabled_device_is_refused(registry, client_for):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "disabled"))
    client = client_for("d1", key, connection_retry=False)

    with pytest.raises(CredentialError):
        client.connect()


def test_a_module_of_a_disabled_device_is_refused(registry, client_for):
    registry.create_device_with_sas("d1", None, None, "disabled")
    key = primary_key(registry.create_module_with_sas("d1", "m1", None, None, None))
    client = client_for("d1", key, "m1", connection_retry=False)

    with pytest.raises(CredentialError):
        client.connect()


def test_the_secondary_key_is_accepted_too(registry, client_for):
    device = registry.create_device_with_sas("d1", None, None, "enabled")
    client = client_for("d1", device.authentication.symmetric_key.secondary_key)

    client.connect()
    assert registry.get_device("d1").connection_state == "Connected"


def test_the_sdk_refuses_an_already_expired_token_before_connecting(localhub, registry):
    # So the hub's own expiry check is exercised with a raw client below.
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    token = sas.generate(f"{localhub.host}/devices/d1", key, ttl=-10)

    with pytest.raises(ValueError, match="expired"):
        IoTHubDeviceClient.create_from_sastoken(token, server_verification_cert=localhub.ca_pem)


def test_a_raw_client_with_a_valid_token_is_accepted(localhub, registry):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    token = sas.generate(f"{localhub.host}/devices/d1", key)

    assert raw_connack(localhub, "d1", token) == CONNACK_ACCEPTED


def test_an_expired_token_is_refused(localhub, registry):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    token = sas.generate(f"{localhub.host}/devices/d1", key, ttl=-10)

    assert raw_connack(localhub, "d1", token) == CONNACK_NOT_AUTHORIZED
    assert registry.get_device("d1").connection_state == "Disconnected"


@pytest.mark.parametrize("expiry", [10**309, sas.MAX_EXPIRY + 1], ids=["10e309", "year-10000"])
def test_a_token_expiring_after_the_year_9999_is_refused_and_the_connection_stays(
    localhub, registry, client_for, expiry
):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    connected = client_for("d1", key, connection_retry=False)
    connected.connect()
    # Correctly signed, with an expiry IoT Hub cannot represent.
    token = sas.generate(f"{localhub.host}/devices/d1", key, expiry=expiry)

    assert raw_connack(localhub, "d1", token) == CONNACK_NOT_AUTHORIZED

    connected.patch_twin_reported_properties({"still": "here"})  # fails if it was dropped
    assert connected.connected
    assert registry.get_twin("d1").properties.reported["still"] == "here"
    assert registry.get_device("d1").connection_state == "Connected"


def test_a_token_expiring_at_the_end_of_the_year_9999_is_accepted(localhub, registry):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    token = sas.generate(f"{localhub.host}/devices/d1", key, expiry=sas.MAX_EXPIRY)

    assert raw_connack(localhub, "d1", token) == CONNACK_ACCEPTED


def test_a_token_for_another_device_is_refused(localhub, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    key2 = primary_key(registry.create_device_with_sas("d2", None, None, "enabled"))
    # Signed correctly, but for d2: it must not let its holder act as d1.
    token = sas.generate(f"{localhub.host}/devices/d2", key2)

    assert raw_connack(localhub, "d1", token) == CONNACK_NOT_AUTHORIZED
    assert raw_connack(localhub, "d2", token) == CONNACK_ACCEPTED


def test_a_token_for_another_hub_is_refused(localhub, registry, client_for):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    token = sas.generate("otherhub.azure-devices.net/devices/d1", key)
    client = IoTHubDeviceClient.create_from_sastoken(
        token,
        server_verification_cert=localhub.ca_pem,
        gateway_hostname=localhub.host,
        connection_retry=False,
    )
    try:
        with pytest.raises(CredentialError):
            client.connect()
    finally:
        client.shutdown()


def test_a_module_token_is_refused_for_its_device(localhub, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    module_key = primary_key(registry.create_module_with_sas("d1", "m1", None, None, None))
    token = sas.generate(f"{localhub.host}/devices/d1/modules/m1", module_key)

    assert raw_connack(localhub, "d1", token) == CONNACK_NOT_AUTHORIZED
    assert raw_connack(localhub, "d1/m1", token) == CONNACK_ACCEPTED


def test_a_device_policy_token_scoped_to_the_devices_path_connects_any_device(localhub, registry):
    # IoT Hub docs (SAS, "use security tokens from service components"): a token signed with
    # the `device` policy's key for "{hub}/devices" is what a protocol gateway uses for all
    # of its devices; the resource URI is a prefix matched by segment.
    registry.create_device_with_sas("d1", None, None, "enabled")
    registry.create_device_with_sas("d2", None, None, "enabled")
    policy_key = localhub.hub.policies["device"][0]
    token = sas.generate(f"{localhub.host}/devices", policy_key, policy="device")

    assert raw_connack(localhub, "d1", token) == CONNACK_ACCEPTED
    assert raw_connack(localhub, "d2", token) == CONNACK_ACCEPTED


def test_a_device_policy_token_scoped_to_one_device_connects_that_device(localhub, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    policy_key = localhub.hub.policies["device"][0]
    token = sas.generate(f"{localhub.host}/devices/d1", policy_key, policy="device")

    assert raw_connack(localhub, "d1", token) == CONNACK_ACCEPTED


def test_a_policy_without_device_connect_cannot_connect_a_device(localhub, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    policy_key = localhub.hub.policies["registryRead"][0]
    token = sas.generate(f"{localhub.host}/devices/d1", policy_key, policy="registryRead")

    assert raw_connack(localhub, "d1", token) == CONNACK_NOT_AUTHORIZED


def test_a_device_key_does_not_authenticate_its_modules(registry, client_for):
    device_key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    registry.create_module_with_sas("d1", "m1", None, None, None)
    client = client_for("d1", device_key, "m1", connection_retry=False)

    with pytest.raises(CredentialError):
        client.connect()


# The hub drops connections it no longer accepts


def test_disabling_a_connected_device_drops_its_connection(registry, client_for):
    device = registry.create_device_with_sas("d1", None, None, "enabled")
    keys = device.authentication.symmetric_key
    client = client_for("d1", keys.primary_key, connection_retry=False)
    client.connect()
    assert registry.get_device("d1").connection_state == "Connected"

    registry.update_device_with_sas("d1", "*", keys.primary_key, keys.secondary_key, "disabled")

    wait_for(lambda: registry.get_device("d1").connection_state == "Disconnected")
    wait_for(lambda: not client.connected)


def test_disabling_a_device_drops_its_modules_connections(registry, client_for):
    device = registry.create_device_with_sas("d1", None, None, "enabled")
    keys = device.authentication.symmetric_key
    module_key = primary_key(registry.create_module_with_sas("d1", "m1", None, None, None))
    client = client_for("d1", module_key, "m1", connection_retry=False)
    client.connect()
    assert registry.get_module("d1", "m1").connection_state == "Connected"

    registry.update_device_with_sas("d1", "*", keys.primary_key, keys.secondary_key, "disabled")

    wait_for(lambda: registry.get_module("d1", "m1").connection_state == "Disconnected")
    wait_for(lambda: not client.connected)


def test_a_connection_is_dropped_when_its_token_expires(localhub, registry):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    token = sas.generate(f"{localhub.host}/devices/d1", key, ttl=2)

    with raw_mqtt(localhub, "d1", token) as (connacks, disconnected):
        assert connacks.get(timeout=10) == CONNACK_ACCEPTED
        assert registry.get_device("d1").connection_state == "Connected"
        assert disconnected.wait(5), "the hub kept a connection whose token had expired"
    wait_for(lambda: registry.get_device("d1").connection_state == "Disconnected")


# One connection per identity


def test_a_second_connection_for_an_identity_replaces_the_first(registry, client_for):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    first = client_for("d1", key, connection_retry=False)
    first_changes = []
    first.on_connection_state_change = lambda: first_changes.append(time.monotonic())
    first_patches, second_patches = queue.Queue(), queue.Queue()
    first.connect()
    first.on_twin_desired_properties_patch_received = first_patches.put

    second = client_for("d1", key)
    second.connect()
    second.on_twin_desired_properties_patch_received = second_patches.put

    wait_for(lambda: not first.connected)
    wait_for(lambda: len(first_changes) == 2)  # connected, then dropped
    assert second.connected
    assert registry.get_device("d1").connection_state == "Connected"

    registry.update_twin("d1", Twin(properties=TwinProperties(desired={"x": 1})), "*")
    patch = second_patches.get(timeout=5)
    assert patch["x"] == 1
    with pytest.raises(queue.Empty):
        first_patches.get(timeout=0.5)


def test_a_second_connection_for_a_module_replaces_the_first(registry, client_for):
    registry.create_device_with_sas("d1", None, None, "enabled")
    key = primary_key(registry.create_module_with_sas("d1", "m1", None, None, None))
    first = client_for("d1", key, "m1", connection_retry=False)
    first.connect()

    second = client_for("d1", key, "m1")
    second.connect()

    wait_for(lambda: not first.connected)
    assert second.connected
    assert registry.get_module("d1", "m1").connection_state == "Connected"


def test_a_device_and_its_modules_connect_side_by_side(registry, client_for):
    device_key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    module_key = primary_key(registry.create_module_with_sas("d1", "m1", None, None, None))
    device = client_for("d1", device_key)
    module = client_for("d1", module_key, "m1")

    device.connect()
    module.connect()

    assert device.connected and module.connected
    assert registry.get_device("d1").connection_state == "Connected"
    assert registry.get_module("d1", "m1").connection_state == "Connected"


def test_deleting_a_connected_device_drops_its_connection(registry, client_for):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = client_for("d1", key, connection_retry=False)
    client.connect()

    registry.delete_device("d1")

    wait_for(lambda: not client.connected)
