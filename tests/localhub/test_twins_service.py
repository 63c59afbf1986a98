"""Device and module twins through the service SDK: read, PATCH, PUT, If-Match, limits,
errors, and the desired-property notifications a write sends to the connected device."""

import asyncio
import queue
from contextlib import contextmanager
from datetime import datetime

import pytest
from azure.iot.hub.models import Twin, TwinProperties
from support import (
    desired,
    doc_of_size,
    error_detail,
    http_error,
    nested,
    primary_key,
    rest_request,
    service_token,
)

FIRST_ETAG = "AAAAAAAAAAE="
MAX_INT = 2**52 - 1
MIN_INT = -(2**52)


class TwinTarget:
    """The twin of device d1, or of module m1 on d1, behind one set of calls."""

    def __init__(self, registry, device_id, module_id=None):
        self.registry = registry
        self.device_id = device_id
        self.module_id = module_id

    @property
    def path(self):
        base = f"/twins/{self.device_id}"
        return f"{base}/modules/{self.module_id}" if self.module_id else base

    def get(self):
        if self.module_id:
            return self.registry.get_module_twin(self.device_id, self.module_id)
        return self.registry.get_twin(self.device_id)

    def update(self, twin, etag=None):
        if self.module_id:
            return self.registry.update_module_twin(self.device_id, self.module_id, twin, etag)
        return self.registry.update_twin(self.device_id, twin, etag)

    def replace(self, twin, etag=None):
        if self.module_id:
            return self.registry.replace_module_twin(self.device_id, self.module_id, twin, etag)
        return self.registry.replace_twin(self.device_id, twin, etag)

    def write(self, how, twin, etag=None):
        return self.update(twin, etag) if how == "update" else self.replace(twin, etag)


