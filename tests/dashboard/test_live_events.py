"""Live events end to end, every part a real process: ``simulate_module`` connected to a
localhub, handing its events to the web app (daphne) at /ws/ingest/, which publishes them to
the pages open on the module (/ws/modules/...), here aiohttp websockets with a session cookie.

With the in-memory channel layer (one web process, as ``make run``) and with Redis (two web
processes: events handed to one reach pages on the other)."""

import contextlib
import json
import subprocess
import sys
import uuid
from urllib.parse import quote

import aiohttp
import pytest
from browser_support import DashboardServer
from conftest import _free_loopback_address
from django.conf import settings
from django.test import Client
from support import REPO, HubProcess, Lines, create_identities, desired

REDIS_URL = "redis://127.0.0.1:6379/0"
EVENT_TIMEOUT = 20


@pytest.fixture
def session_cookie(transactional_db, make_user) -> str:
    """The Cookie header of a viewer logged in (sessions are in the test database, which the
    server processes share, and signed with the same SECRET_KEY)."""
    client = Client()
    client.force_login(make_user("viewer"))
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


@pytest.fixture
def servers(transactional_db, tmp_path):
    """Start DashboardServers for a hub's data dir; all stopped at the end, logs printed.
    (Before the test database is emptied: a server saves events as its simulators go.)"""
    started = []

    def start(hub_dir, name="web", **env):
        work = tmp_path / name
        work.mkdir()
        server = DashboardServer(hub_dir, work, **env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        print(f"-- {server.url} log --\n{server.log}")


@pytest.fixture
def simulators():
    """Start ``simulate_module`` processes handing events to a server; killed at the end."""
    started = []

    def start(server, device_id, module_id):
        events_url = server.url.replace("http://", "ws://") + "/ws/ingest/"
        process = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "simulate_module",
                device_id,
                module_id,
                "--events-url",
                events_url,
            ],
            cwd=REPO,
            env=server.env,  # the server's hub, SECRET_KEY and var folder
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(process)
        return process, Lines(process.stdout)

    yield start
    for process in started:
        process.kill()
        process.wait(10)
        print(f"-- simulator stderr --\n{process.stderr.read()}")


@contextlib.asynccontextmanager
async def page_socket(server, cookie: str, device_id: str, module_id: str):
    """The websocket a module page opens, as the browser opens it."""
    path = f"/ws/modules/{quote(device_id, safe='')}/{quote(module_id, safe='')}/"
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            server.url.replace("http://", "ws://") + path,
            origin=server.url,
            headers={"Cookie": cookie},
        ) as ws,
    ):
        yield ws


async def next_event(ws, type_: str, timeout: float = EVENT_TIMEOUT) -> dict:
    """The next event of ``type_`` the page receives (others are skipped)."""
    seen = []
    while True:
        try:
            message = await ws.receive(timeout=timeout)
        except TimeoutError:
            pytest.fail(f"no {type_} within {timeout} s; the page saw {seen}")
        if message.type != aiohttp.WSMsgType.TEXT:
            pytest.fail(f"the page's websocket ended ({message.type}) before {type_}: {seen}")
        event = json.loads(message.data)
        seen.append(event["type"])
        if event["type"] == type_:
            return event


def ack(value, version) -> dict:
    return {"value": value, "ac": 200, "ad": "applied", "av": version}


async def test_a_desired_change_reaches_the_page_then_its_acknowledgement(
    dashboard_hub, registry, servers, simulators, session_cookie
):
    create_identities(registry, "d#1", "m:1")
    server = servers(dashboard_hub.settings.data_dir)
    async with page_socket(server, session_cookie, "d#1", "m:1") as ws:
        simulators(server, "d#1", "m:1")
        connected = await next_event(ws, "module.connected")
        assert (connected["device_id"], connected["module_id"]) == ("d#1", "m:1")

        twin = registry.update_module_twin("d#1", "m:1", desired({"telemetryInterval": 122}), "*")
        version = twin.properties.desired["$version"]

        received = await next_event(ws, "twin.desired_received")
        assert received["version"] == version
        assert received["patch"]["telemetryInterval"] == 122
        sent = await next_event(ws, "twin.reported_sent")
        assert sent["patch"] == {"telemetryInterval": ack(122, version)}
        reported = registry.get_module_twin("d#1", "m:1").properties.reported
        assert sent["version"] == reported["$version"]


async def test_with_redis_events_handed_to_one_web_process_reach_pages_on_another(
    dashboard_hub, registry, servers, simulators, session_cookie
):
    # Ids of this test only: another run on the same Redis cannot cross it.
    device_id, module_id = f"d-{uuid.uuid4().hex[:8]}", "m"
    create_identities(registry, device_id, module_id)
    hub_dir = dashboard_hub.settings.data_dir
    first = servers(hub_dir, "first", REDIS_URL=REDIS_URL)
    second = servers(hub_dir, "second", REDIS_URL=REDIS_URL)
    async with (
        page_socket(first, session_cookie, device_id, module_id) as on_first,
        page_socket(second, session_cookie, device_id, module_id) as on_second,
    ):
        simulators(first, device_id, module_id)
        await next_event(on_second, "module.connected")
        await next_event(on_first, "module.connected")

        registry.update_module_twin(device_id, module_id, desired({"mode": "eco"}), "*")

        for ws in (on_second, on_first):
            assert (await next_event(ws, "twin.desired_received"))["patch"]["mode"] == "eco"
            assert (await next_event(ws, "twin.reported_sent"))["patch"]["mode"]["value"] == "eco"


async def test_the_simulator_survives_the_hub_being_killed_and_restarted(
    tmp_path, servers, simulators, session_cookie
):
    hub = HubProcess(tmp_path / "hub", _free_loopback_address()).start()
    try:
        registry = hub.registry_manager()
        create_identities(registry, "d", "m")
        server = servers(hub.data_dir)
        async with page_socket(server, session_cookie, "d", "m") as ws:
            simulators(server, "d", "m")
            await next_event(ws, "module.connected")

            hub.kill()
            await next_event(ws, "module.disconnected")
            hub.start()
            await next_event(ws, "module.connected", timeout=30)

            twin = hub.registry_manager().update_module_twin(
                "d", "m", desired({"telemetryInterval": 7}), "*"
            )
            received = await next_event(ws, "twin.desired_received")
            assert received["patch"]["telemetryInterval"] == 7
            version = twin.properties.desired["$version"]
            sent = await next_event(ws, "twin.reported_sent")
            assert sent["patch"] == {"telemetryInterval": ack(7, version)}
    finally:
        hub.kill()


async def test_a_simulator_that_starts_before_the_web_app_delivers_once_it_is_up(
    dashboard_hub, registry, servers, simulators, session_cookie, tmp_path
):
    """Events wait for the web app (``make run`` starts the simulator after it; a restart of
    the web app must not lose the module either)."""
    create_identities(registry, "d", "m")
    server = DashboardServer(dashboard_hub.settings.data_dir, tmp_path)  # not started yet
    _, lines = simulators(server, "d", "m")
    lines.wait_for('{"type": "module.connected"')
    registry.update_module_twin("d", "m", desired({"late": True}), "*")
    lines.wait_for('{"type": "twin.reported_sent"')
    server.start()
    try:
        async with page_socket(server, session_cookie, "d", "m") as ws:
            registry.update_module_twin("d", "m", desired({"late": False}), "*")
            # What waited for the web app may come first (it had no page to go to then).
            while (await next_event(ws, "twin.desired_received"))["patch"]["late"]:
                pass
    finally:
        server.stop()
