"""Device and module identities through IoTHubRegistryManager, as a real IoT Hub serves them.

Everything goes through the official azure-iot-hub client except the few requests it cannot
express (a bad JSON body, a hand-written percent-encoded path), which use ``requests`` with a
service token the SDK itself builds.
"""

import base64
from datetime import datetime
from urllib.parse import quote

import pytest
from support import (
    error_detail,
    http_error,
    new_key,
    primary_key,
    rest_request,
    service_token,
    wait_for,
)


def assert_error(response, status: int, reason: str, code: int) -> None:
    assert response.status_code == status
    assert response.reason == reason
    assert error_detail(response)["errorCode"] == code


# -- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("empty", [None, ""])
def test_create_without_keys_generates_two_distinct_32_byte_base64_keys(registry, empty):
    device = registry.create_device_with_sas("d1", empty, empty, "enabled")

    keys = device.authentication.symmetric_key
    assert len(base64.b64decode(keys.primary_key, validate=True)) == 32
    assert len(base64.b64decode(keys.secondary_key, validate=True)) == 32
    assert keys.primary_key != keys.secondary_key
    other = registry.create_device_with_sas("d2", empty, empty, "enabled")
    assert other.authentication.symmetric_key.primary_key not in (
        keys.primary_key,
        keys.secondary_key,
    )


def test_create_with_supplied_keys_returns_and_keeps_those_keys(registry):
    primary, secondary = new_key(), new_key()

    created = registry.create_device_with_sas("d1", primary, secondary, "enabled")

    assert created.authentication.symmetric_key.primary_key == primary
    assert created.authentication.symmetric_key.secondary_key == secondary
    fetched = registry.get_device("d1").authentication.symmetric_key
    assert (fetched.primary_key, fetched.secondary_key) == (primary, secondary)


@pytest.mark.parametrize(
    "bad_key",
    ["not base64 at all!", new_key(8)],
    ids=["not-base64", "too-short"],
)
def test_create_with_invalid_supplied_key_is_bad_request(registry, bad_key):
    response = http_error(registry.create_device_with_sas, "d1", bad_key, new_key(), "enabled")

    assert_error(response, 400, "Bad Request", 400004)
    assert http_error(registry.get_device, "d1").status_code == 404


@pytest.mark.parametrize(
    "bad_key",
    ["not base64 at all!", new_key(8)],
    ids=["not-base64", "too-short"],
)
def test_create_module_with_invalid_supplied_key_is_bad_request(registry, bad_key):
    registry.create_device_with_sas("d1", None, None, "enabled")

    response = http_error(registry.create_module_with_sas, "d1", "m1", None, new_key(), bad_key)

    assert_error(response, 400, "Bad Request", 400004)
    assert registry.get_modules("d1") == []


# -- devices: fields, get, list -------------------------------------------------------------