@pytest.fixture(params=["device", "module"])
def target(request, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    if request.param == "module":
        registry.create_module_with_sas("d1", "m1", None, None, None)
        return TwinTarget(registry, "d1", "m1")
    return TwinTarget(registry, "d1")


def tags(values):
    return Twin(tags=values)


def values(section):
    """A desired or reported section without its `$version` and `$metadata`."""
    return {k: v for k, v in section.items() if not k.startswith("$")}


def state(twin):
    """What a write must leave alone when it is refused."""
    return (
        twin.etag,
        twin.version,
        twin.tags,
        twin.properties.desired,
        twin.properties.reported,
    )


def is_timestamp(text):
    return isinstance(text, str) and text.endswith("Z") and datetime.fromisoformat(text)


def next_patch(patches, timeout=10):
    try:
        return patches.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no desired-property patch arrived within {timeout} s")


# -- a fresh twin -------------------------------------------------------------------------


def test_a_fresh_twin_has_the_first_etag_and_version_one_sections(target):
    twin = target.get()

    assert twin.device_id == "d1"
    assert twin.module_id == target.module_id
    assert twin.etag == FIRST_ETAG
    assert isinstance(twin.version, int) and twin.version >= 1
    assert twin.tags in ({}, None)
    assert twin.status == "enabled"
    assert twin.connection_state == "Disconnected"
    assert twin.authentication_type == "sas"
    desired_section, reported_section = twin.properties.desired, twin.properties.reported
    assert values(desired_section) == {} and values(reported_section) == {}
    assert desired_section["$version"] == 1
    assert reported_section["$version"] == 1
    assert is_timestamp(desired_section["$metadata"]["$lastUpdated"])
    assert desired_section["$metadata"]["$lastUpdatedVersion"] == 1
    assert is_timestamp(reported_section["$metadata"]["$lastUpdated"])


# -- PATCH --------------------------------------------------------------------------------


def test_patch_merges_tags_and_desired_and_nested_objects(target):
    target.update(
        Twin(
            tags={"location": {"building": "b1"}, "owner": "ann"},
            properties=TwinProperties(desired={"config": {"rate": 5}, "mode": "slow"}),
        )
    )

    twin = target.update(
        Twin(
            tags={"location": {"floor": 2}},
            properties=TwinProperties(desired={"config": {"unit": "s"}, "level": 3}),
        )
    )

    assert twin.tags == {"location": {"building": "b1", "floor": 2}, "owner": "ann"}
    assert values(twin.properties.desired) == {
        "config": {"rate": 5, "unit": "s"},
        "mode": "slow",
        "level": 3,
    }
    assert target.get().tags == twin.tags


def test_patch_with_null_deletes_the_key_and_its_metadata(target):
    target.update(
        Twin(
            tags={"keep": 1, "gone": 2, "inner": {"a": 1, "b": 2}},
            properties=TwinProperties(desired={"keep": 1, "gone": 2, "inner": {"a": 1, "b": 2}}),
        )
    )

    twin = target.update(
        Twin(
            tags={"gone": None, "inner": {"b": None}},
            properties=TwinProperties(desired={"gone": None, "inner": {"b": None}}),
        )
    )

    assert twin.tags == {"keep": 1, "inner": {"a": 1}}
    section = twin.properties.desired
    assert values(section) == {"keep": 1, "inner": {"a": 1}}
    assert "gone" not in section["$metadata"]
    assert "b" not in section["$metadata"]["inner"]
    assert "a" in section["$metadata"]["inner"]


def test_patch_with_null_for_a_missing_key_is_accepted(target):
    twin = target.update(desired({"never-set": None}))

    assert values(twin.properties.desired) == {}


def test_every_write_changes_the_etag_and_raises_version_and_desired_version(target):
    first = target.get()
    seen_etags = [first.etag]
    versions = [first.version]
    desired_versions = [first.properties.desired["$version"]]

    for i in range(3):
        twin = target.update(desired({"n": i}))
        seen_etags.append(twin.etag)
        versions.append(twin.version)
        desired_versions.append(twin.properties.desired["$version"])

    assert len(set(seen_etags)) == 4
    assert versions == sorted(set(versions))
    assert desired_versions == [1, 2, 3, 4]


def test_a_tags_only_write_changes_the_etag_but_not_the_desired_version(target):
    before = target.get()

    twin = target.update(tags({"location": "lab"}))

    assert twin.etag != before.etag
    assert twin.version > before.version
    assert twin.properties.desired["$version"] == before.properties.desired["$version"]


def test_metadata_has_last_updated_at_every_level_and_the_version_that_wrote_each_key(target):
    first = target.update(desired({"config": {"rate": 5, "deep": {"x": 1}}, "mode": "slow"}))
    v1 = first.properties.desired["$version"]
    first_meta = first.properties.desired["$metadata"]

    twin = target.update(desired({"config": {"unit": "s"}}))
    v2 = twin.properties.desired["$version"]
    meta = twin.properties.desired["$metadata"]

    assert v2 == v1 + 1
    for node in (
        meta,
        meta["config"],
        meta["config"]["rate"],
        meta["config"]["unit"],
        meta["config"]["deep"],
        meta["config"]["deep"]["x"],
        meta["mode"],
    ):
        assert is_timestamp(node["$lastUpdated"])
    assert meta["$lastUpdatedVersion"] == v2
    assert meta["config"]["$lastUpdatedVersion"] == v2
    assert meta["config"]["unit"]["$lastUpdatedVersion"] == v2
    assert meta["config"]["rate"]["$lastUpdatedVersion"] == v1
    assert meta["config"]["deep"]["$lastUpdatedVersion"] == v1
    assert meta["config"]["deep"]["x"]["$lastUpdatedVersion"] == v1
    assert meta["mode"]["$lastUpdatedVersion"] == v1
    # Keys the second write did not touch keep their first timestamp.
    assert meta["mode"]["$lastUpdated"] == first_meta["mode"]["$lastUpdated"]
    assert meta["config"]["rate"]["$lastUpdated"] == first_meta["config"]["rate"]["$lastUpdated"]


# -- PUT ----------------------------------------------------------------------------------


def test_replace_swaps_all_of_desired_and_all_of_tags(target):
    target.update(
        Twin(
            tags={"old": 1, "shared": {"a": 1, "b": 2}},
            properties=TwinProperties(desired={"old": 1, "shared": {"a": 1, "b": 2}}),
        )
    )

    twin = target.replace(
        Twin(
            tags={"new": 2, "shared": {"c": 3}},
            properties=TwinProperties(desired={"new": 2, "shared": {"c": 3}}),
        )
    )

    assert twin.tags == {"new": 2, "shared": {"c": 3}}
    assert values(twin.properties.desired) == {"new": 2, "shared": {"c": 3}}
    assert target.get().tags == {"new": 2, "shared": {"c": 3}}


def test_replace_raises_desired_version_and_drops_metadata_of_removed_keys(target):
    before = target.update(desired({"old": 1, "kept": {"a": 1}}))

    twin = target.replace(desired({"kept": {"b": 2}}))

    section = twin.properties.desired
    assert section["$version"] == before.properties.desired["$version"] + 1
    assert twin.etag != before.etag
    assert twin.version > before.version
    assert "old" not in section["$metadata"]
    assert "a" not in section["$metadata"]["kept"]
    assert section["$metadata"]["kept"]["b"]["$lastUpdatedVersion"] == section["$version"]
    assert section["$metadata"]["$lastUpdatedVersion"] == section["$version"]


# -- If-Match -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["update", "replace"])
def test_write_with_the_current_etag_succeeds(target, how):
    current = target.update(desired({"a": 1}))

    twin = target.write(how, desired({"a": 2}), current.etag)

    assert values(twin.properties.desired) == {"a": 2}
    assert twin.etag != current.etag


@pytest.mark.parametrize("how", ["update", "replace"])
def test_write_with_a_stale_etag_fails_412_and_leaves_the_twin_unchanged(target, how):
    stale = target.get().etag
    target.update(Twin(tags={"t": 1}, properties=TwinProperties(desired={"a": 1})))
    before = target.get()

    response = http_error(
        target.write, how, Twin(tags={"t": 2}, properties=TwinProperties(desired={"a": 2})), stale
    )

    assert response.status_code == 412
    assert response.reason == "Precondition Failed"
    assert error_detail(response)["errorCode"] == 412001
    assert state(target.get()) == state(before)


@pytest.mark.parametrize("how", ["update", "replace"])
def test_write_without_an_etag_is_unconditional(target, how):
    target.update(desired({"a": 1}))
    target.update(desired({"a": 2}))

    twin = target.write(how, desired({"a": 3}), None)

    assert values(twin.properties.desired) == {"a": 3}


# -- a twin read, changed and sent back --------------------------------------------------


def test_a_twin_read_modified_and_passed_to_update_is_accepted(target):
    target.update(Twin(tags={"t": 1}, properties=TwinProperties(desired={"a": 1})))
    twin = target.get()
    twin.tags["t"] = 2
    twin.properties.desired["a"] = 2
    twin.properties.desired["b"] = {"c": 3}

    updated = target.update(twin, twin.etag)

    assert updated.tags == {"t": 2}
    assert values(updated.properties.desired) == {"a": 2, "b": {"c": 3}}
    assert updated.properties.desired["$version"] == twin.properties.desired["$version"] + 1


def test_a_twin_read_modified_and_passed_to_replace_is_accepted(target):
    target.update(Twin(tags={"t": 1, "u": 1}, properties=TwinProperties(desired={"a": 1, "b": 1})))
    twin = target.get()
    del twin.tags["u"]
    del twin.properties.desired["b"]
    twin.properties.desired["a"] = 2

    replaced = target.replace(twin, twin.etag)

    assert replaced.tags == {"t": 1}
    assert values(replaced.properties.desired) == {"a": 2}
    assert replaced.properties.desired["$version"] == twin.properties.desired["$version"] + 1


@contextmanager
def connected_client(localhub, registry, target, on_desired_patch=None):
    """A sync device or module client for `target`'s identity, connected, shut down after.

    `on_desired_patch` is set before connecting, so the SDK first passes it the whole desired
    document it fetches right after the connection is up.
    """
    if target.module_id:
        key = primary_key(registry.get_module("d1", target.module_id))
    else:
        key = primary_key(registry.get_device("d1"))
    client = localhub.device_client("d1", key, target.module_id or "", connection_retry=False)
    try:
        if on_desired_patch is not None:
            client.on_twin_desired_properties_patch_received = on_desired_patch
        client.connect()
        yield client
    finally:
        client.shutdown()


@pytest.mark.parametrize("how", ["update", "replace"])
def test_a_service_write_does_not_change_reported_properties(localhub, registry, target, how):
    with connected_client(localhub, registry, target) as client:
        client.patch_twin_reported_properties({"temperature": 21})
    before = target.get()
    twin = target.get()
    twin.properties.reported["temperature"] = 99
    twin.properties.reported["invented"] = True
    twin.properties.desired["a"] = 1

    written = target.write(how, twin, twin.etag)

    assert written.properties.reported == before.properties.reported
    assert values(target.get().properties.reported) == {"temperature": 21}
    assert values(written.properties.desired) == {"a": 1}


# -- limits -------------------------------------------------------------------------------


BAD_TWINS = {
    "desired key with a dot": desired({"a.b": 1}),
    "desired key with a dollar": desired({"cost$": 1}),
    "desired key with a space": desired({"a b": 1}),
    "desired key with a control character": desired({"a\tb": 1}),
    "desired key over 1 KB": desired({"k" * 1025: 1}),
    "nested desired key with a dollar": desired({"outer": {"$inner": 1}}),
    "tags key with a dot": tags({"a.b": 1}),
    "tags key with a dollar": tags({"$t": 1}),
    "tags key with a space": tags({"a b": 1}),
    "desired 11 nested objects deep": desired(nested(11)),
    "tags 11 nested objects deep": tags(nested(11)),
    "desired over 32 KB": desired(doc_of_size(32 * 1024 + 1)),
    "tags over 8 KB": tags(doc_of_size(8 * 1024 + 1)),
    "integer 2**52": desired({"n": 2**52}),
    "integer below -(2**52)": desired({"n": MIN_INT - 1}),
    "integer 2**52 in tags": tags({"n": 2**52}),
    "string over 4 KB": desired({"s": "x" * 4097}),
    "string over 4 KB in tags": tags({"s": "x" * 4097}),
    "NaN, which is not JSON": desired({"n": float("nan")}),
}


@pytest.mark.parametrize("bad", BAD_TWINS.values(), ids=BAD_TWINS.keys())
def test_a_write_breaking_a_twin_limit_fails_400_and_changes_nothing(target, bad):
    target.update(Twin(tags={"t": 1}, properties=TwinProperties(desired={"a": 1})))
    before = target.get()

    for how in ("update", "replace"):
        response = http_error(target.write, how, bad)

        assert response.status_code == 400, how
        assert response.reason == "Bad Request"
        assert error_detail(response)["errorCode"] == 400004
        assert state(target.get()) == state(before)


GOOD_TWINS = {
    "desired 10 nested objects deep": desired(nested(10)),
    "tags 10 nested objects deep": tags(nested(10)),
    "desired of exactly 32 KB": desired(doc_of_size(32 * 1024)),
    "tags of exactly 8 KB": tags(doc_of_size(8 * 1024)),
    "largest integer": desired({"n": MAX_INT}),
    "smallest integer": desired({"n": MIN_INT}),
    "string of exactly 4 KB": desired({"s": "x" * 4096}),
    "key of exactly 1 KB": desired({"k" * 1024: 1}),
    "arrays and every value type": desired({"list": [1, "two", 3.5, True, {"k": "v"}]}),
}


@pytest.mark.parametrize("good", GOOD_TWINS.values(), ids=GOOD_TWINS.keys())
def test_a_write_at_a_twin_limit_is_accepted(target, good):
    twin = target.update(good)

    if good.tags is not None:
        assert twin.tags == good.tags
    else:
        assert values(twin.properties.desired) == good.properties.desired


def test_the_desired_size_limit_counts_the_merged_document(target):
    target.update(desired(doc_of_size(20_000)))
    before = target.get()
    more = {f"more{k}": v for k, v in doc_of_size(20_000).items()}

    response = http_error(target.update, desired(more))

    assert response.status_code == 400
    assert state(target.get()) == state(before)


def test_the_tags_size_limit_counts_the_merged_document(target):
    target.update(tags(doc_of_size(5_000)))
    before = target.get()
    more = {f"more{k}": v for k, v in doc_of_size(5_000).items()}

    response = http_error(target.update, tags(more))

    assert response.status_code == 400
    assert state(target.get()) == state(before)


# -- unknown identities and bad requests --------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda rm: rm.get_twin("ghost"),
        lambda rm: rm.update_twin("ghost", desired({"a": 1})),
        lambda rm: rm.replace_twin("ghost", desired({"a": 1})),
        lambda rm: rm.get_module_twin("ghost", "m1"),
        lambda rm: rm.update_module_twin("ghost", "m1", desired({"a": 1})),
        lambda rm: rm.replace_module_twin("ghost", "m1", desired({"a": 1})),
    ],
    ids=["get", "update", "replace", "get module", "update module", "replace module"],
)
def test_twin_of_an_unknown_device_is_404_device_not_found(registry, call):
    response = http_error(call, registry)

    assert response.status_code == 404
    assert response.reason == "Not Found"
    assert error_detail(response)["errorCode"] == 404001


