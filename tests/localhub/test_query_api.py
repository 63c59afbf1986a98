"""The query API (POST /devices/query) through IoTHubRegistryManager.query_iot_hub:
WHERE clauses, FROM devices.modules, projections, paging and query errors."""

import json
from contextlib import contextmanager

import pytest
from azure.iot.hub.models import QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

FLEET = {
    # device id: (status, tags, desired)
    "d1": ("enabled", {"location": "lab", "x": 1}, {"x": 2}),
    "d2": ("disabled", {"location": "lab"}, {"x": 1}),
    "d3": ("enabled", {"location": "office", "x": 0}, {"x": 5}),
    "d4": ("enabled", {"location": "office", "floor": 2}, {}),
}


@pytest.fixture
def fleet(registry):
    """Four devices with tags and desired properties; primary keys by device id."""
    keys = {}
    for device_id, (status, tags, desired) in FLEET.items():
        device = registry.create_device_with_sas(device_id, None, None, status)
        keys[device_id] = device.authentication.symmetric_key.primary_key
        registry.update_twin(device_id, Twin(tags=tags, properties=TwinProperties(desired=desired)))
    return keys


def query(registry, text, continuation_token=None, max_item_count=None):
    return registry.query_iot_hub(
        QuerySpecification(query=text), continuation_token, max_item_count
    )


def device_ids(result):
    ids = [twin.device_id for twin in result.items]
    assert len(ids) == len(set(ids)), f"a device came back twice: {ids}"
    return set(ids)


def query_error(registry, text):
    with pytest.raises(HttpOperationError) as caught:
        query(registry, text)
    return caught.value


@contextmanager
def connected(localhub, device_id, key, module_id=""):
    client = localhub.device_client(device_id, key, module_id, connection_retry=False)
    try:
        client.connect()
        yield client
    finally:
        client.shutdown()


# -- SELECT * FROM devices WHERE ... -------------------------------------------------------


WHERE_CASES = {
    "tags": [
        ("tags.location = 'lab'", {"d1", "d2"}),
        ("tags.location != 'lab'", {"d3", "d4"}),
        ("tags.floor = 2", {"d4"}),
        ("tags.location = 'nowhere'", set()),
    ],
    "desired": [
        ("properties.desired.x > 1", {"d1", "d3"}),
        ("properties.desired.x >= 2", {"d1", "d3"}),
        ("properties.desired.x < 5", {"d1", "d2"}),
        ("properties.desired.x <= 1", {"d2"}),
        ("properties.desired.x = 5", {"d3"}),
    ],
    "identity fields": [
        ("status = 'disabled'", {"d2"}),
        ("status = 'enabled'", {"d1", "d3", "d4"}),
        ("connectionState = 'Disconnected'", {"d1", "d2", "d3", "d4"}),
        ("deviceId = 'd3'", {"d3"}),
    ],
    "IN and NIN": [
        ("deviceId IN ['d1', 'd3', 'missing']", {"d1", "d3"}),
        ("deviceId NIN ['d1', 'd3']", {"d2", "d4"}),
        ("tags.location IN ['office']", {"d3", "d4"}),
        ("properties.desired.x IN [1, 5]", {"d2", "d3"}),
    ],
    "is_defined": [
        ("is_defined(tags.x)", {"d1", "d3"}),
        ("is_defined(properties.desired.x)", {"d1", "d2", "d3"}),
        ("NOT is_defined(tags.x)", {"d2", "d4"}),
    ],
    "NOT, OR, AND": [
        ("NOT tags.location = 'lab'", {"d3", "d4"}),
        ("tags.location = 'lab' OR tags.floor = 2", {"d1", "d2", "d4"}),
        ("tags.location = 'office' AND properties.desired.x > 1", {"d3"}),
        (
            "tags.location = 'lab' AND (status = 'disabled' OR properties.desired.x = 2)",
            {"d1", "d2"},
        ),
        ("NOT (tags.location = 'lab' OR status = 'disabled')", {"d3", "d4"}),
    ],
}


@pytest.mark.parametrize("cases", WHERE_CASES.values(), ids=WHERE_CASES.keys())
def test_where_selects_the_matching_device_twins(registry, fleet, cases):
    for condition, expected in cases:
        result = query(registry, f"SELECT * FROM devices WHERE {condition}")

        assert device_ids(result) == expected, condition
        assert result.type == "twin"
        assert result.continuation_token is None


