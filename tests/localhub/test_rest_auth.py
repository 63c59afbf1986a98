"""Every REST request is authenticated by a shared access policy's SAS token.

Failures go through IoTHubRegistryManager where a connection string can express them (a
wrong key, an unknown policy); tokens the SDK never builds (missing, malformed, expired,
for another hub) are sent with ``requests``.
"""

import threading

import pytest
import requests
from azure.iot.device import MethodResponse
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from support import (
    connection_string_fields,
    error_detail,
    http_error,
    new_key,
    owner_key,
    primary_key,
    rest_request,
    service_token,
)

from localhub import sas


def assert_unauthorized(response, words: str = "") -> None:
    assert response.status_code == 401
    assert response.reason == "Unauthorized"
    detail = error_detail(response)
    assert detail["errorCode"] == 401002
    assert detail["message"]
    assert words.lower() in detail["message"].lower()


def get(localhub, path: str, authorization: str | None) -> requests.Response:
    return rest_request(localhub, "GET", path, authorization)


def registry_for(localhub, policy: str):
    return localhub.registry_manager(localhub.policy_connection_string(policy))


@pytest.fixture
def device(registry):
    return registry.create_device_with_sas("d1", None, None, "enabled")


# -- who may call at all -----------------------------------------------------------------


def test_valid_owner_token_is_accepted(localhub, device):
    response = get(localhub, "/devices/d1", service_token(localhub))

    assert response.status_code == 200
    assert response.json()["deviceId"] == "d1"


def test_request_without_authorization_header_is_unauthorized(localhub, device):
    assert_unauthorized(get(localhub, "/devices/d1", None))


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
        "SharedAccessSignature",
        "SharedAccessSignature sr=host&sig=abc",
        "SharedAccessSignature sr=host&sig=%%%&se=9999999999&skn=iothubowner",
        "SharedAccessSignature sr=host&sig=abc&se=tomorrow&skn=iothubowner",
        "SharedAccessSignature garbage",
    ],
    ids=["empty", "bearer", "prefix-only", "no-expiry", "sig-not-base64", "se-not-number", "junk"],
)
def test_malformed_token_is_unauthorized(localhub, device, authorization):
    assert_unauthorized(get(localhub, "/devices/d1", authorization))


def test_wrong_key_is_unauthorized(localhub, device):
    wrong = (
        f"HostName={localhub.host}:8443;SharedAccessKeyName=iothubowner;SharedAccessKey={new_key()}"
    )

    response = http_error(localhub.registry_manager(wrong).get_device, "d1")

    assert_unauthorized(response, "signature")


def test_expired_token_is_unauthorized(localhub, device):
    token = sas.generate(f"{localhub.host}:8443", owner_key(localhub), "iothubowner", ttl=-60)

    assert_unauthorized(get(localhub, "/devices/d1", token), "expired")


@pytest.mark.parametrize("expiry", [10**309, sas.MAX_EXPIRY + 1], ids=["10e309", "year-10000"])
def test_token_expiring_after_the_year_9999_is_unauthorized(localhub, device, expiry):
    token = sas.generate(f"{localhub.host}:8443", owner_key(localhub), "iothubowner", expiry=expiry)

    assert_unauthorized(get(localhub, "/devices/d1", token), "9999")


def test_token_that_expires_later_is_accepted(localhub, device):
    token = sas.generate(f"{localhub.host}:8443", owner_key(localhub), "iothubowner", ttl=60)

    assert get(localhub, "/devices/d1", token).status_code == 200


@pytest.mark.parametrize(
    "resource",
    ["otherhub.azure-devices.net", "{host}:9443", "{host}/devices/d2", "127.0.0.1:8443"],
    ids=["other-host", "other-port", "other-device-scope", "other-address"],
)
def test_token_for_another_resource_is_unauthorized(localhub, device, resource):
    token = sas.generate(
        resource.format(host=localhub.host), owner_key(localhub), policy="iothubowner"
    )

    assert_unauthorized(get(localhub, "/devices/d1", token))