@pytest.mark.parametrize(
    "call",
    [
        lambda rm: rm.get_module_twin("d1", "ghost"),
        lambda rm: rm.update_module_twin("d1", "ghost", desired({"a": 1})),
        lambda rm: rm.replace_module_twin("d1", "ghost", desired({"a": 1})),
    ],
    ids=["get", "update", "replace"],
)
def test_twin_of_an_unknown_module_is_404_module_not_found(registry, call):
    registry.create_device_with_sas("d1", None, None, "enabled")

    response = http_error(call, registry)

    assert response.status_code == 404
    assert error_detail(response)["errorCode"] == 404010


@pytest.mark.parametrize(
    "body",
    [b'{"tags": {"a": 1}', b"not json", b'["a list"]', b'{"tags": "a string"}'],
    ids=["truncated", "not json", "a list", "tags not an object"],
)
def test_a_twin_write_with_a_bad_body_is_400_and_changes_nothing(localhub, target, body):
    before = target.get()

    for method in ("PATCH", "PUT"):
        response = rest_request(
            localhub,
            method,
            target.path,
            service_token(localhub),
            data=body,
            headers={"Content-Type": "application/json; charset=utf-8", "If-Match": '"*"'},
        )

        assert response.status_code == 400, method
        assert error_detail(response)["errorCode"] == 400004
        assert state(target.get()) == state(before)


