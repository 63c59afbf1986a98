"""What a hub knows survives a restart: identities, keys, twins, versions, sessions."""

import threading

import pytest
from azure.iot.device import IoTHubDeviceClient
from azure.iot.hub.models import Twin, TwinProperties
from support import desired, http_error, primary_key, wait_for


def everything(registry) -> dict:
    """Every device, module and twin as the REST API shows them."""
    state = {}
    for device in registry.get_devices():
        device_id = device.device_id
        state[device_id] = {
            "device": registry.get_device(device_id).as_dict(),
            "twin": registry.get_twin(device_id).as_dict(),
            "modules": {
                m.module_id: {
                    "module": registry.get_module(device_id, m.module_id).as_dict(),
                    "twin": registry.get_module_twin(device_id, m.module_id).as_dict(),
                }
                for m in registry.get_modules(device_id)
            },
        }
    state["statistics"] = registry.get_device_registry_statistics().as_dict()
    return state


def differences(before, after, path="") -> list[str]:
    """The paths at which two JSON-like documents differ, with both values."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(before.keys() | after.keys(), key=str):
            found += differences(before.get(key), after.get(key), f"{path}/{key}")
        return found
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


def wait_until_disconnected(registry, device_id: str = "d1") -> None:
    """The hub records a disconnection just after the client's shutdown returns."""
    wait_for(
        lambda: registry.get_device(device_id).connection_state == "Disconnected",
        timeout=10,
        what=f"{device_id} to show as disconnected",
    )


def not_found(call, *args) -> bool:
    return http_error(call, *args).status_code == 404


@pytest.fixture
def populated(localhub, registry):
    """Devices and modules with keys, tags, desired and reported properties, all offline."""
    registry.create_device_with_sas(
        "d1",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4=",
        "enabled",
    )
    registry.create_device_with_sas("d2", None, None, "disabled", status_reason="retired")
    registry.create_module_with_sas("d1", "m1", "someone", None, None)
    registry.create_module_with_sas("d1", "m2", None, None, None)
    registry.update_twin(
        "d1", Twin(tags={"site": {"building": "b1"}}, properties=TwinProperties(desired={"a": 1}))
    )
    registry.update_twin("d1", desired({"a": None, "b": {"c": [1, 2]}}))
    registry.replace_module_twin("d1", "m1", Twin(tags={"t": 1}, properties=TwinProperties()))
    registry.update_module_twin("d1", "m1", desired({"interval": 122}))

    key = primary_key(registry.get_device("d1"))
    client = localhub.device_client("d1", key)
    try:
        client.connect()
        client.patch_twin_reported_properties({"temp": 21.5, "fw": {"v": "1.0"}})
        client.patch_twin_reported_properties({"fw": None})
    finally:
        client.shutdown()
    wait_until_disconnected(registry)


def test_identities_keys_tags_twins_versions_and_etags_survive_a_restart(
    localhub, registry, populated
):
    before = everything(registry)

    localhub.restart()

    assert differences(before, everything(localhub.registry_manager())) == []


def test_versions_and_etags_keep_counting_after_a_restart(localhub, registry, populated):
    before = registry.get_twin("d1")

    localhub.restart()
    registry = localhub.registry_manager()
    after = registry.update_twin("d1", desired({"z": 1}), before.etag)

    assert after.properties.desired["$version"] == before.properties.desired["$version"] + 1
    assert after.version > before.version
    assert after.etag != before.etag


def test_a_device_connected_at_restart_is_disconnected_after_it(localhub, registry):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = localhub.device_client("d1", key, connection_retry=False)
    try:
        client.connect()
        client.patch_twin_reported_properties({"online": True})
        connected = registry.get_device("d1")
        assert connected.connection_state == "Connected"

        localhub.restart()
        wait_for(lambda: not client.connected, what="the client to see the hub go", timeout=10)

        registry = localhub.registry_manager()
        device = registry.get_device("d1")
        assert device.connection_state == "Disconnected"
        assert registry.get_twin("d1").connection_state == "Disconnected"
        assert registry.get_service_statistics().connected_device_count == 0
        # The state changed when the hub stopped, so its time moved on.
        assert device.connection_state_updated_time > connected.connection_state_updated_time
        assert device.etag == connected.etag
        assert registry.get_twin("d1").properties.reported["online"] is True
    finally:
        client.shutdown()


def test_the_time_a_device_disconnected_survives_a_restart(localhub, registry, populated):
    disconnected = registry.get_device("d1").connection_state_updated_time

    localhub.restart()

    device = localhub.registry_manager().get_device("d1")
    assert device.connection_state == "Disconnected"
    assert device.connection_state_updated_time == disconnected


def test_the_last_activity_of_a_device_survives_a_restart(localhub, registry):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = localhub.device_client("d1", key)
    try:
        client.connect()
        client.patch_twin_reported_properties({"online": True})
        after_patch = registry.get_device("d1").last_activity_time
        client.send_message("telemetry is activity too")
    finally:
        client.shutdown()
    wait_until_disconnected(registry)
    before = registry.get_device("d1").last_activity_time
    assert before > after_patch

    localhub.restart()

    assert localhub.registry_manager().get_device("d1").last_activity_time == before