def test_created_device_has_every_field_the_sdk_deserializes(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")

    device = registry.get_device("d1")

    assert device.device_id == "d1"
    assert device.generation_id
    assert device.etag
    assert device.connection_state == "Disconnected"
    assert device.status == "enabled"
    assert isinstance(device.status_updated_time, datetime)
    assert isinstance(device.last_activity_time, datetime)
    assert isinstance(device.connection_state_updated_time, datetime)
    assert device.cloud_to_device_message_count == 0
    assert device.authentication.type == "sas"
    assert device.capabilities.iot_edge is False


def test_iot_edge_capability_and_disabled_status_are_kept_from_create(registry):
    registry.create_device_with_sas(
        "edge1", None, None, "disabled", iot_edge=True, status_reason="not yet deployed"
    )

    device = registry.get_device("edge1")

    assert device.capabilities.iot_edge is True
    assert device.status == "disabled"
    assert device.status_reason == "not yet deployed"


def test_recreated_device_gets_a_new_generation_id(registry):
    first = registry.create_device_with_sas("d1", None, None, "enabled")
    registry.delete_device("d1")

    second = registry.create_device_with_sas("d1", None, None, "enabled")

    assert second.generation_id != first.generation_id


def test_get_missing_device_is_not_found(registry):
    response = http_error(registry.get_device, "nobody")

    assert_error(response, 404, "Not Found", 404001)
    assert response.headers["iothub-errorcode"] == "DeviceNotFound"
    assert "nobody" in error_detail(response)["message"]


def test_get_devices_lists_every_device_and_honours_max_number(registry):
    for device_id in ("a1", "b2", "c3"):
        registry.create_device_with_sas(device_id, None, None, "enabled")

    everything = registry.get_devices()
    two = registry.get_devices(max_number_of_devices=2)

    assert sorted(d.device_id for d in everything) == ["a1", "b2", "c3"]
    assert len(two) == 2
    assert {d.device_id for d in two} <= {"a1", "b2", "c3"}


def test_get_devices_on_an_empty_registry_is_an_empty_list(registry):
    assert registry.get_devices() == []


@pytest.mark.parametrize("top", ["-1", "abc"])
def test_get_devices_with_invalid_top_is_bad_request(localhub, registry, top):
    for device_id in ("a1", "b2"):
        registry.create_device_with_sas(device_id, None, None, "enabled")

    response = rest_request(localhub, "GET", f"/devices?top={top}", service_token(localhub))

    assert_error(response, 400, "Bad Request", 400004)


def test_device_ids_are_case_sensitive(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    registry.create_device_with_sas("D1", None, None, "disabled")

    assert registry.get_device("d1").status == "enabled"
    assert registry.get_device("D1").status == "disabled"
    assert_error(http_error(registry.get_device, "d1 "), 404, "Not Found", 404001)


# -- devices: update ---------------------------------------------------------------------------


def test_update_disables_device_with_reason_and_changes_etag(registry):
    primary, secondary = new_key(), new_key()
    created = registry.create_device_with_sas("d1", primary, secondary, "enabled")

    updated = registry.update_device_with_sas(
        "d1", created.etag, primary, secondary, "disabled", status_reason="maintenance"
    )

    assert updated.status == "disabled"
    assert updated.status_reason == "maintenance"
    assert updated.etag != created.etag
    assert updated.generation_id == created.generation_id
    assert updated.status_updated_time >= created.status_updated_time
    fetched = registry.get_device("d1")
    assert (fetched.status, fetched.status_reason, fetched.etag) == (
        "disabled",
        "maintenance",
        updated.etag,
    )
    assert fetched.authentication.symmetric_key.primary_key == primary


def test_update_with_stale_etag_is_precondition_failed_and_changes_nothing(registry):
    primary, secondary = new_key(), new_key()
    created = registry.create_device_with_sas("d1", primary, secondary, "enabled")
    registry.update_device_with_sas("d1", created.etag, primary, secondary, "enabled")

    response = http_error(
        registry.update_device_with_sas, "d1", created.etag, primary, secondary, "disabled"
    )

    assert_error(response, 412, "Precondition Failed", 412001)
    assert registry.get_device("d1").status == "enabled"


@pytest.mark.parametrize("etag", ["*", None])
def test_update_with_wildcard_etag_is_unconditional(registry, etag):
    primary, secondary = new_key(), new_key()
    created = registry.create_device_with_sas("d1", primary, secondary, "enabled")
    registry.update_device_with_sas("d1", created.etag, primary, secondary, "enabled")

    updated = registry.update_device_with_sas("d1", etag, primary, secondary, "disabled")

    assert updated.status == "disabled"
    assert registry.get_device("d1").status == "disabled"


def test_invalid_status_is_bad_request(registry):
    response = http_error(registry.create_device_with_sas, "d1", None, None, "paused")

    assert_error(response, 400, "Bad Request", 400004)
    assert registry.get_devices() == []


def test_status_reason_longer_than_128_characters_is_bad_request(registry):
    registry.create_device_with_sas("d1", None, None, "enabled", status_reason="r" * 128)

    response = http_error(
        registry.create_device_with_sas, "d2", None, None, "enabled", status_reason="r" * 129
    )

    assert_error(response, 400, "Bad Request", 400004)
    assert [d.device_id for d in registry.get_devices()] == ["d1"]


def test_update_of_missing_device_is_not_found(registry):
    response = http_error(
        registry.update_device_with_sas, "nobody", "*", new_key(), new_key(), "enabled"
    )

    assert_error(response, 404, "Not Found", 404001)


# -- devices: delete ---------------------------------------------------------------------------


def test_deleted_device_is_not_found(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")

    registry.delete_device("d1")

    response = http_error(registry.get_device, "d1")
    assert_error(response, 404, "Not Found", 404001)
    assert registry.get_devices() == []


def test_delete_with_stale_etag_is_precondition_failed_and_keeps_the_device(registry):
    primary, secondary = new_key(), new_key()
    created = registry.create_device_with_sas("d1", primary, secondary, "enabled")
    updated = registry.update_device_with_sas("d1", created.etag, primary, secondary, "enabled")

    response = http_error(registry.delete_device, "d1", created.etag)

    assert_error(response, 412, "Precondition Failed", 412001)
    assert registry.get_device("d1").device_id == "d1"
    registry.delete_device("d1", updated.etag)
    assert http_error(registry.get_device, "d1").status_code == 404


def test_delete_missing_device_is_not_found(registry):
    assert_error(http_error(registry.delete_device, "nobody"), 404, "Not Found", 404001)


def test_deleting_a_device_removes_its_modules(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    registry.create_module_with_sas("d1", "m1", None, None, None)

    registry.delete_device("d1")

    assert_error(http_error(registry.get_modules, "d1"), 404, "Not Found", 404001)
    registry.create_device_with_sas("d1", None, None, "enabled")
    assert registry.get_modules("d1") == []
    assert_error(http_error(registry.get_module, "d1", "m1"), 404, "Not Found", 404010)


# -- duplicates -----------------------------------------------------------------------------


def test_creating_an_existing_device_is_conflict(registry):
    original = registry.create_device_with_sas("d1", None, None, "enabled")

    response = http_error(registry.create_device_with_sas, "d1", None, None, "disabled")

    assert_error(response, 409, "Conflict", 409001)
    assert "ExceptionMessage" in response.json()
    assert registry.get_device("d1").etag == original.etag
    assert registry.get_device("d1").status == "enabled"


def test_creating_an_existing_module_is_conflict(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    original = registry.create_module_with_sas("d1", "m1", "me", None, None)

    response = http_error(registry.create_module_with_sas, "d1", "m1", "someone", None, None)

    assert_error(response, 409, "Conflict", 409301)
    assert registry.get_module("d1", "m1").managed_by == "me"
    assert registry.get_module("d1", "m1").etag == original.etag


# -- modules ---------------------------------------------------------------------------------


def test_module_create_get_list_update_delete(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")

    created = registry.create_module_with_sas("d1", "m1", "edgeAgent", None, None)
    registry.create_module_with_sas("d1", "m2", None, None, None)

    assert (created.device_id, created.module_id, created.managed_by) == ("d1", "m1", "edgeAgent")
    assert created.generation_id and created.etag
    assert created.connection_state == "Disconnected"
    assert created.authentication.type == "sas"
    keys = created.authentication.symmetric_key
    assert len(base64.b64decode(keys.primary_key, validate=True)) == 32
    assert keys.primary_key != keys.secondary_key

    fetched = registry.get_module("d1", "m1")
    assert (fetched.module_id, fetched.managed_by, fetched.etag) == (
        "m1",
        "edgeAgent",
        created.etag,
    )
    assert sorted(m.module_id for m in registry.get_modules("d1")) == ["m1", "m2"]

    primary, secondary = new_key(), new_key()
    updated = registry.update_module_with_sas(
        "d1", "m1", "someoneElse", created.etag, primary, secondary
    )
    assert updated.managed_by == "someoneElse"
    assert updated.etag != created.etag
    assert updated.authentication.symmetric_key.primary_key == primary
    assert registry.get_module("d1", "m1").authentication.symmetric_key.secondary_key == secondary

    registry.delete_module("d1", "m1")
    assert [m.module_id for m in registry.get_modules("d1")] == ["m2"]
    assert_error(http_error(registry.get_module, "d1", "m1"), 404, "Not Found", 404010)
    assert registry.get_device("d1").device_id == "d1"


def test_module_update_with_stale_etag_is_precondition_failed(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    created = registry.create_module_with_sas("d1", "m1", None, None, None)
    registry.update_module_with_sas("d1", "m1", "one", created.etag, new_key(), new_key())

    response = http_error(
        registry.update_module_with_sas, "d1", "m1", "two", created.etag, new_key(), new_key()
    )

    assert_error(response, 412, "Precondition Failed", 412001)
    assert registry.get_module("d1", "m1").managed_by == "one"


def test_module_delete_with_stale_etag_is_precondition_failed(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    created = registry.create_module_with_sas("d1", "m1", None, None, None)
    registry.update_module_with_sas("d1", "m1", "one", created.etag, new_key(), new_key())

    response = http_error(registry.delete_module, "d1", "m1", created.etag)

    assert_error(response, 412, "Precondition Failed", 412001)
    assert registry.get_module("d1", "m1").module_id == "m1"


def test_module_with_supplied_keys_keeps_them(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    primary, secondary = new_key(), new_key()

    registry.create_module_with_sas("d1", "m1", None, primary, secondary)

    keys = registry.get_module("d1", "m1").authentication.symmetric_key
    assert (keys.primary_key, keys.secondary_key) == (primary, secondary)


def test_module_on_a_missing_device_is_not_found(registry):
    create = http_error(registry.create_module_with_sas, "nobody", "m1", None, None, None)
    get = http_error(registry.get_module, "nobody", "m1")
    listing = http_error(registry.get_modules, "nobody")

    for response in (create, get, listing):
        assert_error(response, 404, "Not Found", 404001)


def test_missing_module_is_not_found_with_module_not_found_code(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")

    get = http_error(registry.get_module, "d1", "ghost")
    delete = http_error(registry.delete_module, "d1", "ghost")

    for response in (get, delete):
        assert_error(response, 404, "Not Found", 404010)
        assert "ghost" in error_detail(response)["message"]


def test_a_device_holds_at_most_50_modules(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    for n in range(50):
        registry.create_module_with_sas("d1", f"m{n}", None, None, None)

    response = http_error(registry.create_module_with_sas, "d1", "m50", None, None, None)

    assert_error(response, 413, "Request Entity Too Large", 413003)
    assert len(registry.get_modules("d1")) == 50


def test_a_device_without_modules_lists_none(registry):
    registry.create_device_with_sas("d1", None, None, "enabled")

    assert registry.get_modules("d1") == []


# -- ids ---------------------------------------------------------------------------------------

SPECIAL_IDS = [
    "dev-1.a+b%_#*?!(),=@$'",
    "colon:semi;colon",
    "%2F",
    "a+b",
    "x" * 128,
]


@pytest.mark.parametrize("device_id", SPECIAL_IDS)
def test_device_ids_with_allowed_special_characters_round_trip(registry, device_id):
    created = registry.create_device_with_sas(device_id, None, None, "enabled")

    assert created.device_id == device_id
    assert registry.get_device(device_id).device_id == device_id
    assert [d.device_id for d in registry.get_devices()] == [device_id]
    registry.update_device_with_sas(device_id, created.etag, None, None, "disabled")
    assert registry.get_device(device_id).status == "disabled"
    registry.delete_device(device_id)
    assert registry.get_devices() == []


@pytest.mark.parametrize("module_id", SPECIAL_IDS)
def test_module_ids_with_allowed_special_characters_round_trip(registry, module_id):
    device_id = "dev-1.a+b%_#*?!(),=@$':;"
    registry.create_device_with_sas(device_id, None, None, "enabled")

    created = registry.create_module_with_sas(device_id, module_id, None, None, None)

    assert (created.device_id, created.module_id) == (device_id, module_id)
    assert registry.get_module(device_id, module_id).module_id == module_id
    assert [m.module_id for m in registry.get_modules(device_id)] == [module_id]
    registry.delete_module(device_id, module_id)
    assert registry.get_modules(device_id) == []


def test_percent_encoded_path_is_decoded_once(localhub, registry):
    registry.create_device_with_sas("a+b%20c", None, None, "enabled")

    token = service_token(localhub)
    exact = rest_request(localhub, "GET", "/devices/" + quote("a+b%20c", safe=""), token)
    double_decoded = rest_request(localhub, "GET", "/devices/a%2Bb%20c", token)
    plus_as_space = rest_request(localhub, "GET", "/devices/a%20b%2520c", token)
    literal_plus = rest_request(localhub, "GET", "/devices/a+b%2520c", token)

    assert exact.status_code == 200
    assert exact.json()["deviceId"] == "a+b%20c"
    assert literal_plus.status_code == 200
    assert double_decoded.status_code == 404
    assert plus_as_space.status_code == 404


INVALID_IDS = ["x" * 129, "has space", "a/b", "tab\there", "é"]
INVALID_ID_NAMES = ["too-long", "space", "slash", "tab", "non-ascii"]


@pytest.mark.parametrize("bad_id", INVALID_IDS, ids=INVALID_ID_NAMES)
def test_invalid_device_id_is_bad_request(registry, bad_id):
    response = http_error(registry.create_device_with_sas, bad_id, None, None, "enabled")

    assert_error(response, 400, "Bad Request", 400004)
    assert registry.get_devices() == []


@pytest.mark.parametrize("bad_id", INVALID_IDS, ids=INVALID_ID_NAMES)
def test_invalid_module_id_is_bad_request(registry, bad_id):
    registry.create_device_with_sas("d1", None, None, "enabled")

    response = http_error(registry.create_module_with_sas, "d1", bad_id, None, None, None)

    assert_error(response, 400, "Bad Request", 400004)
    assert registry.get_modules("d1") == []


# -- statistics -----------------------------------------------------------------------------


def test_registry_statistics_count_enabled_and_disabled_devices(registry):
    assert registry.get_device_registry_statistics().total_device_count == 0
    for device_id in ("d1", "d2", "d3"):
        registry.create_device_with_sas(device_id, None, None, "enabled")
    registry.create_device_with_sas("off", None, None, "disabled")
    registry.update_device_with_sas("d3", "*", None, None, "disabled")
    registry.delete_device("d1")

    stats = registry.get_device_registry_statistics()

    assert (stats.total_device_count, stats.enabled_device_count, stats.disabled_device_count) == (
        3,
        1,
        2,
    )


def test_service_statistics_count_connected_devices(localhub, registry):
    device = registry.create_device_with_sas("d1", None, None, "enabled")
    registry.create_device_with_sas("idle", None, None, "enabled")
    assert registry.get_service_statistics().connected_device_count == 0

    client = localhub.device_client("d1", primary_key(device), connection_retry=False)
    try:
        client.connect()
        assert registry.get_service_statistics().connected_device_count == 1
        assert registry.get_device("d1").connection_state == "Connected"
        assert registry.get_device("idle").connection_state == "Disconnected"
    finally:
        client.shutdown()

    assert wait_for(
        lambda: registry.get_service_statistics().connected_device_count == 0, timeout=10
    )
    assert registry.get_device("d1").connection_state == "Disconnected"


# -- bad bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"deviceId": "d1",', b"[1, 2]", b'"just a string"'],
    ids=["garbage", "truncated", "array", "string"],
)
def test_bad_json_body_is_bad_request_and_the_hub_keeps_serving(localhub, registry, body):
    response = rest_request(
        localhub,
        "PUT",
        "/devices/d1",
        service_token(localhub),
        data=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 400
    assert response.reason == "Bad Request"
    assert error_detail(response)["errorCode"] == 400004
    assert http_error(registry.get_device, "d1").status_code == 404
    assert registry.create_device_with_sas("d1", None, None, "enabled").device_id == "d1"


def test_bad_json_module_body_is_bad_request(localhub, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")

    response = rest_request(
        localhub, "PUT", "/devices/d1/modules/m1", service_token(localhub), data=b'{"moduleId": '
    )

    assert_error(response, 400, "Bad Request", 400004)
    assert registry.get_modules("d1") == []


def test_minimal_body_creates_a_sas_device_with_generated_keys(localhub, registry):
    response = rest_request(
        localhub, "PUT", "/devices/d1", service_token(localhub), json={"deviceId": "d1"}
    )

    assert response.status_code == 200
    device = registry.get_device("d1")
    assert device.status == "enabled"
    assert device.authentication.type == "sas"
    assert len(base64.b64decode(device.authentication.symmetric_key.primary_key)) == 32


def test_body_device_id_must_match_the_url(localhub, registry):
    response = rest_request(
        localhub,
        "PUT",
        "/devices/d1",
        service_token(localhub),
        json={"deviceId": "d2", "status": "enabled", "authentication": {"type": "sas"}},
    )

    assert_error(response, 400, "Bad Request", 400004)
    assert registry.get_devices() == []