# -- desired-property notifications -------------------------------------------------------


def test_update_module_twin_notifies_the_connected_module(localhub, registry):
    registry.create_device_with_sas("myFirstDevice", None, None, "enabled")
    module = registry.create_module_with_sas("myFirstDevice", "myFirstModule", None, None, None)
    client = localhub.device_client(
        "myFirstDevice", primary_key(module), "myFirstModule", connection_retry=False
    )
    patches = queue.Queue()
    try:
        client.on_twin_desired_properties_patch_received = patches.put
        client.connect()
        # The SDK first passes on the whole desired document it fetched after connecting.
        assert next_patch(patches)["$version"] == 1
        current = registry.get_module_twin("myFirstDevice", "myFirstModule")

        twin = registry.update_module_twin(
            "myFirstDevice", "myFirstModule", desired({"telemetryInterval": 122}), current.etag
        )

        assert next_patch(patches) == {
            "telemetryInterval": 122,
            "$version": twin.properties.desired["$version"],
        }
    finally:
        client.shutdown()


async def test_replace_twin_sends_the_device_new_values_and_nulls_for_removed_keys(
    localhub, registry
):
    device = registry.create_device_with_sas("d1", None, None, "enabled")
    registry.update_twin("d1", desired({"old": 1, "kept": 1}))
    client = localhub.device_client("d1", primary_key(device), aio=True, connection_retry=False)
    loop = asyncio.get_running_loop()
    patches = asyncio.Queue()

    def received(patch):  # runs on the SDK's own loop
        loop.call_soon_threadsafe(patches.put_nowait, patch)

    try:
        client.on_twin_desired_properties_patch_received = received
        await client.connect()
        synthetic = await asyncio.wait_for(patches.get(), 10)
        assert values(synthetic) == {"old": 1, "kept": 1}

        twin = await asyncio.to_thread(
            registry.replace_twin, "d1", desired({"kept": 2, "new": {"x": 1}})
        )

        patch = await asyncio.wait_for(patches.get(), 10)
        assert patch == {
            "old": None,
            "kept": 2,
            "new": {"x": 1},
            "$version": twin.properties.desired["$version"],
        }
        device_twin = await client.get_twin()
        assert values(device_twin["desired"]) == {"kept": 2, "new": {"x": 1}}
    finally:
        await client.shutdown()


