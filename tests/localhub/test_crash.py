"""A hub killed with SIGKILL in the middle of concurrent writes loses nothing it told anyone.

Service clients race If-Match PATCHes (and unconditional ones) on one twin over raw REST
while a device reports over MQTT with its own key; the hub process is killed without
warning and started again. Whatever a client was answered or read before the kill must
hold after it: acknowledged content is there (or superseded by a later write), no
``version``/``$version`` went backwards, no etag from before the kill is accepted for
content it was not issued for, and the device is never sent a desired ``$version`` it had.
Before the kill, each write must be answered with the state it made (a version of its own).
"""

import contextlib
import threading

import requests
from azure.iot.device import IoTHubDeviceClient
from azure.iot.device.exceptions import ClientError
from support import API_VERSION, HubProcess, primary_key, service_token, wait_for

IF_MATCH_WRITERS, UNCONDITIONAL_WRITERS = 6, 2
ACKS_BEFORE_KILL = 30  # acknowledged service writes, then the kill
# A kill catches one moment, which may hold nothing in flight: the old code, which showed
# writes before storing them, was caught by about half of them, so look at several.
KILLS = 5
RECENT_ETAGS = 50  # the newest etags seen before the kill, each tried with If-Match after


def values(section: dict) -> dict:
    return {k: v for k, v in section.items() if not k.startswith("$")}


def content(doc: dict) -> tuple:
    """What a twin etag stands for: tags, properties and versions (not connection state)."""
    desired, reported = doc["properties"]["desired"], doc["properties"]["reported"]
    return (
        doc["version"],
        repr(doc.get("tags") or {}),
        desired["$version"],
        repr(values(desired)),
        reported["$version"],
        repr(values(reported)),
    )