def test_token_for_host_without_port_is_accepted(localhub, device):
    token = sas.generate(localhub.host, owner_key(localhub), policy="iothubowner")

    assert get(localhub, "/devices/d1", token).status_code == 200


def test_unknown_policy_is_unauthorized(localhub, device):
    unknown = (
        f"HostName={localhub.host}:8443;SharedAccessKeyName=nosuchpolicy;"
        f"SharedAccessKey={owner_key(localhub)}"
    )

    response = http_error(localhub.registry_manager(unknown).get_device, "d1")

    assert_unauthorized(response, "polic")


def test_token_without_policy_name_is_unauthorized(localhub, device):
    """A device-style token (no skn) signed with the device's own key opens no service API."""
    key = device.authentication.symmetric_key.primary_key
    token = sas.generate(f"{localhub.host}:8443", key)

    assert_unauthorized(get(localhub, "/devices/d1", token))


def test_key_of_another_policy_is_unauthorized(localhub, device):
    """The registryRead key does not sign for iothubowner."""
    read_key = connection_string_fields(localhub.policy_connection_string("registryRead"))[
        "SharedAccessKey"
    ]

    response = get(localhub, "/devices/d1", service_token(localhub, read_key, "iothubowner"))

    assert_unauthorized(response, "signature")


@pytest.mark.parametrize(
    "policy", ["iothubowner", "service", "device", "registryRead", "registryReadWrite"]
)
def test_secondary_key_of_a_policy_is_accepted(localhub, policy):
    """Each policy's secondary key authenticates as well as its primary one."""
    primary = connection_string_fields(localhub.policy_connection_string(policy))
    secondary = localhub.hub.policies[policy][1]
    assert secondary and secondary != primary["SharedAccessKey"]
    owner = localhub.registry_manager()
    owner.create_device_with_sas("d1", None, None, "enabled")
    registry = localhub.registry_manager(
        f"HostName={localhub.host}:8443;SharedAccessKeyName={policy};SharedAccessKey={secondary}"
    )

    if policy in ("iothubowner", "registryRead", "registryReadWrite"):
        assert registry.get_device("d1").device_id == "d1"
    elif policy == "service":
        assert registry.get_twin("d1").device_id == "d1"
    else:  # the device policy opens no service API at all: refused for rights, not the key
        assert_unauthorized(http_error(registry.get_twin, "d1"), "permission")


def test_missing_device_with_bad_token_is_unauthorized_not_not_found(localhub):
    assert_unauthorized(get(localhub, "/devices/nobody", None))
    assert_unauthorized(get(localhub, "/devices/nobody/modules/m1", "SharedAccessSignature x"))


def test_unauthorized_request_changes_nothing(localhub, registry):
    wrong = (
        f"HostName={localhub.host}:8443;SharedAccessKeyName=iothubowner;SharedAccessKey={new_key()}"
    )

    http_error(localhub.registry_manager(wrong).create_device_with_sas, "d1", None, None, "enabled")

    assert registry.get_devices() == []


# -- what each policy may do ---------------------------------------------------------------


def test_registry_read_can_read_devices_but_not_write(localhub, registry, device):
    reader = registry_for(localhub, "registryRead")

    assert reader.get_device("d1").device_id == "d1"
    assert [d.device_id for d in reader.get_devices()] == ["d1"]
    assert reader.get_modules("d1") == []
    assert reader.get_device_registry_statistics().total_device_count == 1
    assert_unauthorized(
        http_error(reader.create_device_with_sas, "d2", None, None, "enabled"), "permission"
    )
    assert_unauthorized(
        http_error(reader.update_device_with_sas, "d1", "*", None, None, "disabled")
    )
    assert_unauthorized(http_error(reader.delete_device, "d1"))
    assert_unauthorized(http_error(reader.create_module_with_sas, "d1", "m1", None, None, None))
    assert [d.device_id for d in registry.get_devices()] == ["d1"]
    assert registry.get_device("d1").status == "enabled"


