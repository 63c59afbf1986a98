"""What a write makes visible, and when: only what is on disk, in the order it got there.

The hub here runs on a real Store whose commits the test can hold at the door or fail as a
full disk fails them (``GatedStore``), so the moments between a write and its commit, and
a commit that never succeeds, can be looked at through the real APIs.
"""

import sqlite3
import threading

import pytest
from azure.iot.device.exceptions import ClientError
from azure.iot.hub.models import QuerySpecification, Twin
from conftest import HubThread, _free_loopback_address
from support import desired, http_error, primary_key, rest_request, service_token, wait_for

from localhub.store import Store


class GatedStore(Store):
    """A real store; ``hold()`` keeps the next commit waiting until ``release()``, and while
    ``full`` is set, commits fail with SQLite's disk-full error."""

    def __init__(self, path):
        super().__init__(path)
        self._open = threading.Event()
        self._open.set()
        self.held = threading.Event()  # a commit is waiting at the door
        self.full = False
        self.queued = 0  # writes handed to the store so far

    def hold(self) -> None:
        self.held.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def _enqueue(self, *args):
        self.queued += 1
        return super()._enqueue(*args)

    def _commit(self, batch):  # runs in the store's writer thread, not in the hub's loop
        if not self._open.is_set():
            self.held.set()
            self._open.wait(30)
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        super()._commit(batch)


@pytest.fixture
def localhub(tmp_path):
    running = HubThread(tmp_path / "hub", _free_loopback_address(), GatedStore).start()
    yield running
    running.hub.store.release()  # a failed test must not leave the writer waiting
    running.stop()


@pytest.fixture
def store(localhub) -> GatedStore:
    return localhub.hub.store


@pytest.fixture
def device_key(registry) -> str:
    return primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))


def in_thread(call, *args):
    """Start ``call(*args)``; ``.join()`` returns its result or raises what it raised."""
    outcome = {}

    def run():
        try:
            outcome["result"] = call(*args)
        except Exception as e:
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Pending:
        @staticmethod
        def join():
            thread.join(30)
            assert not thread.is_alive(), f"{call.__name__} did not return"
            if "error" in outcome:
                raise outcome["error"]
            return outcome["result"]

    return Pending()


def state(twin) -> dict:
    """What a write can change in a twin."""
    return {
        "etag": twin.etag,
        "version": twin.version,
        "tags": twin.tags or {},
        "desired": twin.properties.desired,
        "reported": twin.properties.reported,
    }


def held_write(store: GatedStore, call, *args):
    """Start a write and return once its commit is waiting at the door."""
    store.hold()
    pending = in_thread(call, *args)
    wait_for(store.held.is_set, timeout=10, what="the write's commit to start")
    return pending


# -- reads during a commit ------------------------------------------------------------------


def test_twin_reads_during_a_commit_show_the_state_before_it(
    localhub, registry, store, device_key, client_for
):
    client = client_for("d1", device_key)
    client.connect()
    client.get_twin()  # its subscriptions are stored now, not while the door is shut
    before = registry.get_twin("d1")

    write = held_write(store, registry.update_twin, "d1", desired({"x": 1}), before.etag)

    assert state(registry.get_twin("d1")) == state(before)
    assert [
        t.etag
        for t in registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices")).items
    ] == [before.etag]
    seen_by_device = client.get_twin()["desired"]
    assert "x" not in seen_by_device
    assert seen_by_device["$version"] == before.properties.desired["$version"]

    store.release()
    answered = write.join()
    after = registry.get_twin("d1")
    assert after.properties.desired["x"] == 1
    assert state(after) == state(answered)


def test_a_device_sees_its_reported_patch_only_once_it_is_stored(
    localhub, registry, store, device_key, client_for
):
    client = client_for("d1", device_key)
    client.connect()
    before = client.get_twin()["reported"]

    report = held_write(store, client.patch_twin_reported_properties, {"temp": 20})

    assert client.get_twin()["reported"] == before
    assert "temp" not in registry.get_twin("d1").properties.reported
    store.release()
    report.join()
    assert client.get_twin()["reported"]["temp"] == 20


def test_an_identity_change_is_not_seen_before_it_is_stored(localhub, registry, store, device_key):
    device = registry.get_device("d1")

    disable = held_write(
        store,
        registry.update_device_with_sas,
        "d1",
        device.etag,
        device_key,
        None,
        "disabled",
    )
    assert registry.get_device("d1").status == "enabled"
    assert registry.get_device("d1").etag == device.etag
    store.release()
    assert disable.join().status == "disabled"

    create = held_write(store, registry.create_device_with_sas, "d2", None, None, "enabled")
    assert http_error(registry.get_device, "d2").status_code == 404
    assert [d.device_id for d in registry.get_devices()] == ["d1"]
    assert registry.get_device_registry_statistics().total_device_count == 1
    store.release()
    assert create.join().device_id == "d2"
    assert registry.get_device("d2").status == "enabled"


# -- answers and If-Match while a commit is under way -----------------------------------------