def test_select_star_returns_whole_twin_objects(registry, fleet):
    result = query(registry, "SELECT * FROM devices")

    assert device_ids(result) == set(FLEET)
    for twin in result.items:
        assert isinstance(twin, Twin)
        status, tags, desired = FLEET[twin.device_id]
        assert twin.module_id is None
        assert twin.status == status
        assert twin.tags == tags
        assert {k: v for k, v in twin.properties.desired.items() if k[0] != "$"} == desired
        assert twin.properties.desired["$version"] == 2
        assert twin.etag == registry.get_twin(twin.device_id).etag


def test_keywords_are_case_insensitive(registry, fleet):
    result = query(
        registry, "select * from devices where tags.location = 'lab' and not status = 'disabled'"
    )

    assert device_ids(result) == {"d1"}


def test_where_on_reported_properties_and_connection_state(localhub, registry, fleet):
    with (
        connected(localhub, "d1", fleet["d1"]) as d1,
        connected(localhub, "d3", fleet["d3"]) as d3,
    ):
        d1.patch_twin_reported_properties({"y": 5, "firmware": {"version": "1.2"}})
        d3.patch_twin_reported_properties({"y": 1})

        assert device_ids(
            query(registry, "SELECT * FROM devices WHERE properties.reported.y > 2")
        ) == {"d1"}
        assert device_ids(
            query(registry, "SELECT * FROM devices WHERE properties.reported.y = 1")
        ) == {"d3"}
        assert device_ids(
            query(registry, "SELECT * FROM devices WHERE is_defined(properties.reported.y)")
        ) == {"d1", "d3"}
        assert device_ids(
            query(
                registry,
                "SELECT * FROM devices WHERE properties.reported.firmware.version = '1.2'",
            )
        ) == {"d1"}
        assert device_ids(
            query(registry, "SELECT * FROM devices WHERE connectionState = 'Connected'")
        ) == {"d1", "d3"}


# -- FROM devices.modules ------------------------------------------------------------------


@pytest.fixture
def modules(registry, fleet):
    """m1 and m2 on d1, m1 on d3; module primary keys by (device id, module id)."""
    keys = {}
    for device_id, module_id in (("d1", "m1"), ("d1", "m2"), ("d3", "m1")):
        module = registry.create_module_with_sas(device_id, module_id, None, None, None)
        keys[device_id, module_id] = module.authentication.symmetric_key.primary_key
        registry.update_module_twin(
            device_id, module_id, Twin(tags={"role": f"{device_id}-{module_id}"})
        )
    return keys


def module_ids(result):
    ids = [(twin.device_id, twin.module_id) for twin in result.items]
    assert len(ids) == len(set(ids)), f"a module came back twice: {ids}"
    return set(ids)


def test_from_devices_modules_returns_module_twins(registry, modules):
    result = query(registry, "SELECT * FROM devices.modules")

    assert module_ids(result) == {("d1", "m1"), ("d1", "m2"), ("d3", "m1")}
    assert result.type == "twin"
    for twin in result.items:
        assert isinstance(twin, Twin)
        assert twin.tags == {"role": f"{twin.device_id}-{twin.module_id}"}


def test_from_devices_returns_no_module_twins(registry, modules):
    result = query(registry, "SELECT * FROM devices")

    assert [twin.module_id for twin in result.items] == [None] * len(FLEET)


def test_where_on_module_twins(registry, modules):
    for condition, expected in [
        ("moduleId = 'm1'", {("d1", "m1"), ("d3", "m1")}),
        ("moduleId = 'm1' AND deviceId = 'd3'", {("d3", "m1")}),
        ("deviceId = 'd1'", {("d1", "m1"), ("d1", "m2")}),
        ("tags.role = 'd1-m2'", {("d1", "m2")}),
        ("moduleId NIN ['m1']", {("d1", "m2")}),
    ]:
        result = query(registry, f"SELECT * FROM devices.modules WHERE {condition}")

        assert module_ids(result) == expected, condition


def test_where_on_reported_properties_a_module_client_set(localhub, registry, modules):
    with connected(localhub, "d3", modules["d3", "m1"], "m1") as client:
        client.patch_twin_reported_properties({"z": 1})

    result = query(registry, "SELECT * FROM devices.modules WHERE properties.reported.z = 1")

    assert module_ids(result) == {("d3", "m1")}
    assert query(registry, "SELECT * FROM devices WHERE properties.reported.z = 1").items == []


# -- projections ---------------------------------------------------------------------------


def test_a_projection_returns_only_the_selected_fields(registry, fleet):
    result = query(registry, "SELECT deviceId, tags.location FROM devices")

    assert device_ids(result) == set(FLEET)
    for twin in result.items:
        # The SDK puts a selected field that is not a Twin attribute in additional_properties.
        assert twin.additional_properties == {"location": FLEET[twin.device_id][1]["location"]}
        assert twin.tags is None
        assert twin.properties is None
        assert twin.etag is None