class Seen:
    """Everything the hub answered before the kill, from every client thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.etags: dict[str, tuple] = {}  # etag -> the content it came with
        self.order: list[str] = []  # etags in the order first seen
        self.clashes: list[str] = []  # an etag seen with two contents
        self.version = self.desired_version = self.reported_version = 0
        self.acked: dict[str, int] = {}  # writer -> its newest acknowledged value
        self.acks = 0
        self.answered: dict[int, str] = {}  # twin version -> the write answered with it
        self.shared_answers: list[str] = []  # two writes answered with one twin version
        self.reported_acked = 0
        self.device_desired: dict[int, dict] = {}  # desired $version -> patch the device got
        self.errors: list[str] = []  # what a client thread met other than the kill
        self.acked_version = 0
        # Once armed, the first read that shows a write not yet answered (it may be still on
        # its way to disk: the moment a crash can lose most) calls kill.
        self.armed = threading.Event()
        self.killed = threading.Event()
        self.kill = lambda: None

    def twin(self, doc: dict) -> None:
        with self.lock:
            now = content(doc)
            etag = doc["etag"]
            if etag not in self.etags:
                self.etags[etag] = now
                self.order.append(etag)
            elif self.etags[etag] != now:
                self.clashes.append(f"{etag}: {self.etags[etag]} then {now}")
            self.version = max(self.version, doc["version"])
            self.desired_version = max(self.desired_version, now[2])
            self.reported_version = max(self.reported_version, now[4])

    def read(self, doc: dict) -> None:
        self.twin(doc)
        with self.lock:
            overtook = doc["version"] > self.acked_version
            if overtook and self.armed.is_set() and not self.killed.is_set():
                self.killed.set()
                self.kill()

    def ack(self, writer: str, value: int, doc: dict) -> None:
        self.twin(doc)
        with self.lock:
            # Each write is answered with what it committed, so with a version of its own.
            if doc["version"] in self.answered:
                self.shared_answers.append(f"{self.answered[doc['version']]}, {writer}={value}")
            self.answered[doc["version"]] = f"{writer}={value}"
            self.acked[writer] = value
            self.acks += 1
            self.acked_version = max(self.acked_version, doc["version"])


class Service:
    """Raw REST on one keep-alive session, as fast as the hub answers."""

    def __init__(self, hub: HubProcess):
        self.http = requests.Session()
        self.http.headers["Authorization"] = service_token(hub)
        self.url = f"https://{hub.host}:8443/twins/d1"
        # Per request: a session's own verify loses to REQUESTS_CA_BUNDLE.
        self.options = {
            "params": {"api-version": API_VERSION},
            "verify": str(hub.data_dir / "ca.pem"),
            "timeout": 10,
        }

    def get(self) -> dict:
        r = self.http.get(self.url, **self.options)
        r.raise_for_status()
        return r.json()

    def patch(self, desired: dict, etag: str | None = None) -> requests.Response:
        headers = {"If-Match": f'"{etag}"'} if etag else {}
        body = {"properties": {"desired": desired}}
        return self.http.patch(self.url, json=body, headers=headers, **self.options)


def write_until_killed(hub: HubProcess, seen: Seen, name: str, conditional: bool) -> None:
    service = Service(hub)
    value = 0
    try:
        while True:
            etag = None
            if conditional:
                current = service.get()
                seen.read(current)
                etag = current["etag"]
            value += 1
            answer = service.patch({name: value}, etag)
            if answer.status_code == 200:
                seen.ack(name, value, answer.json())
            elif answer.status_code != 412:
                answer.raise_for_status()
    except Exception as e:
        if not seen.killed.is_set():
            seen.errors.append(f"{name}: {e!r}")


def report_until_killed(client, seen: Seen) -> None:
    value = 0
    try:
        while True:
            value += 1
            client.patch_twin_reported_properties({"r": value})
            with seen.lock:
                seen.reported_acked = value
    except Exception as e:
        if not seen.killed.is_set():
            seen.errors.append(f"device: {e!r}")


def device_client(hub: HubProcess, key: str) -> IoTHubDeviceClient:
    return IoTHubDeviceClient.create_from_connection_string(
        f"HostName={hub.host};DeviceId=d1;SharedAccessKey={key}",
        server_verification_cert=(hub.data_dir / "ca.pem").read_text(),
        connection_retry=False,
    )


def run_until_killed(hub: HubProcess, key: str) -> Seen:
    """Race the writers and the device against the hub, then kill it; what they were told."""
    seen = Seen()
    seen.kill = hub.process.kill  # SIGKILL, from the thread that read
    device = device_client(hub, key)
    device.connect()
    device.on_twin_desired_properties_patch_received = lambda patch: seen.device_desired.setdefault(
        patch["$version"], patch
    )
    writers = [(f"w{i}", True) for i in range(IF_MATCH_WRITERS)]
    writers += [(f"u{i}", False) for i in range(UNCONDITIONAL_WRITERS)]
    threads = [
        threading.Thread(target=write_until_killed, args=(hub, seen, *writer), daemon=True)
        for writer in writers
    ]
    threads.append(threading.Thread(target=report_until_killed, args=(device, seen), daemon=True))
    try:
        for thread in threads:
            thread.start()
        wait_for(
            lambda: seen.errors or (seen.acks >= ACKS_BEFORE_KILL and seen.reported_acked >= 2),
            timeout=30,
            what="writes to be acknowledged",
        )
        assert seen.errors == []
        seen.armed.set()
        if not seen.killed.wait(10):  # no read overtook an answer: kill now, then
            with seen.lock:
                seen.killed.set()
                seen.kill()
        hub.kill()  # reaps it
        for thread in threads[:-1]:  # the device's may wait on the SDK; nothing can answer it
            thread.join(15)
        # The SDK's shutdown can hang if it races the SDK noticing the dropped connection.
        wait_for(lambda: not device.connected, timeout=10, what="the device to see the hub go")
    finally:
        with contextlib.suppress(ClientError):
            device.shutdown()
    assert seen.clashes == []
    assert seen.shared_answers == []
    return seen


def check_after_restart(hub: HubProcess, key: str, seen: Seen) -> None:
    with seen.lock:  # nothing can be answered any more, but be sure
        acked, reported_acked = dict(seen.acked), seen.reported_acked
        device_desired = dict(seen.device_desired)
    service = Service(hub)
    after = service.get()

    # Every acknowledged write is there, or a later write of the same writer is.
    desired, reported = after["properties"]["desired"], after["properties"]["reported"]
    for writer, value in acked.items():
        assert desired[writer] >= value, f"{writer}'s acknowledged {value} was lost"
    assert reported.get("r", 0) >= reported_acked
    # Nothing answered went backwards.
    assert after["version"] >= seen.version
    assert desired["$version"] >= seen.desired_version
    assert reported["$version"] >= seen.reported_version
    # The etag the twin has now, if it was seen before, came with the same content.
    if after["etag"] in seen.etags:
        assert seen.etags[after["etag"]] == content(after)
    # A new write's etag was never seen before, and no etag from before is accepted now.
    written = service.patch({"after": 1})
    assert written.status_code == 200
    assert written.json()["etag"] not in seen.etags
    for etag in seen.order[-RECENT_ETAGS:]:
        assert service.patch({"stale": etag}, etag).status_code == 412, etag
    # The device never gets a desired $version it had, with other content or not.
    device = device_client(hub, key)
    try:
        device.connect()
        received = []
        device.on_twin_desired_properties_patch_received = received.append
        assert device.get_twin()["desired"]["$version"] >= max(device_desired, default=0)
        last = service.patch({"last": 1}).json()["properties"]["desired"]["$version"]
        wait_for(lambda: any(p["$version"] == last for p in received), what="the last patch")
        assert not {p["$version"] for p in received} & set(device_desired)
    finally:
        device.shutdown()


def test_nothing_answered_before_a_kill_is_lost_or_contradicted_after_it(hub_process):
    hub_process.start()
    registry = hub_process.registry_manager()
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    for _ in range(KILLS):
        seen = run_until_killed(hub_process, key)
        hub_process.start()
        check_after_restart(hub_process, key, seen)