def test_each_write_is_answered_with_the_state_it_committed(localhub, registry, store, device_key):
    before = registry.get_twin("d1")
    first = held_write(store, registry.update_twin, "d1", desired({"a": 1}), before.etag)

    # A write with the same etag comes second: it must see the first one.
    conflict = http_error(registry.update_twin, "d1", desired({"b": 2}), before.etag)
    assert conflict.status_code == 412
    queued = store.queued
    second = in_thread(registry.update_twin, "d1", desired({"c": 3}))
    wait_for(lambda: store.queued > queued, what="the second write to be queued")
    store.release()
    first, second = first.join(), second.join()

    version = before.properties.desired["$version"]
    assert first.properties.desired["$version"] == version + 1
    assert "c" not in first.properties.desired and first.properties.desired["a"] == 1
    assert first.version == before.version + 1
    assert second.properties.desired["$version"] == version + 2
    assert len({before.etag, first.etag, second.etag}) == 3
    assert state(registry.get_twin("d1")) == state(second)


# -- commits that fail ----------------------------------------------------------------------


def test_a_failed_commit_answers_an_error_and_changes_nothing(
    localhub, registry, store, device_key
):
    before = registry.get_twin("d1")
    store.full = True
    failed = http_error(registry.update_twin, "d1", desired({"x": 1}), before.etag)
    store.full = False

    assert failed.status_code == 500
    assert state(registry.get_twin("d1")) == state(before)
    # The etag the failed write was checked against is still the twin's.
    after = registry.update_twin("d1", Twin(tags={"t": 1}), before.etag)
    assert after.properties.desired == before.properties.desired
    assert after.version == before.version + 1

    localhub.restart()

    assert state(localhub.registry_manager().get_twin("d1")) == state(after)


def test_writes_queued_behind_a_failed_commit_fail_with_it(localhub, registry, store, device_key):
    before = registry.get_twin("d1")
    first = held_write(store, registry.update_twin, "d1", desired({"a": 1}), before.etag)
    queued = store.queued
    second = in_thread(registry.update_twin, "d1", desired({"b": 2}))  # built on the first
    wait_for(lambda: store.queued > queued, what="the second write to be queued")
    store.full = True
    store.release()

    for write in (first, second):
        with pytest.raises(Exception) as caught:
            write.join()
        assert caught.value.response.status_code == 500
    store.full = False
    assert state(registry.get_twin("d1")) == state(before)
    assert registry.update_twin("d1", desired({"c": 3})).version == before.version + 1


def test_a_reported_patch_that_fails_to_commit_is_refused_and_changes_nothing(
    localhub, registry, store, device_key, client_for
):
    client = client_for("d1", device_key)
    client.connect()
    client.patch_twin_reported_properties({"kept": 1})
    before = registry.get_twin("d1")

    store.full = True
    with pytest.raises(ClientError):
        client.patch_twin_reported_properties({"lost": 2})
    store.full = False

    assert state(registry.get_twin("d1")) == state(before)
    assert "lost" not in client.get_twin()["reported"]
    client.patch_twin_reported_properties({"next": 3})
    reported = registry.get_twin("d1").properties.reported
    assert reported["$version"] == before.properties.reported["$version"] + 1
    assert "lost" not in reported


def test_identity_writes_that_fail_to_commit_change_nothing(localhub, registry, store, device_key):
    device = registry.get_device("d1")
    token = service_token(localhub)
    body = {"deviceId": "d1", "status": "disabled", "authentication": {"type": "sas"}}
    if_match = {"If-Match": f'"{device.etag}"'}

    store.full = True
    created = rest_request(localhub, "PUT", "/devices/d2", token, json={"deviceId": "d2"})
    updated = rest_request(localhub, "PUT", "/devices/d1", token, json=body, headers=if_match)
    deleted = rest_request(localhub, "DELETE", "/devices/d1", token, headers=if_match)
    store.full = False

    assert [created.status_code, updated.status_code, deleted.status_code] == [500] * 3
    assert http_error(registry.get_device, "d2").status_code == 404
    after = registry.get_device("d1")
    assert (after.status, after.etag, primary_key(after)) == ("enabled", device.etag, device_key)
    assert registry.get_twin("d1").device_id == "d1"


# -- etags across a restart -----------------------------------------------------------------


def test_an_etag_seen_before_a_restart_is_not_given_to_other_content_after_it(
    localhub, registry, store, device_key
):
    first = registry.update_twin("d1", desired({"n": 1}))
    store.full = True
    http_error(registry.update_twin, "d1", desired({"n": 2}))
    store.full = False
    seen = {first.etag, registry.get_twin("d1").etag}

    localhub.restart()
    registry = localhub.registry_manager()

    assert registry.get_twin("d1").etag == first.etag  # unchanged content, unchanged etag
    after = registry.update_twin("d1", desired({"n": 3}))
    assert after.etag not in seen
    stale = http_error(registry.update_twin, "d1", desired({"n": 4}), first.etag)
    assert stale.status_code == 412