def test_a_projection_can_be_filtered_and_renamed(registry, fleet):
    result = query(
        registry,
        "SELECT deviceId, properties.desired.x AS wanted FROM devices WHERE tags.location = 'lab'",
    )

    assert {twin.device_id: twin.additional_properties for twin in result.items} == {
        "d1": {"wanted": 2},
        "d2": {"wanted": 1},
    }


def test_a_projected_field_a_twin_lacks_is_left_out(registry, fleet):
    result = query(registry, "SELECT deviceId, tags.floor FROM devices")

    assert {twin.device_id: twin.additional_properties for twin in result.items} == {
        "d1": {},
        "d2": {},
        "d3": {},
        "d4": {"floor": 2},
    }


def test_a_projected_twin_attribute_fills_that_attribute(registry, fleet):
    result = query(registry, "SELECT deviceId, tags, status FROM devices WHERE deviceId = 'd2'")

    [twin] = result.items
    assert twin.device_id == "d2"
    assert twin.tags == FLEET["d2"][1]
    assert twin.status == "disabled"
    assert twin.properties is None


def test_a_projection_of_module_twins_keeps_module_ids(registry, modules):
    result = query(registry, "SELECT deviceId, moduleId FROM devices.modules WHERE moduleId = 'm1'")

    assert module_ids(result) == {("d1", "m1"), ("d3", "m1")}
    assert all(twin.tags is None for twin in result.items)


# -- paging --------------------------------------------------------------------------------


def pages(registry, text, max_item_count):
    """Every page of a query, following continuation tokens (at most 20 pages)."""
    out, token = [], None
    for _ in range(20):
        result = query(registry, text, token, max_item_count)
        out.append(result)
        token = result.continuation_token
        if token is None:
            return out
    pytest.fail("the query kept returning continuation tokens")


@pytest.fixture
def many_devices(registry):
    ids = [f"dev{i:02d}" for i in range(25)]
    for i, device_id in enumerate(ids):
        registry.create_device_with_sas(device_id, None, None, "enabled")
        if i % 2 == 0:
            registry.update_twin(device_id, Twin(tags={"even": True}))
    return ids


def test_pages_follow_the_continuation_token_until_it_is_none(registry, many_devices):
    result = pages(registry, "SELECT * FROM devices", 10)

    assert [len(page.items) for page in result] == [10, 10, 5]
    assert [page.continuation_token is None for page in result] == [False, False, True]
    ids = [twin.device_id for page in result for twin in page.items]
    assert sorted(ids) == sorted(many_devices)
    # Without x-ms-max-item-count, 25 twins fit in one page.
    unpaged = query(registry, "SELECT * FROM devices")
    assert device_ids(unpaged) == set(many_devices)
    assert unpaged.continuation_token is None


def test_pages_of_a_filtered_query_hold_only_matches(registry, many_devices):
    result = pages(registry, "SELECT * FROM devices WHERE tags.even = true", 5)

    ids = [twin.device_id for page in result for twin in page.items]
    assert sorted(ids) == many_devices[::2]
    assert [len(page.items) for page in result] == [5, 5, 3]


def test_pages_of_a_projection_cover_every_device_once(registry, many_devices):
    result = pages(registry, "SELECT deviceId FROM devices", 10)

    ids = [twin.device_id for page in result for twin in page.items]
    assert sorted(ids) == many_devices


def test_top_limits_the_total_count_across_pages(registry, many_devices):
    result = pages(registry, "SELECT TOP 7 * FROM devices", 5)

    assert [len(page.items) for page in result] == [5, 2]
    assert result[-1].continuation_token is None
    ids = [twin.device_id for page in result for twin in page.items]
    assert len(set(ids)) == 7
    unpaged = query(registry, "SELECT TOP 3 * FROM devices")
    assert len(unpaged.items) == 3
    assert unpaged.continuation_token is None


# -- invalid queries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("SELEC * FROM devices", "SELEC"),
        ("SELECT * FROM things", "things"),
        ("SELECT * FROM devices WHERE", "end"),
        ("SELECT * FROM devices WHERE tags.a = 'open", "unterminated"),
        ("SELECT * devices", "devices"),
    ],
)
def test_an_invalid_query_is_400_with_a_readable_message(registry, text, mentions):
    error = query_error(registry, text)

    assert error.response.status_code == 400
    assert error.response.reason == "Bad Request"
    detail = json.loads(json.loads(error.response.text)["Message"])
    assert str(detail["errorCode"]).startswith("400")
    assert mentions in detail["message"]
