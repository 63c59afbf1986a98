"""Plain helpers shared by the test files: ``from support import ...`` (tests/ is on sys.path).

Fixtures live in conftest.py; what is here is called directly, so one copy serves every file.
"""

import asyncio
import base64
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin, TwinProperties
from azure.iot.hub.sastoken import SasToken
from msrest.exceptions import HttpOperationError

REPO = Path(__file__).resolve().parents[1]
API_VERSION = "2021-04-12"


# -- waiting with a deadline instead of sleeping -------------------------------------------


def wait_for(predicate, timeout: float = 5.0, what: str = "condition", interval: float = 0.05):
    """Poll ``predicate`` until it returns something truthy, and return that; fail the test
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return value


async def async_wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    """``wait_for`` for asyncio tests: polls without blocking the loop the SDK clients run on."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


# -- identities and twins ------------------------------------------------------------------


def primary_key(identity) -> str:
    return identity.authentication.symmetric_key.primary_key


def new_key(size: int = 32) -> str:
    """A random base64 key (32 bytes is what IoT Hub generates)."""
    return base64.b64encode(os.urandom(size)).decode()


def create_identities(registry, device_id: str, *module_ids: str) -> dict[str, str]:
    """An enabled device and modules on it: their primary keys by module id ('' for the device)."""
    keys = {"": primary_key(registry.create_device_with_sas(device_id, None, None, "enabled"))}
    for module_id in module_ids:
        module = registry.create_module_with_sas(device_id, module_id, None, None, None)
        keys[module_id] = primary_key(module)
    return keys


def desired(values: dict) -> Twin:
    """A twin patch that sets only desired properties."""
    return Twin(properties=TwinProperties(desired=values))


def nested(levels: int, leaf="value") -> dict:
    """`levels` nested objects below the root: {"k1": {"k2": ... {"property": leaf}}}."""
    doc = {"property": leaf}
    for i in range(levels, 0, -1):
        doc = {f"k{i}": doc}
    return doc


def doc_of_size(size: int) -> dict:
    """A section whose size, as IoT Hub counts it (key bytes + string bytes), is `size`; in
    strings of at most 4000 bytes."""
    doc = {}
    i = 0
    while size > 0:
        key = f"k{i:03d}"
        chunk = min(size - len(key), 4000)
        assert chunk >= 0
        doc[key] = "x" * chunk
        size -= len(key) + chunk
        i += 1
    return doc


# -- the service API: SDK errors, tokens, requests the SDK cannot make ---------------------


def http_error(call, *args, **kwargs) -> requests.Response:
    """The response of an SDK call that must fail with an HTTP error status."""
    with pytest.raises(HttpOperationError) as caught:
        call(*args, **kwargs)
    return caught.value.response


def error_detail(response) -> dict:
    """The error the hub nests, as JSON text, inside the body's "Message" string."""
    return json.loads(response.json()["Message"])


def connection_string_fields(text: str) -> dict:
    return dict(part.split("=", 1) for part in text.split(";"))


def owner_key(localhub) -> str:
    return connection_string_fields(localhub.connection_string)["SharedAccessKey"]


def service_token(localhub, key: str | None = None, policy: str = "iothubowner") -> str:
    """A service token exactly as azure-iot-hub builds one; the owner's unless told otherwise."""
    return str(SasToken(f"{localhub.host}:8443", key or owner_key(localhub), policy))


def rest_request(
    localhub, method: str, path: str, authorization: str | None, **kwargs
) -> requests.Response:
    """A request the SDK cannot make (a bad body, a hand-encoded path, a hand-made token).

    ``authorization=None`` sends no Authorization header at all; ``headers`` add to it.
    """
    headers = {} if authorization is None else {"Authorization": authorization}
    return requests.request(
        method,
        f"https://{localhub.host}:8443{path}",
        params={"api-version": API_VERSION},
        headers={**headers, **kwargs.pop("headers", {})},
        verify=localhub.ca_file,
        timeout=10,
        **kwargs,
    )


def registry_manager_for(
    data_dir: Path, connection_string: str | None = None
) -> IoTHubRegistryManager:
    """A registry manager for the hub whose files are in ``data_dir``, trusting that hub's CA;
    by default with the owner connection string the hub wrote there."""
    rm = IoTHubRegistryManager.from_connection_string(
        connection_string or (data_dir / "connection-string").read_text().strip()
    )
    rm.protocol.config.connection.verify = str(data_dir / "ca.pem")
    return rm


# -- the hub as a separate process ---------------------------------------------------------


class LocalhubProcess:
    """``python -m localhub`` run from the repository root, as a user runs it, on its own host.

    A subprocess rather than the in-process ``localhub`` fixture, for what only a process shows:
    signals, exit codes, output, a kill without warning.
    """

    def __init__(self, data_dir: Path, host: str):
        self.data_dir, self.host = data_dir, host
        self.process: subprocess.Popen | None = None

    def spawn(self, **popen_options) -> subprocess.Popen:
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "localhub", "--data-dir", str(self.data_dir)),
                *("--host", self.host, "--https-port", "8443"),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            **popen_options,
        )
        return self.process

    @property
    def connection_string(self) -> str:
        return (self.data_dir / "connection-string").read_text().strip()

    def registry_manager(self, connection_string: str | None = None) -> IoTHubRegistryManager:
        return registry_manager_for(self.data_dir, connection_string)

    def kill(self) -> None:
        """SIGKILL, if it is still running: the hub gets no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class HubProcess(LocalhubProcess):
    """``python -m localhub`` in a subprocess, so it can be killed with SIGKILL."""

    def start(self) -> "HubProcess":
        (self.data_dir / "connection-string").unlink(missing_ok=True)
        self.spawn(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ready, timeout=30, what="the hub process to start")
        return self

    def ready(self) -> bool:
        assert self.process.poll() is None, "the hub process exited"
        path = self.data_dir / "connection-string"
        if not path.exists() or not re.match(r"HostName=.*SharedAccessKey=", path.read_text()):
            return False
        try:
            self.registry_manager().get_device_registry_statistics()
        except Exception:
            return False
        return True


class Lines:
    """The lines a process writes to a pipe, read in a thread so a test can wait with a deadline."""

    def __init__(self, pipe):
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe):
        with pipe:
            for line in pipe:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, prefix: str, timeout: float = 20) -> str:
        """The next line starting with ``prefix``; fails at the deadline or at end of output."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"output ended without {prefix!r}: {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        pytest.fail(f"no {prefix!r} within {timeout} s: {self.seen}")

    def all(self, timeout: float = 10) -> list[str]:
        """Every line, once the process has closed its output."""
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.seen.append(line)
        return self.seen