def test_a_reported_patch_acknowledged_just_before_restart_is_kept(localhub, registry):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = localhub.device_client("d1", key, connection_retry=False)
    try:
        client.connect()
        client.patch_twin_reported_properties({"last": "words"})
        localhub.restart()
        wait_for(lambda: not client.connected, what="the client to see the hub go", timeout=10)
    finally:
        client.shutdown()

    reported = localhub.registry_manager().get_twin("d1").properties.reported
    assert reported["last"] == "words"


def test_a_desired_change_answered_200_just_before_restart_is_kept(localhub, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    answered = registry.update_twin("d1", desired({"last": "words"}))

    localhub.restart()

    kept = localhub.registry_manager().get_twin("d1")
    assert kept.properties.desired == answered.properties.desired
    assert kept.etag == answered.etag


def test_a_deleted_device_stays_deleted_after_restart(localhub, registry, populated):
    registry.delete_device("d1")

    localhub.restart()

    registry = localhub.registry_manager()
    assert not_found(registry.get_device, "d1")
    assert not_found(registry.get_twin, "d1")
    assert not_found(registry.get_module, "d1", "m1")
    assert [d.device_id for d in registry.get_devices()] == ["d2"]
    assert registry.get_device_registry_statistics().total_device_count == 1


def test_a_deleted_module_stays_deleted_after_restart(localhub, registry, populated):
    registry.delete_module("d1", "m2")

    localhub.restart()

    registry = localhub.registry_manager()
    assert not_found(registry.get_module, "d1", "m2")
    assert [m.module_id for m in registry.get_modules("d1")] == ["m1"]


def test_a_deleted_device_can_be_created_again_after_restart_with_a_fresh_twin(
    localhub, registry, populated
):
    registry.delete_device("d1")
    localhub.restart()
    registry = localhub.registry_manager()

    registry.create_device_with_sas("d1", None, None, "enabled")

    twin = registry.get_twin("d1")
    assert twin.tags in (None, {})
    assert "b" not in twin.properties.desired
    assert registry.get_modules("d1") == []


def test_subscriptions_survive_a_restart_so_desired_patches_keep_arriving(localhub, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    key = primary_key(registry.create_module_with_sas("d1", "m1", None, None, None))
    client = localhub.device_client("d1", key, "m1", connection_retry_interval=1)
    patches, states = [], []
    lock = threading.Lock()

    def on_patch(patch):
        with lock:
            patches.append(patch)

    def on_state_change():
        states.append(client.connected)

    try:
        client.on_connection_state_change = on_state_change
        client.connect()
        client.on_twin_desired_properties_patch_received = on_patch
        first = registry.update_module_twin("d1", "m1", desired({"before": 1}))
        expected = {"before": 1, "$version": first.properties.desired["$version"]}
        wait_for(lambda: expected in patches, what="the patch before the restart", timeout=10)

        localhub.restart()

        wait_for(lambda: False in states, what="the client to notice the restart", timeout=10)
        wait_for(
            lambda: states[-1] is True and client.connected,
            what="the client to reconnect",
            timeout=10,
        )
        second = localhub.registry_manager().update_module_twin("d1", "m1", desired({"after": 2}))
        expected = {"after": 2, "$version": second.properties.desired["$version"]}
        wait_for(lambda: expected in patches, what="the patch after the restart", timeout=10)
    finally:
        client.shutdown()


def test_policy_keys_and_the_ca_survive_a_restart(localhub, registry):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    owner = localhub.connection_string
    reader = localhub.policy_connection_string("registryRead")
    ca_pem = localhub.ca_pem

    localhub.restart()

    assert localhub.connection_string == owner
    assert localhub.ca_pem == ca_pem
    for connection_string in (owner, reader):
        assert localhub.registry_manager(connection_string).get_device("d1").device_id == "d1"
    client = IoTHubDeviceClient.create_from_connection_string(
        localhub.device_connection_string("d1", key),
        server_verification_cert=ca_pem,
        connection_retry=False,
    )
    try:
        client.connect()
        assert client.get_twin()["desired"]["$version"] == 1
    finally:
        client.shutdown()


# -- a hub killed outright, not stopped: acknowledged writes must already be on disk ----


def test_writes_acknowledged_before_the_hub_is_killed_are_kept(hub_process):
    hub_process.start()
    registry = hub_process.registry_manager()
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = IoTHubDeviceClient.create_from_connection_string(
        f"HostName={hub_process.host};DeviceId=d1;SharedAccessKey={key}",
        server_verification_cert=(hub_process.data_dir / "ca.pem").read_text(),
        connection_retry=False,
    )
    try:
        client.connect()
        client.patch_twin_reported_properties({"reported": "before the crash"})
        answered = registry.update_twin("d1", desired({"desired": "before the crash"}))
        hub_process.kill()
        wait_for(lambda: not client.connected, what="the client to see the hub go", timeout=10)
    finally:
        client.shutdown()

    hub_process.start()

    twin = hub_process.registry_manager().get_twin("d1")
    assert twin.properties.reported["reported"] == "before the crash"
    assert twin.properties.desired == answered.properties.desired
    assert twin.etag == answered.etag