def test_a_patch_that_deletes_a_key_reaches_the_device_as_null(localhub, registry, target):
    target.update(desired({"gone": 1, "kept": 1}))
    patches = queue.Queue()
    with connected_client(localhub, registry, target, patches.put):
        assert values(next_patch(patches)) == {"gone": 1, "kept": 1}

        twin = target.update(desired({"gone": None}))

        assert next_patch(patches) == {
            "gone": None,
            "$version": twin.properties.desired["$version"],
        }


def test_a_desired_change_reaches_only_the_connection_of_its_own_twin(localhub, registry):
    device = registry.create_device_with_sas("d1", None, None, "enabled")
    clients, patches = {}, {}
    try:
        for module_id in ("", "m1", "m2"):
            if module_id:
                module = registry.create_module_with_sas("d1", module_id, None, None, None)
                key = primary_key(module)
            else:
                key = primary_key(device)
            client = localhub.device_client("d1", key, module_id, connection_retry=False)
            clients[module_id] = client
            patches[module_id] = queue.Queue()
            client.on_twin_desired_properties_patch_received = patches[module_id].put
            client.connect()
            assert next_patch(patches[module_id])["$version"] == 1

        registry.update_module_twin("d1", "m1", desired({"who": "m1"}))
        registry.update_module_twin("d1", "m2", desired({"who": "m2"}))
        registry.update_twin("d1", desired({"who": "device"}))

        # Each connection's first patch is its own: nothing of the others' arrived before it.
        assert next_patch(patches["m1"])["who"] == "m1"
        assert next_patch(patches["m2"])["who"] == "m2"
        assert next_patch(patches[""])["who"] == "device"
        assert all(q.empty() for q in patches.values())
    finally:
        for client in clients.values():
            client.shutdown()