def test_registry_read_cannot_touch_twins_or_methods(localhub, device):
    reader = registry_for(localhub, "registryRead")

    assert_unauthorized(http_error(reader.get_twin, "d1"))
    assert_unauthorized(
        http_error(reader.invoke_device_method, "d1", CloudToDeviceMethod(method_name="m"))
    )


def test_registry_read_write_can_create_update_and_delete(localhub, registry):
    writer = registry_for(localhub, "registryReadWrite")

    created = writer.create_device_with_sas("d1", None, None, "enabled")
    writer.create_module_with_sas("d1", "m1", None, None, None)
    writer.update_device_with_sas("d1", created.etag, None, None, "disabled")
    writer.delete_module("d1", "m1")

    assert registry.get_device("d1").status == "disabled"
    assert registry.get_modules("d1") == []
    writer.delete_device("d1")
    assert registry.get_devices() == []


def test_service_policy_reads_and_patches_twins_but_cannot_manage_devices(localhub, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    registry.create_module_with_sas("d1", "m1", None, None, None)
    service = registry_for(localhub, "service")

    twin = service.get_twin("d1")
    patched = service.update_twin(
        "d1", Twin(properties=TwinProperties(desired={"interval": 5})), twin.etag
    )
    service.update_module_twin("d1", "m1", Twin(tags={"site": "lab"}))

    assert patched.properties.desired["interval"] == 5
    assert registry.get_twin("d1").properties.desired["interval"] == 5
    assert service.get_module_twin("d1", "m1").tags == {"site": "lab"}
    assert_unauthorized(
        http_error(service.create_device_with_sas, "d2", None, None, "enabled"), "permission"
    )
    assert_unauthorized(http_error(service.get_devices), "permission")
    assert_unauthorized(http_error(service.get_device, "d1"))
    assert_unauthorized(http_error(service.delete_device, "d1"))
    assert [d.device_id for d in registry.get_devices()] == ["d1"]


def test_service_policy_can_invoke_a_direct_method(localhub, registry):
    device = registry.create_device_with_sas("d1", None, None, "enabled")
    client = localhub.device_client("d1", primary_key(device), connection_retry=False)
    seen = threading.Event()

    def answer(request):
        seen.set()
        client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, {"echo": request.payload})
        )

    client.on_method_request_received = answer
    try:
        client.connect()
        service = registry_for(localhub, "service")

        result = service.invoke_device_method(
            "d1",
            CloudToDeviceMethod(
                method_name="ping",
                payload={"n": 1},
                response_timeout_in_seconds=10,
                connect_timeout_in_seconds=10,
            ),
        )
    finally:
        client.shutdown()

    assert seen.is_set()
    assert result.status == 200
    assert result.payload == {"echo": {"n": 1}}


def test_device_policy_can_neither_manage_devices_nor_use_twins(localhub, registry, device):
    device_policy = registry_for(localhub, "device")

    assert_unauthorized(
        http_error(device_policy.create_device_with_sas, "d2", None, None, "enabled"),
        "permission",
    )
    assert_unauthorized(http_error(device_policy.get_devices), "permission")
    assert_unauthorized(http_error(device_policy.get_device, "d1"))
    assert_unauthorized(http_error(device_policy.get_twin, "d1"))
    assert_unauthorized(
        http_error(device_policy.update_twin, "d1", Twin(tags={"a": 1})), "permission"
    )
    assert_unauthorized(
        http_error(device_policy.invoke_device_method, "d1", CloudToDeviceMethod(method_name="m"))
    )
    assert registry.get_twin("d1").tags in (None, {})
    assert [d.device_id for d in registry.get_devices()] == ["d1"]
