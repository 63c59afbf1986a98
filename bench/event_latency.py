"""Desired patch to open pages: the latency of live twin events, in memory and through Redis.

    .venv/bin/python bench/event_latency.py [--patches 200] [--pages 100]
        [--layers memory,redis] [--redis-url redis://127.0.0.1:6379/9]
        [--json bench/results/event_latency.json]

Every part is a real process on this machine: ``python -m localhub`` on a free loopback
address, the web app under daphne on a fresh SQLite database, and ``manage.py
simulate_module`` handing its events to the web app's ingest websocket. One asyncio process
opens ``--pages`` websockets on the module's page socket (as a logged-in viewer) and sends
desired patches to the hub's REST API one at a time, each once every page has received the
acknowledgement (``twin.reported_sent``) of the one before. A patch's latency at a page runs
from just before the PATCH is sent to that page receiving the matching
``twin.desired_received``, both read from time.perf_counter in this process. With Redis the
web app runs as two processes: the simulator hands its events to the first and the pages are
split across both, so half of them receive every event through Redis. The targets (p50 under
15 ms, p99 under 50 ms) are checked over every delivery (patches x pages); the first and the
last page of each patch, the hops on the way and each process's CPU time are reported beside.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dashboard_list import start_localhub  # noqa: E402
from localhub_twin import (  # noqa: E402
    cpu_seconds,
    create_modules,
    free_loopback_address,
    write_results,
)

from localhub import sas  # noqa: E402

KEY = "benchToken"  # the desired property each patch sets to a value of its own
WARMUP = 5  # patches sent first and not counted: connections opening, caches filling
PATCH_TIMEOUT = 5.0  # seconds a patch may take to reach every page and be acknowledged
START_TIMEOUT = 60.0
TARGETS = {"p50_ms": 15, "p99_ms": 50}
PACING = "each patch is sent once every page has received twin.reported_sent for the one before"


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Children:
    """The processes this bench starts, stopped newest first. Each runs in a session of its own
    (a Ctrl-C reaches only the bench, which stops them in order), its output in a log file."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("w")
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()  # the child has its own descriptor
        self.running.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.running:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{self.tail(name)}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each running process, and by this one."""
        used = {name: cpu_seconds(proc.pid) for name, proc in self.running if proc.poll() is None}
        return {**used, "bench (pages, patches)": time.process_time()}

    def tail(self, name: str, lines: int = 15) -> str:
        text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop_all(self, keep: int = 0) -> None:
        """Stop all but the first ``keep`` started, newest first."""
        while len(self.running) > keep:
            _name, proc = self.running.pop()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def django_env(work: Path, hub_dir: Path) -> dict:
    """The web app's environment: a fresh var dir, this bench's hub, nothing from the shell
    that could point it elsewhere; one SECRET_KEY for every process (sessions, ingest tokens)."""
    (work / "var").mkdir()
    env = dict(os.environ)
    for name in ("DATABASE_URL", "IOTHUB_CONNECTION_STRING", "IOTHUB_CA_FILE", "REDIS_URL"):
        env.pop(name, None)
    env.update(
        DJANGO_SETTINGS_MODULE="iotadmin.settings",
        IOTADMIN_VAR_DIR=str(work / "var"),
        LOCALHUB_DIR=str(hub_dir),
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1",
        DEBUG="True",  # as `make run` serves: runserver, plain http
        LOG_LEVEL="WARNING",
    )
    return env


def manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-10:])
        raise RuntimeError(f"manage.py {args[0]} failed:\n{tail}")
    return done.stdout


VIEWER_SESSION = """
from django.contrib.auth.models import Group, User
from django.test import Client
user = User.objects.create_user("bench-viewer")
user.groups.add(Group.objects.get(name="viewer"))
client = Client()
client.force_login(user)
print(client.cookies["sessionid"].value)
"""


def viewer_cookie(env: dict) -> str:
    """The Cookie header of a browser logged in as a viewer (may view modules, nothing more)."""
    manage(env, "migrate", "--no-input")
    # The last line: Django 5.2's shell first says what it imported.
    return "sessionid=" + manage(env, "shell", "-c", VIEWER_SESSION).splitlines()[-1]


async def wait_listening(port: int, children: Children) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        children.check()
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {START_TIMEOUT:.0f}s")


# -- pages -------------------------------------------------------------------------------------


@dataclass
class Patch:
    token: str
    arrived: list  # per page: perf_counter when twin.desired_received came, else None
    t0: float = 0.0
    wall0: float = 0.0  # time.time() beside t0, to place the simulator's "at" on our clock
    responded: float = 0.0
    at: str = ""  # the simulator's timestamp of twin.desired_received
    acked: set = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def to_module(self) -> float:
        """From the PATCH to the module's callback. The simulator stamps its events on the wall
        clock, in UTC with milliseconds (truncated): this hop reads up to 1 ms short."""
        return datetime.fromisoformat(self.at).timestamp() - self.wall0


class Pages:
    """What the open pages received; ``current`` is the patch being waited for."""

    def __init__(self, count: int):
        self.count = count
        self.connected: set[int] = set()
        self.all_connected = asyncio.Event()
        self.current: Patch | None = None
        self.stray = 0  # twin.desired_received not for the current patch (late or unknown)
        self.closed = 0

    def received(self, page: int, event: dict, now: float) -> None:
        kind, patch, body = event.get("type"), self.current, event.get("patch") or {}
        if kind == "module.connected":
            self.connected.add(page)
            if len(self.connected) == self.count:
                self.all_connected.set()
        elif kind == "twin.desired_received":
            if patch and body.get(KEY) == patch.token and patch.arrived[page] is None:
                patch.arrived[page] = now
                patch.at = event["at"]
            else:
                self.stray += 1
        elif kind == "twin.reported_sent":
            ack = body.get(KEY)
            if patch and isinstance(ack, dict) and ack.get("value") == patch.token:
                patch.acked.add(page)
                if len(patch.acked) == self.count:
                    patch.done.set()

    async def read(self, page: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            now = time.perf_counter()  # before parsing: the frame is here
            if message.type == aiohttp.WSMsgType.TEXT:
                self.received(page, json.loads(message.data), now)
        self.closed += 1


async def open_pages(
    http: aiohttp.ClientSession, ports: list[int], ids: tuple[str, str], pages: Pages, cookie: str
) -> list[asyncio.Task]:
    """``pages.count`` module pages, spread evenly over the web processes on ``ports``."""
    path = f"/ws/modules/{quote(ids[0], safe='')}/{quote(ids[1], safe='')}/"

    async def one(page: int):
        port = ports[page % len(ports)]
        try:
            ws = await http.ws_connect(
                f"ws://127.0.0.1:{port}{path}",
                origin=f"http://127.0.0.1:{port}",
                headers={"Cookie": cookie},
            )
        except aiohttp.WSServerHandshakeError as e:
            raise RuntimeError(f"the page websocket was refused ({e.status})") from e
        return asyncio.create_task(pages.read(page, ws))

    return await asyncio.gather(*(one(page) for page in range(pages.count)))


# -- patches -----------------------------------------------------------------------------------


@dataclass
class Hub:
    http: aiohttp.ClientSession
    url: str  # the module twin's PATCH URL
    headers: dict


def hub_client(conn_str: str, ca_file: Path, ids: tuple[str, str]) -> Hub:
    fields = dict(part.split("=", 1) for part in conn_str.split(";"))
    host = fields["HostName"]
    token = sas.generate(host, fields["SharedAccessKey"], fields["SharedAccessKeyName"])
    tls = ssl.create_default_context(cafile=str(ca_file))
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls))
    device, module = (quote(i, safe="") for i in ids)
    url = f"https://{host}/twins/{device}/modules/{module}?api-version=2021-04-12"
    headers = {"Authorization": token, "If-Match": '"*"', "Content-Type": "application/json"}
    return Hub(http, url, headers)


async def send_patches(
    hub: Hub, pages: Pages, count: int, name: str, children: Children
) -> list[Patch]:
    """``WARMUP + count`` patches, one at a time; returns the ``count`` measured ones."""
    run = secrets.token_hex(4)
    measured = []
    for i in range(WARMUP + count):
        patch = Patch(f"{name}-{run}-{i}", [None] * pages.count)
        body = json.dumps({"properties": {"desired": {KEY: patch.token}}})
        pages.current = patch
        patch.wall0, patch.t0 = time.time(), time.perf_counter()
        async with hub.http.patch(hub.url, data=body, headers=hub.headers) as response:
            patch.responded = time.perf_counter()
            if response.status != 200:
                raise RuntimeError(f"PATCH twin: {response.status} {await response.text()}")
            await response.read()
        try:
            await asyncio.wait_for(patch.done.wait(), PATCH_TIMEOUT)
        except TimeoutError:  # counted as missing, unless nothing can arrive any more
            children.check()
            if pages.closed:
                raise RuntimeError(f"{pages.closed} page websocket(s) closed") from None
        if i >= WARMUP:
            measured.append(patch)
    pages.current = None
    return measured


# -- figures -----------------------------------------------------------------------------------


def spread(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    if not ordered:
        return {"samples": 0}
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {
        "samples": len(ordered),
        "p50_ms": round(pick(0.50), 2),
        "p95_ms": round(pick(0.95), 2),
        "p99_ms": round(pick(0.99), 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def figures(patches: list[Patch], pages: Pages) -> dict:
    delays = {p.token: [t - p.t0 for t in p.arrived if t is not None] for p in patches}
    reached = [p for p in patches if delays[p.token]]  # by at least one page
    complete = [p for p in patches if None not in p.arrived]
    return {
        "every_delivery": spread([d for each in delays.values() for d in each]),
        "first_page": spread([min(delays[p.token]) for p in reached]),
        "last_page": spread([max(p.arrived) - p.t0 for p in complete]),
        "patches_reaching_every_page": len(complete),
        "pages_receiving_every_event": sum(
            all(p.arrived[page] is not None for p in patches) for page in range(pages.count)
        ),
        "patches_acknowledged_at_every_page": sum(p.done.is_set() for p in patches),
        "stray_events": pages.stray,
        "pages_closed": pages.closed,
        "hops": {
            "hub_patch_response": spread([p.responded - p.t0 for p in patches]),
            "patch_to_module_callback": spread([p.to_module() for p in reached]),
            "module_callback_to_first_page": spread(
                [min(delays[p.token]) - p.to_module() for p in reached]
            ),
        },
    }


# -- one layer ---------------------------------------------------------------------------------


async def bench_layer(name: str, setup: dict, args, children: Children) -> dict:
    """Web process(es), pages, simulator, patches: the figures for one channel layer."""
    keep = len(children.running)
    load = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    try:
        result = await measure_layer(name, setup, args, children)
    finally:
        children.stop_all(keep)  # the simulator, then the web processes
    result["load_average_1m_before"] = load
    print_row(name, result)
    cpu = ", ".join(f"{each} {ms:.1f}" for each, ms in result["cpu_ms_per_patch"].items())
    print(f"{'':11s} CPU ms per patch: {cpu}", flush=True)
    return result


async def measure_layer(name: str, setup: dict, args, children: Children) -> dict:
    env = dict(setup["env"])
    if name == "redis":
        env["REDIS_URL"] = args.redis_url
    ports = [free_port() for _ in range(2 if name == "redis" else 1)]
    for n, port in enumerate(ports, 1):
        argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        children.start(f"web-{name}-{n}", [*argv, "iotadmin.asgi:application"], env)
    for port in ports:
        await wait_listening(port, children)

    pages = Pages(args.pages)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        readers = await open_pages(http, ports, setup["ids"], pages, setup["cookie"])
        events_url = f"ws://127.0.0.1:{ports[0]}/ws/ingest/"
        simulate = [sys.executable, "manage.py", "simulate_module", *setup["ids"]]
        children.start(f"simulator-{name}", [*simulate, "--events-url", events_url], env)
        await wait_connected(pages, children)
        hub = hub_client(setup["conn_str"], setup["ca_file"], setup["ids"])
        cpu0 = children.cpu()
        async with hub.http:
            patches = await send_patches(hub, pages, args.patches, name, children)
        cpu1 = children.cpu()
        for task in readers:
            task.cancel()
    # Where the time goes: each patch makes two events (desired received, reported sent).
    cpu = {
        each.replace(f"-{name}", ""): round(
            (cpu1[each] - cpu0[each]) * 1000 / (WARMUP + args.patches), 2
        )
        for each in cpu0
    }
    return {"web_processes": len(ports), **figures(patches, pages), "cpu_ms_per_patch": cpu}


async def check_redis(url: str) -> None:
    import redis.asyncio

    client = redis.asyncio.from_url(url)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as e:
        raise RuntimeError(f"Redis is not reachable at {url} ({e}); or pass --layers memory") from e
    finally:
        await client.aclose()


async def wait_connected(pages: Pages, children: Children) -> None:
    """Until every page has seen module.connected: the simulator is up and its events flow."""
    deadline = time.monotonic() + START_TIMEOUT
    while not pages.all_connected.is_set():
        children.check()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"module.connected reached {len(pages.connected)} of {pages.count} pages "
                f"in {START_TIMEOUT:.0f}s"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pages.all_connected.wait(), 0.5)


HEADER = (
    f"{'layer':7s} {'web':>3s} | {'every delivery p50/p95/p99 ms':>30s} | "
    f"{'first page p50/p99':>18s} | {'last page p50/p99':>17s} | {'pages w/ all':>12s} | "
    f"{'hub PATCH p50':>13s} | {'to module p50':>13s}"
)


def print_row(name: str, r: dict) -> None:
    every, first, last = r["every_delivery"], r["first_page"], r["last_page"]
    hops = r["hops"]
    print(
        f"{name:7s} {r['web_processes']:3d} | "
        f"{every['p50_ms']:8.2f} {every['p95_ms']:9.2f} {every['p99_ms']:9.2f}   | "
        f"{first['p50_ms']:8.2f} {first['p99_ms']:8.2f} | "
        f"{last.get('p50_ms', float('nan')):8.2f} {last.get('p99_ms', float('nan')):7.2f} | "
        f"{r['pages_receiving_every_event']:12d} | "
        f"{hops['hub_patch_response']['p50_ms']:13.2f} | "
        f"{hops['patch_to_module_callback'].get('p50_ms', float('nan')):13.2f}",
        flush=True,
    )


# -- the whole run -----------------------------------------------------------------------------


async def bench(args, children: Children, work: Path) -> dict:
    if "redis" in args.layers:
        await check_redis(args.redis_url)
    host = free_loopback_address()
    hub_dir = work / "localhub"
    hub_proc, conn_str = start_localhub(hub_dir, host)
    children.running.append(("localhub", hub_proc))  # stopped last
    ca_file = hub_dir / "ca.pem"
    (device_id, module_id, _key), *_ = await create_modules(host, conn_str, ca_file, 1, 1)
    env = django_env(work, hub_dir)
    setup = {
        "env": env,
        "ids": (device_id, module_id),
        "cookie": viewer_cookie(env),
        "conn_str": conn_str,
        "ca_file": ca_file,
    }
    print(
        f"{args.patches} patches (after {WARMUP} not counted), {args.pages} pages on "
        f"{device_id}/{module_id}; {PACING}"
    )
    print(HEADER)
    results = {}
    for name in args.layers:
        results[name] = await bench_layer(name, setup, args, children)
    return results


def targets(results: dict, pages: int) -> dict:
    checks = {}
    for name, r in results.items():
        every = r["every_delivery"]
        checks[f"{name}_p50_under_{TARGETS['p50_ms']}_ms"] = every["p50_ms"] < TARGETS["p50_ms"]
        checks[f"{name}_p99_under_{TARGETS['p99_ms']}_ms"] = every["p99_ms"] < TARGETS["p99_ms"]
        checks[f"{name}_all_{pages}_pages_receive_every_event"] = (
            r["pages_receiving_every_event"] == pages
        )
    return checks


def stop_now(number, _frame):
    """Ctrl-C and SIGTERM stop the bench at once, through main's finally. (asyncio's own Ctrl-C
    handling cancels the main task, and a wait_for finishing at that moment can lose it.)"""
    sys.exit(f"stopped by {signal.strsignal(number)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=200, help="measured desired patches")
    parser.add_argument("--pages", type=int, default=100, help="websockets open on the module")
    parser.add_argument(
        "--layers",
        type=lambda text: text.split(","),
        default=["memory", "redis"],
        help="channel layers to measure, comma-separated: memory,redis",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/9",
        help="REDIS_URL of the web processes (a database no test uses)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/event_latency.json")
    args = parser.parse_args()
    if unknown := set(args.layers) - {"memory", "redis"}:
        parser.error(f"unknown layer(s): {', '.join(sorted(unknown))}")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_now)
    work = Path(tempfile.mkdtemp(prefix="event-latency-"))
    children = Children(work)
    try:
        results = uvloop.run(bench(args, children, work))
    except RuntimeError as e:  # a part that would not start or stopped: say which, and why
        sys.exit(f"event_latency: {e}\nlogs kept in {work}")
    except BaseException:
        print(f"logs kept in {work}", file=sys.stderr)
        raise
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut this short
            signal.signal(sig, signal.SIG_IGN)
        children.stop_all()
    shutil.rmtree(work, ignore_errors=True)
    results["targets"] = targets(results, args.pages)
    results.update(patches=args.patches, pages=args.pages, warmup_patches=WARMUP, pacing=PACING)
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    write_results(args.json, results)


if __name__ == "__main__":
    main()
