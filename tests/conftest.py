"""Shared fixtures: a real localhub on a loopback address of its own, per test."""

import asyncio
import contextlib
import errno
import os
import random
import signal
import socket
import threading
from pathlib import Path

import azure.iot.device
import pytest
from azure.iot.device import aio as device_aio
from azure.iot.device.common.pipeline.pipeline_exceptions import PipelineNotRunning
from azure.iot.hub import IoTHubRegistryManager
from support import HubProcess, registry_manager_for

from localhub.server import LocalHub, Settings
from localhub.store import Store


def _free_loopback_address() -> str:
    """A 127.x.y.z address whose ports 8443 and 8883 are free.

    127.0.0.1 is left to `make run`; random addresses keep test processes that run at the
    same time (several checkouts, a bench) from colliding on the fixed MQTT port.
    """
    for _ in range(200):
        host = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        try:
            for port in (8443, 8883):
                with socket.socket() as probe:
                    probe.bind((host, port))
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            continue
        return host
    raise RuntimeError("no free loopback address for a test hub")


class HubThread:
    """A localhub running in a background thread with its own event loop.

    Clients talk to it only over real sockets; ``hub`` is exposed for assertions about
    internal state that no API shows (e.g. the telemetry buffer).
    """

    def __init__(self, data_dir: Path, host: str, store_class: type[Store] = Store):
        self.settings = Settings(data_dir=data_dir, host=host, https_port=8443)
        self.host = host
        self.store_class = store_class  # a test may pass a Store whose commits it controls
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running: LocalHub | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "HubThread":
        started = threading.Event()
        errors = []

        def run():
            self.loop = asyncio.new_event_loop()
            try:
                self.running = self.loop.run_until_complete(
                    LocalHub.start(self.settings, self.store_class)
                )
            except BaseException as e:
                errors.append(e)
                started.set()
                return
            started.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.running.stop())
            self.loop.close()

        self._thread = threading.Thread(target=run, name=f"localhub-{self.host}", daemon=True)
        self._thread.start()
        started.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._thread and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
        self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the hub's loop and return its result (for state checks)."""

        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    @property
    def hub(self):
        return self.running.hub

    @property
    def connection_string(self) -> str:
        return (self.settings.data_dir / "connection-string").read_text().strip()

    @property
    def ca_file(self) -> Path:
        return self.settings.data_dir / "ca.pem"

    @property
    def ca_pem(self) -> str:
        return self.ca_file.read_text()

    def policy_connection_string(self, policy: str) -> str:
        key = self.hub.policies[policy][0]
        return f"HostName={self.host}:8443;SharedAccessKeyName={policy};SharedAccessKey={key}"

    def registry_manager(self, connection_string: str | None = None) -> IoTHubRegistryManager:
        return registry_manager_for(self.settings.data_dir, connection_string)

    def device_connection_string(self, device_id: str, key: str, module_id: str = "") -> str:
        text = f"HostName={self.host};DeviceId={device_id};SharedAccessKey={key}"
        return f"{text};ModuleId={module_id}" if module_id else text

    def device_client(
        self, device_id: str, key: str, module_id: str = "", aio: bool = False, **options
    ):
        """An SDK device client, or module client when ``module_id`` is given, trusting this
        hub's CA; ``aio=True`` for the asyncio one. The caller shuts it down."""
        sdk = device_aio if aio else azure.iot.device
        kind = sdk.IoTHubModuleClient if module_id else sdk.IoTHubDeviceClient
        return kind.create_from_connection_string(
            self.device_connection_string(device_id, key, module_id),
            server_verification_cert=self.ca_pem,
            **options,
        )


@pytest.fixture
def localhub(tmp_path):
    running = HubThread(tmp_path / "hub", _free_loopback_address()).start()
    yield running
    running.stop()


@pytest.fixture
def registry(localhub):
    return localhub.registry_manager()


@pytest.fixture
def client_for(localhub):
    """Build sync SDK clients from an identity and its key; every one is shut down afterwards."""
    made = []

    def build(device_id, key, module_id="", **options):
        made.append(localhub.device_client(device_id, key, module_id, **options))
        return made[-1]

    yield build
    for client in made:
        # A test may have shut its client down already; a second shutdown raises this.
        with contextlib.suppress(PipelineNotRunning):
            client.shutdown()


@pytest.fixture
async def aio_client_for(localhub):
    """Build asyncio SDK clients from an identity and its key; every one is shut down afterwards."""
    made = []

    def build(device_id, key, module_id="", **options):
        made.append(localhub.device_client(device_id, key, module_id, aio=True, **options))
        return made[-1]

    yield build
    for client in made:
        await client.shutdown()


