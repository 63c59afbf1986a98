"""Twins from the device side: GET, reported patches, and desired-patch notifications that
reach only the identity they belong to."""

import asyncio
import time

import pytest
from azure.iot.device.exceptions import ClientError
from azure.iot.hub.models import Twin, TwinProperties
from support import async_wait_for, create_identities, desired, wait_for

QUIET_PERIOD = 0.5  # how long a connection is watched to show that nothing reaches it


@pytest.fixture
def d1(registry):
    """Device d1 with modules m1 and m2: their primary keys by module id ('' for the device)."""
    return create_identities(registry, "d1", "m1", "m2")


# Twin GET


def test_the_device_reads_desired_and_reported_but_not_tags(registry, d1, client_for):
    registry.update_twin(
        "d1", Twin(tags={"site": "lab"}, properties=TwinProperties(desired={"x": 1}))
    )
    client = client_for("d1", d1[""])
    client.connect()

    twin = client.get_twin()

    assert set(twin) == {"desired", "reported"}
    assert twin["desired"]["x"] == 1
    assert twin["desired"]["$version"] == 2
    assert twin["reported"]["$version"] == 1
    assert "site" not in str(twin)


def test_a_module_reads_its_own_twin(registry, d1, client_for):
    registry.update_module_twin("d1", "m1", desired({"for_m1": True}))
    registry.update_module_twin("d1", "m2", desired({"for_m2": True}))
    registry.update_twin("d1", desired({"for_device": True}))
    client = client_for("d1", d1["m1"], "m1")
    client.connect()

    twin = client.get_twin()

    assert twin["desired"]["for_m1"] is True
    assert "for_m2" not in twin["desired"]
    assert "for_device" not in twin["desired"]


# Reported patches


def test_a_reported_patch_shows_in_the_service_twin_with_a_new_version(registry, d1, client_for):
    client = client_for("d1", d1[""])
    client.connect()
    before = registry.get_twin("d1").properties.reported

    client.patch_twin_reported_properties({"temperature": 21.5, "firmware": {"version": "1.2"}})

    reported = registry.get_twin("d1").properties.reported
    assert reported["temperature"] == 21.5
    assert reported["firmware"] == {"version": "1.2"}
    assert reported["$version"] == before["$version"] + 1
    metadata = reported["$metadata"]
    assert metadata["$lastUpdated"] > before["$metadata"]["$lastUpdated"]
    assert metadata["temperature"]["$lastUpdated"] == metadata["$lastUpdated"]
    assert metadata["firmware"]["$lastUpdated"] == metadata["$lastUpdated"]
    assert metadata["firmware"]["version"]["$lastUpdated"] == metadata["$lastUpdated"]

    client.patch_twin_reported_properties({"temperature": 22})

    again = registry.get_twin("d1").properties.reported
    assert again["temperature"] == 22
    assert again["firmware"] == {"version": "1.2"}
    assert again["$version"] == before["$version"] + 2
    assert client.get_twin()["reported"]["$version"] == again["$version"]


def test_a_module_reports_to_its_own_twin_only(registry, d1, client_for):
    client = client_for("d1", d1["m1"], "m1")
    client.connect()

    client.patch_twin_reported_properties({"state": "running"})

    assert registry.get_module_twin("d1", "m1").properties.reported["state"] == "running"
    assert "state" not in registry.get_module_twin("d1", "m2").properties.reported
    assert "state" not in registry.get_twin("d1").properties.reported


def test_null_in_a_reported_patch_deletes_the_property(registry, d1, client_for):
    client = client_for("d1", d1[""])
    client.connect()
    client.patch_twin_reported_properties({"keep": 1, "drop": 2, "nested": {"a": 1, "b": 2}})

    client.patch_twin_reported_properties({"drop": None, "nested": {"a": None}})

    reported = registry.get_twin("d1").properties.reported
    assert reported["keep"] == 1
    assert "drop" not in reported
    assert reported["nested"] == {"b": 2}
    assert reported["$version"] == 3


def _over_32_kb():
    # Strings may be at most 4 KB each, so the section limit is reached with several keys.
    return {f"chunk{i}": "x" * 4000 for i in range(9)}


