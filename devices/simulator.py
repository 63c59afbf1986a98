"""A simulated module: an IoT Plug and Play style listener for one module's desired properties.

``python manage.py simulate_module DEVICE_ID MODULE_ID`` runs ``run()`` in its own process. It
connects with azure-iot-device's ``IoTHubModuleClient``, acknowledges every desired property
in its reported properties (``{"name": {"value": v, "ac": 200, "ad": "applied", "av": N}}``)
and hands each thing that happens to ``emit`` as an event from ``devices.events.make_event``:
``module.connected``, ``twin.desired_received``, ``twin.reported_sent``,
``module.disconnected``. ``emit`` prints a JSON line by default; any callable taking the event
dict will do.

Threads: the SDK calls the patch handler on a thread of its own, and connection changes on
another. Patches are handled there, under a lock; connection changes are only queued, and the
main loop turns them into events (reading the twin may block, which a handler must not).
"""

import json
import logging
import queue
import threading
from pathlib import Path

from azure.iot.device import IoTHubModuleClient
from azure.iot.device.exceptions import ClientError

from devices import hub
from devices.events import make_event

log = logging.getLogger(__name__)

# Seconds between reconnection attempts after the hub goes away (the SDK's default is 20).
RETRY_INTERVAL = 2
POLL_SECONDS = 0.2


class SimulatorError(Exception):
    """The simulator cannot start; the message says why, in one line."""


def print_event(event: dict) -> None:
    print(json.dumps(event), flush=True)


def module_client(
    device_id: str, module_id: str, connection_string: str = ""
) -> IoTHubModuleClient:
    """A client for the module, from ``connection_string`` or else from the module's primary
    key read through the hub; trusting the configured hub's CA file when there is one (the
    local hub's own certificate)."""
    ca_file = None
    try:
        ca_file = hub.config().ca_file
    except hub.HubNotConfigured:
        if not connection_string:
            raise
    if not connection_string:
        module = hub.get_module(device_id, module_id)
        key = module["authentication"]["symmetricKey"]["primaryKey"]
        connection_string = hub.device_connection_string(device_id, key, module_id)
    try:
        pem = Path(ca_file).read_text() if ca_file else None
    except OSError as e:
        raise SimulatorError(f"Cannot read the hub's CA file: {e}") from e
    try:
        return IoTHubModuleClient.create_from_connection_string(
            connection_string,
            server_verification_cert=pem,
            connection_retry=True,
            connection_retry_interval=RETRY_INTERVAL,
        )
    except ValueError as e:  # the SDK's connection string checks
        raise SimulatorError(f"Bad module connection string: {e}") from e


def acknowledgement(patch: dict) -> dict:
    """The reported patch acknowledging a desired patch as IoT Plug and Play writable
    properties do; a property removed from desired (null) is removed from reported too."""
    version = patch.get("$version")
    return {
        name: None if value is None else {"value": value, "ac": 200, "ad": "applied", "av": version}
        for name, value in patch.items()
        if not name.startswith("$")
    }


class Simulator:
    def __init__(self, client, device_id: str, module_id: str, emit=print_event):
        self.client, self.device_id, self.module_id = client, device_id, module_id
        self._emit = emit
        self._lock = threading.Lock()  # one patch at a time, and one line at a time
        self._acked_version = 0  # the newest desired $version acknowledged
        self._connected = False
        self._changes: queue.Queue[None] = queue.Queue()

    def emit(self, type_: str, version, patch) -> None:
        self._emit(make_event(type_, self.device_id, self.module_id, version, patch))

    def start(self) -> None:
        """Connect, then acknowledge the current desired properties, as a PnP device does at
        startup. The patch handler is set after connecting, so it only sees real patches; a
        patch racing the startup read is acknowledged once, by whichever comes first."""
        self.client.on_connection_state_change = lambda: self._changes.put(None)
        self.client.connect()
        self.client.on_twin_desired_properties_patch_received = self.desired_received
        self._now_connected()

    def _now_connected(self) -> None:
        twin = self.client.get_twin()
        with self._lock:
            self._connected = True
            self.emit("module.connected", twin["desired"].get("$version"), twin)
        # Patches sent while the hub or the connection was down never arrive as patches.
        self.desired_received(twin["desired"], startup=True)

    def desired_received(self, patch: dict, startup: bool = False) -> None:
        with self._lock:
            version = patch.get("$version")
            if version is not None and version <= self._acked_version:
                return  # already acknowledged (a patch racing a full read)
            self._acked_version = version or self._acked_version
            if not startup:
                self.emit("twin.desired_received", version, patch)
            reported = acknowledgement(patch)
            if not reported:
                return
            try:
                self.client.patch_twin_reported_properties(reported)
                # patch_twin_reported_properties does not return the new $version: read it.
                # Only this client writes these reported properties, and it holds the lock,
                # so the version read is the one this patch made.
                reported_version = self.client.get_twin()["reported"].get("$version")
            except ClientError as e:
                log.warning("Could not acknowledge desired $version %s: %s", version, e)
                self._acked_version = 0  # acknowledge again once reconnected
                return
            self.emit("twin.reported_sent", reported_version, reported)

    def poll(self, timeout: float = POLL_SECONDS) -> None:
        """Wait up to ``timeout`` for a connection change and turn it into an event."""
        try:
            self._changes.get(timeout=timeout)
        except queue.Empty:
            return
        connected = self.client.connected
        if connected == self._connected:
            return
        if connected:
            try:
                self._now_connected()
            except ClientError as e:  # dropped again at once: the next change retries
                log.warning("Reconnected but could not read the twin: %s", e)
        else:
            with self._lock:
                self._connected = False
                self.emit("module.disconnected", None, None)

    def stop(self) -> None:
        self.client.shutdown()
        with self._lock:
            if self._connected:
                self._connected = False
                self.emit("module.disconnected", None, None)


def run(device_id: str, module_id: str, stop: list, connection_string: str = "",
        emit=print_event) -> None:  # fmt: skip
    """Simulate the module until ``stop`` holds something (a signal handler appends to it:
    only an append, since setting a threading.Event from a signal handler can deadlock).
    Raises SimulatorError or hub.HubError when it cannot start."""
    client = module_client(device_id, module_id, connection_string)
    simulator = Simulator(client, device_id, module_id, emit)
    try:
        try:
            simulator.start()
        except ClientError as e:
            raise SimulatorError(f"The module cannot connect to the hub: {_reason(e)}") from e
        while not stop:
            simulator.poll()
    finally:
        simulator.stop()


def _reason(error: BaseException) -> str:
    """The innermost error's message, on one line."""
    while isinstance(error.__cause__, BaseException):
        error = error.__cause__
    return " ".join((str(error) or type(error).__name__).split())