# -- the dashboard -------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _fresh_hub_health():
    """Each test starts with no view of the hub's health: a hub another test stopped must
    not make this one's calls fail fast (devices.hub keeps it per process)."""
    from devices import hub

    hub.forget_health()


@pytest.fixture(autouse=True)
def plain_http(settings):
    """The test client speaks plain http, and pytest-django runs with DEBUG=False, where
    SECURE_SSL_REDIRECT defaults on: every answer would be a redirect to https. (Dashboard
    servers the tests start get DEBUG=True; test_settings.py checks the production values.)"""
    settings.SECURE_SSL_REDIRECT = False


@pytest.fixture
def dashboard_hub(localhub, settings):
    """Point the dashboard at this test's localhub (as `make run` points it at var/)."""
    settings.IOTHUB_CONNECTION_STRING = ""
    settings.IOTHUB_CA_FILE = ""
    settings.LOCALHUB_DIR = str(localhub.settings.data_dir)
    return localhub


@pytest.fixture
def hub_process(tmp_path):
    """``python -m localhub`` as a process of its own, not started yet (``.start()``): it can
    be stopped, continued or killed. Killed at the end, continued first if stopped."""
    running = HubProcess(tmp_path / "hub", _free_loopback_address())
    yield running
    if running.process is not None and running.process.poll() is None:
        os.kill(running.process.pid, signal.SIGCONT)
    running.kill()


@pytest.fixture
def dashboard_hub_process(hub_process, settings):
    """``hub_process`` started, and the dashboard pointed at it."""
    hub_process.start()
    settings.IOTHUB_CONNECTION_STRING = ""
    settings.IOTHUB_CA_FILE = ""
    settings.LOCALHUB_DIR = str(hub_process.data_dir)
    return hub_process


@pytest.fixture
def make_user(db, django_user_model):
    """A user holding one of the roles (groups made by the roles migration)."""
    from django.contrib.auth.models import Group

    def make(role: str, username: str | None = None):
        user = django_user_model.objects.create_user(
            username=username or f"{role}-user", password="correct horse battery staple"
        )
        user.groups.add(Group.objects.get(name=role))
        return user

    return make


@pytest.fixture
def viewer(make_user):
    return make_user("viewer")


@pytest.fixture
def operator(make_user):
    return make_user("operator")


@pytest.fixture
def admin(make_user):
    return make_user("admin")


@pytest.fixture
def client_as(client):
    """``client_as(user)``: the test client, logged in as that user."""

    def login(user):
        client.force_login(user)
        return client

    return login


# -- browser tests (tests/browser/): a live dashboard and headless Chromium ----------------
# The machinery is in tests/browser_support.py, imported lazily: other tests never load
# Playwright.


def pytest_collection_modifyitems(items):
    """Browser tests last (after pytest-django's own ordering, which this keeps otherwise):
    they are the slowest, and each ends by emptying the database (``transactional_db``), role
    groups included, which a later test's make_user would miss."""
    items.sort(key=lambda item: Path(item.path).parent.name == "browser")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """The SQLite test database in a file rather than in memory, so that the browser tests'
    server, another process, shares it. (Postgres test databases are shared anyway.)"""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3" and not db.get("TEST", {}).get("NAME"):
        db.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture
def live_dashboard(transactional_db, dashboard_hub, tmp_path):
    """The dashboard served by daphne (``manage.py runserver``) in a process of its own, on a
    free port, managing this test's localhub and using the test database; ``.url``, ``.log``.
    Its rows are committed (``transactional_db``) so that the server sees them."""
    from browser_support import DashboardServer

    from devices import simulator_control

    server = DashboardServer(dashboard_hub.settings.data_dir, tmp_path).start()
    yield server
    server.stop()
    # Simulators it started run in sessions of their own: they outlive it unless stopped.
    simulator_control.stop_all(Path(server.env["IOTADMIN_VAR_DIR"]))
    print(f"-- dashboard server log --\n{server.log}")  # shown when the test fails


@pytest.fixture
def page(live_dashboard, monkeypatch):
    """A Playwright page in headless Chromium whose relative URLs go to ``live_dashboard``."""
    from browser_support import chromium_page

    # Playwright's sync API runs an asyncio loop in this thread, and Django refuses ORM calls
    # while a loop runs (SynchronousOnlyOperation). The test's own ORM calls (make_user, rows
    # to check) are plain synchronous code, so allowing them here is safe.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium_page(live_dashboard.url) as browser_page:
        yield browser_page
