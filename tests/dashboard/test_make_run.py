"""``python -m iotadmin.run`` (what ``make run`` runs after installing), as a first-time user
runs it: the hub, the web app and the simulated myFirstDevice/myFirstModule come up, a page
logged in with the printed password sees the module's events, and Ctrl-C stops everything.

On a port and a hub address of its own (IOTADMIN_PORT, LOCALHUB_HOST), so a `make run`
already running on this machine is not in the way."""

import asyncio
import os
import re
import signal
import subprocess
import sys

import aiohttp
import pytest
import requests
from browser_support import free_port
from conftest import _free_loopback_address
from support import REPO, Lines, desired, registry_manager_for, wait_for

from devices import simulator_control

DEVICE, MODULE = "myFirstDevice", "myFirstModule"
STARTUP_TIMEOUT = 90  # migrations on a fresh database, then three processes


@pytest.fixture
def stack(tmp_path):
    """``python -m iotadmin.run`` on a fresh var dir; its output lines; stopped at the end."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "IOTHUB_CONNECTION_STRING", "SECRET_KEY")
    }
    env.update(
        IOTADMIN_VAR_DIR=str(tmp_path / "var"),
        IOTADMIN_PORT=str(port),
        LOCALHUB_HOST=_free_loopback_address(),
        PYTHONUNBUFFERED="1",
    )
    env.pop("LOCALHUB_DIR", None)
    env.pop("IOTADMIN_EVENTS_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "iotadmin.run"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = Lines(process.stdout)
    yield process, lines, f"http://127.0.0.1:{port}", tmp_path / "var"
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    simulator_control.stop_all(tmp_path / "var")
    print("-- make run output --\n" + "\n".join(lines.seen))


def log_in(base_url: str, password: str) -> str:
    """Log in through the login form as a browser does; the Cookie header it then sends."""
    with requests.Session() as browser:
        browser.get(f"{base_url}/login/", timeout=10)
        answer = browser.post(
            f"{base_url}/login/",
            data={
                "username": "admin",
                "password": password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
            timeout=10,
        )
        assert answer.url.rstrip("/") == base_url, f"login refused: {answer.url}"
        return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())


async def module_events(base_url: str, cookie: str, registry) -> list[dict]:
    """Open the module page's websocket, change desired telemetryInterval, collect events
    until the acknowledgement."""
    socket_url = base_url.replace("http://", "ws://") + f"/ws/modules/{DEVICE}/{MODULE}/"
    seen = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(socket_url, origin=base_url, headers={"Cookie": cookie}) as ws,
    ):
        await asyncio.to_thread(
            registry.update_module_twin, DEVICE, MODULE, desired({"telemetryInterval": 30}), "*"
        )
        while not seen or seen[-1]["type"] != "twin.reported_sent":
            message = await ws.receive(timeout=20)
            assert message.type == aiohttp.WSMsgType.TEXT, (message, seen)
            seen.append(message.json())
    return seen


def test_make_run_starts_everything_shows_live_events_and_stops_it_all(stack):
    process, lines, base_url, var_dir = stack
    lines.wait_for("iotadmin is running at", timeout=STARTUP_TIMEOUT)
    password = re.search(r"password (\S+)", lines.wait_for("Log in as admin")).group(1)
    lines.wait_for('{"type": "module.connected"', timeout=30)  # the simulated module
    registry = registry_manager_for(var_dir / "localhub")

    events = asyncio.run(module_events(base_url, log_in(base_url, password), registry))

    assert [e["type"] for e in events[-2:]] == ["twin.desired_received", "twin.reported_sent"]
    assert events[-2]["patch"]["telemetryInterval"] == 30
    assert events[-1]["patch"]["telemetryInterval"]["value"] == 30
    assert registry.get_module(DEVICE, MODULE).connection_state == "Connected"

    process.send_signal(signal.SIGINT)  # Ctrl-C
    assert process.wait(30) == 0
    assert "Stopped." in lines.all()
    with pytest.raises(requests.ConnectionError):
        requests.get(base_url, timeout=2)
    assert simulator_control.running_count(var_dir) == 0


def test_make_run_keeps_its_files_private_and_restarts_a_hub_that_dies(stack):
    process, lines, base_url, var_dir = stack
    lines.wait_for("iotadmin is running at", timeout=STARTUP_TIMEOUT)
    lines.wait_for('{"type": "module.connected"', timeout=30)

    everything = [var_dir, *var_dir.rglob("*")]
    assert len(everything) > 10  # keys, databases, the hub's certificates, logs
    for path in everything:
        expected = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == expected, path

    hub_pid = int(
        subprocess.run(
            ["pgrep", "-f", f"localhub --data-dir {var_dir / 'localhub'}"],
            capture_output=True,
            text=True,
        ).stdout.split()[0]
    )
    os.kill(hub_pid, signal.SIGKILL)
    lines.wait_for("localhub exited with code -9; restarting it.", timeout=30)
    registry = registry_manager_for(var_dir / "localhub")
    wait_for(lambda: _answers(registry), timeout=30)

    assert process.poll() is None  # the web app and the rest stayed up
    assert requests.get(f"{base_url}/login/", timeout=10).status_code == 200
    assert registry.get_device(DEVICE).device_id == DEVICE


def _answers(registry) -> bool:
    try:
        registry.get_device_registry_statistics()
    except Exception:
        return False
    return True