@pytest.mark.parametrize(
    "patch",
    [
        {"bad$key": 1},
        {"$version": 7},
        {"bad.key": 1},
        {"outer": {"in.ner": 1}},
        {"bad key": 1},
        _over_32_kb(),
        [1, 2],
    ],
    ids=[
        "dollar-in-key",
        "version-key",
        "dot-in-key",
        "dot-in-nested-key",
        "space-in-key",
        "over-32-KB",
        "not-an-object",
    ],
)
def test_an_invalid_reported_patch_is_refused_and_changes_nothing(registry, d1, client_for, patch):
    client = client_for("d1", d1[""])
    client.connect()
    client.patch_twin_reported_properties({"good": 1})
    before = registry.get_twin("d1")

    with pytest.raises(ClientError):
        client.patch_twin_reported_properties(patch)

    after = registry.get_twin("d1")
    assert after.properties.reported == before.properties.reported
    assert after.etag == before.etag
    # The connection is still usable.
    client.patch_twin_reported_properties({"good": 2})
    reported = registry.get_twin("d1").properties.reported
    assert reported["good"] == 2
    assert reported["$version"] == before.properties.reported["$version"] + 1


def test_patches_that_together_pass_32_kb_are_refused(registry, d1, client_for):
    client = client_for("d1", d1[""])
    client.connect()
    client.patch_twin_reported_properties({f"a{i}": "x" * 4000 for i in range(5)})  # ~20 KB

    with pytest.raises(ClientError):
        client.patch_twin_reported_properties({f"b{i}": "x" * 4000 for i in range(5)})

    reported = registry.get_twin("d1").properties.reported
    assert "b0" not in reported
    assert reported["$version"] == 2


# Desired notifications


def test_a_module_desired_update_reaches_only_that_module(registry, d1, client_for):
    received = {"": [], "m1": [], "m2": []}
    for module_id, patches in received.items():
        client = client_for("d1", d1[module_id], module_id)
        client.connect()
        client.on_twin_desired_properties_patch_received = patches.append

    registry.update_module_twin("d1", "m1", desired({"interval": 30}))

    wait_for(lambda: received["m1"])
    time.sleep(QUIET_PERIOD)  # give a stray notification time to arrive
    assert received["m1"] == [{"interval": 30, "$version": 2}]
    assert received["m2"] == []
    assert received[""] == []


def test_a_device_desired_update_reaches_only_the_device(registry, d1, client_for):
    registry.create_device_with_sas("d2", None, None, "enabled")
    received = {"": [], "m1": []}
    for module_id, patches in received.items():
        client = client_for("d1", d1[module_id], module_id)
        client.connect()
        client.on_twin_desired_properties_patch_received = patches.append

    registry.update_twin("d1", desired({"mode": "eco"}))
    registry.update_twin("d2", desired({"mode": "other device"}))

    wait_for(lambda: received[""])
    time.sleep(QUIET_PERIOD)
    assert received[""] == [{"mode": "eco", "$version": 2}]
    assert received["m1"] == []


async def test_desired_updates_reach_only_their_own_asyncio_clients(registry, d1, aio_client_for):
    received = {"": [], "m1": [], "m2": []}
    for module_id, patches in received.items():
        client = aio_client_for("d1", d1[module_id], module_id)
        await client.connect()
        client.on_twin_desired_properties_patch_received = patches.append

    await asyncio.to_thread(registry.update_module_twin, "d1", "m2", desired({"level": 3}))
    await async_wait_for(lambda: received["m2"])
    await asyncio.to_thread(registry.update_twin, "d1", desired({"level": 7}))
    await async_wait_for(lambda: received[""])
    await asyncio.sleep(QUIET_PERIOD)

    assert received["m2"] == [{"level": 3, "$version": 2}]
    assert received[""] == [{"level": 7, "$version": 2}]
    assert received["m1"] == []


def test_a_handler_set_before_connecting_gets_the_full_desired_then_each_patch_in_order(
    registry, d1, client_for
):
    registry.update_twin("d1", desired({"a": 1, "b": {"c": 2}}))
    received = []
    client = client_for("d1", d1[""])

    client.on_twin_desired_properties_patch_received = received.append
    client.connect()

    # The SDK reads the twin after connecting and hands the whole desired section over.
    wait_for(lambda: received)
    first = received[0]
    assert first["a"] == 1
    assert first["b"] == {"c": 2}
    assert first["$version"] == 2

    for value in (10, 20, 30):
        registry.update_twin("d1", desired({"a": value}))
    wait_for(lambda: len(received) == 4)
    assert [patch["a"] for patch in received[1:]] == [10, 20, 30]
    assert [patch["$version"] for patch in received[1:]] == [3, 4, 5]
