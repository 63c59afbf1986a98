"""Input the hub cannot store (a lone surrogate: JSON allows "\\ud800", UTF-8 does not) is
refused with 400 before it changes anything, from a device with its own key or from the
service; the twin stays readable and as it was, before and after a restart."""

import pytest
from azure.iot.device.exceptions import ClientError
from azure.iot.hub.models import Twin, TwinProperties
from support import desired, error_detail, http_error, primary_key, rest_request, service_token

LONE = "\ud800"
HOSTILE_PATCHES = {
    "string value": {"name": LONE},
    "key": {LONE: 1},
    "nested key": {"a": {"b": {f"x{LONE}": True}}},
    "string in an array": {"list": ["fine", {"deep": [f"a{LONE}b"]}]},
    "low surrogate": {"name": "\udfff"},
}


@pytest.fixture
def device_key(registry) -> str:
    return primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))


def state(twin) -> dict:
    return {
        "etag": twin.etag,
        "version": twin.version,
        "tags": twin.tags or {},
        "properties": twin.properties.as_dict(),
    }


@pytest.mark.parametrize("patch", HOSTILE_PATCHES.values(), ids=HOSTILE_PATCHES)
def test_a_device_reporting_a_lone_surrogate_gets_400_and_its_twin_is_unchanged(
    localhub, registry, device_key, client_for, patch
):
    client = client_for("d1", device_key)
    client.connect()
    client.patch_twin_reported_properties({"good": 1})
    before = state(registry.get_twin("d1"))

    with pytest.raises(ClientError) as caught:
        client.patch_twin_reported_properties(patch)

    assert "status 400" in str(caught.value.__cause__)
    assert state(registry.get_twin("d1")) == before
    client.patch_twin_reported_properties({"good": 2})  # its connection still works
    client.shutdown()
    after = state(registry.get_twin("d1"))

    localhub.restart()

    assert state(localhub.registry_manager().get_twin("d1")) == after
    assert after["properties"]["reported"]["good"] == 2


@pytest.mark.parametrize(
    "twin",
    [
        desired(HOSTILE_PATCHES["string value"]),
        desired(HOSTILE_PATCHES["string in an array"]),
        Twin(tags=HOSTILE_PATCHES["key"]),
        Twin(tags=HOSTILE_PATCHES["nested key"]),
    ],
    ids=["desired value", "desired array", "tag key", "nested tag key"],
)
@pytest.mark.parametrize("how", ["update", "replace"])
def test_a_service_write_with_a_lone_surrogate_gets_400_and_the_twin_is_unchanged(
    localhub, registry, device_key, twin, how
):
    registry.update_twin("d1", Twin(tags={"t": 1}, properties=TwinProperties(desired={"d": 1})))
    before = state(registry.get_twin("d1"))
    write = registry.update_twin if how == "update" else registry.replace_twin

    refused = http_error(write, "d1", twin)

    assert refused.status_code == 400
    assert "lone surrogate" in error_detail(refused)["message"]
    assert state(registry.get_twin("d1")) == before
    localhub.restart()
    assert state(localhub.registry_manager().get_twin("d1")) == before


def test_identity_fields_that_cannot_be_stored_get_400_and_change_nothing(
    localhub, registry, device_key
):
    token = service_token(localhub)
    device = registry.get_device("d1")
    body = {"deviceId": "d1", "status": "enabled", "statusReason": LONE}

    created = rest_request(
        localhub, "PUT", "/devices/d2", token, json={"deviceId": "d2", "deviceScope": LONE}
    )
    updated = rest_request(
        localhub, "PUT", "/devices/d1", token, json=body, headers={"If-Match": "*"}
    )
    module = rest_request(
        localhub, "PUT", "/devices/d1/modules/m1", token, json={"managedBy": f"x{LONE}"}
    )

    assert [created.status_code, updated.status_code, module.status_code] == [400] * 3
    assert http_error(registry.get_device, "d2").status_code == 404
    assert registry.get_modules("d1") == []
    assert registry.get_device("d1").as_dict() == device.as_dict()
    localhub.restart()
    assert localhub.registry_manager().get_device("d1").etag == device.etag
