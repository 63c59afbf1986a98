"""Reported-patch round trip and throughput of localhub, beside Mosquitto in the same run.

    .venv/bin/python bench/localhub_twin.py [--seconds 5] [--json bench/results/localhub_twin.json]

Starts ``python -m localhub`` on a free loopback address with a fresh data directory,
creates 1,000 module identities, then drives it with a lean asyncio MQTT client (one
process, raw protocol, no SDK) so the generator is not the bottleneck: each connection
publishes a reported patch at QoS 1 and waits for ``$iothub/twin/res/204`` before the next.
The same closed loop (publish QoS 1, wait for PUBACK) runs against the Mosquitto broker on
127.0.0.1:1883 (plain TCP, in memory) as the baseline. Last, 1,000 idle module connections
are opened and the hub's resident memory is read from /proc.
"""

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localhub import mqtt_packets as mp  # noqa: E402
from localhub import sas  # noqa: E402

MOSQUITTO = ("127.0.0.1", 1883)
DEVICES, MODULES_PER_DEVICE = 200, 5  # 1,000 module identities
LEVELS = (1, 50, 500)
IDLE_CONNECTIONS = 1000


def free_loopback_address() -> str:
    import socket

    for last in range(2, 250):
        host = f"127.0.99.{last}"
        try:
            for port in (8443, 8883):
                with socket.socket() as probe:
                    probe.bind((host, port))
        except OSError:
            continue
        return host
    raise RuntimeError("no free loopback address")


class LeanClient(asyncio.Protocol):
    """Just enough MQTT for the loop: CONNECT, QoS 1 PUBLISH, and the answers."""

    def __init__(self):
        self.buffer = bytearray()
        self.connack: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiting: dict[str, asyncio.Future] = {}
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        for fut in [self.connack, *self.waiting.values()]:
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost"))

    def data_received(self, data):
        self.buffer += data
        for kind, _flags, body in mp.split_packets(self.buffer):
            if kind == mp.CONNACK:
                self.connack.set_result(body[1])
            elif kind == mp.PUBACK:
                self._resolve(body[:2].hex())
            elif kind == mp.PUBLISH:
                topic = mp.Reader(body).text()
                # $iothub/twin/res/204/?$rid=<rid>&$version=<n>
                rid = topic.partition("$rid=")[2].partition("&")[0]
                self._resolve(rid)

    def _resolve(self, key):
        fut = self.waiting.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())


async def open_client(host, port, tls, client_id, username, password) -> LeanClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        LeanClient, host, port, ssl=tls, server_hostname=host if tls else None
    )
    client.transport.write(mp.connect(client_id, username, password, keepalive=300, clean=True))
    code = await asyncio.wait_for(client.connack, 30)
    if code != 0:
        raise RuntimeError(f"CONNACK {code} for {client_id}")
    return client


async def closed_loop(client: LeanClient, hub: bool, until: float, samples: list, warmup: float):
    ids = itertools.count(1)
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        n = next(ids) % 65535 or 1
        if hub:
            key = f"{n:x}"
            topic = f"$iothub/twin/PATCH/properties/reported/?$rid={key}"
            packet = mp.publish_qos1(topic, b'{"temperature":%d}' % n, n)
        else:
            key = n.to_bytes(2, "big").hex()
            packet = mp.publish_qos1("bench/twin", b'{"temperature":%d}' % n, n)
        fut = loop.create_future()
        client.waiting[key] = fut
        start = time.perf_counter()
        client.transport.write(packet)
        done = await fut
        if loop.time() >= warmup:
            samples.append(done - start)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def summary(samples: list[float], seconds: float) -> dict:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {
        "round_trips": len(ordered),
        "per_second": round(len(ordered) / seconds, 1),
        "p50_ms": round(pick(0.50), 3),
        "p99_ms": round(pick(0.99), 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


async def run_level(clients, hub: bool, seconds: float, hub_pid: int | None) -> dict:
    loop = asyncio.get_running_loop()
    warmup = loop.time() + min(1.0, seconds / 4)
    until = warmup + seconds
    samples: list[float] = []
    cpu0 = (cpu_seconds(hub_pid) if hub_pid else 0.0, time.process_time())
    wall0 = time.perf_counter()
    await asyncio.gather(*(closed_loop(c, hub, until, samples, warmup) for c in clients))
    wall = time.perf_counter() - wall0
    result = summary(samples, seconds)
    result["generator_cpu_percent"] = round((time.process_time() - cpu0[1]) / wall * 100, 1)
    if hub_pid:
        result["hub_cpu_percent"] = round((cpu_seconds(hub_pid) - cpu0[0]) / wall * 100, 1)
    return result


async def create_modules(
    host: str,
    conn_str: str,
    ca_file: Path,
    devices: int = DEVICES,
    modules_per_device: int = MODULES_PER_DEVICE,
    device_body=lambda device_id: {"deviceId": device_id},
    concurrency: int = 16,
) -> list[tuple[str, str, str]]:
    """Create ``devices`` devices (``bench-0000``…) with ``modules_per_device`` modules each
    (``m0``…) through the REST API; ``device_body(device_id)`` is each device's PUT body.
    Returns (device id, module id, primary key) for every module."""
    fields = dict(part.split("=", 1) for part in conn_str.split(";"))
    token = lambda: sas.generate(  # noqa: E731
        fields["HostName"], fields["SharedAccessKey"], fields["SharedAccessKeyName"]
    )
    tls = ssl.create_default_context(cafile=str(ca_file))
    base = f"https://{fields['HostName']}"
    made = []
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:

        async def put(path, body):
            async with sem:
                url = f"{base}{path}?api-version=2021-04-12"
                async with http.put(url, json=body, headers={"Authorization": token()}) as r:
                    if r.status != 200:
                        raise RuntimeError(f"PUT {path}: {r.status} {await r.text()}")
                    return await r.json()

        width = max(4, len(str(devices - 1)))
        device_ids = [f"bench-{i:0{width}d}" for i in range(devices)]
        await asyncio.gather(*(put(f"/devices/{d}", device_body(d)) for d in device_ids))
        docs = await asyncio.gather(
            *(
                put(f"/devices/{d}/modules/m{j}", {"deviceId": d, "moduleId": f"m{j}"})
                for d in device_ids
                for j in range(modules_per_device)
            )
        )
    for doc in docs:
        key = doc["authentication"]["symmetricKey"]["primaryKey"]
        made.append((doc["deviceId"], doc["moduleId"], key))
    return made


async def hub_clients(host, tls, modules, count):
    sem = asyncio.Semaphore(50)

    async def one(device_id, module_id, key):
        async with sem:
            client_id = f"{device_id}/{module_id}"
            username = f"{host}/{client_id}/?api-version=2021-04-12"
            password = sas.generate(f"{host}/devices/{device_id}/modules/{module_id}", key)
            return await open_client(host, 8883, tls, client_id, username, password)

    return await asyncio.gather(*(one(*m) for m in modules[:count]))


async def mosquitto_clients(count):
    sem = asyncio.Semaphore(50)

    async def one(i):
        async with sem:
            return await open_client(*MOSQUITTO, None, f"bench-{os.getpid()}-{i}", "", "")

    return await asyncio.gather(*(one(i) for i in range(count)))


def close_all(clients):
    for client in clients:
        client.transport.close()


def start_localhub(data_dir: Path, host: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "localhub", "--data-dir", str(data_dir), "--host", host],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    for line in proc.stdout:
        if line.startswith("HostName="):
            return proc, line.strip()
    raise RuntimeError("localhub did not start")


async def bench(seconds: float) -> dict:
    host = free_loopback_address()
    data_dir = Path(tempfile.mkdtemp(prefix="localhub-bench-"))
    proc, conn_str = start_localhub(data_dir, host)
    try:
        ca_file = data_dir / "ca.pem"
        tls = ssl.create_default_context(cafile=str(ca_file))
        tls.maximum_version = ssl.TLSVersion.TLSv1_2  # what the device SDK speaks
        t0 = time.perf_counter()
        modules = await create_modules(host, conn_str, ca_file)
        print(f"created {len(modules)} modules in {time.perf_counter() - t0:.1f}s")
        results: dict = {"localhub": {}, "mosquitto": {}}
        for level in LEVELS:
            clients = await hub_clients(host, tls, modules, level)
            results["localhub"][str(level)] = await run_level(clients, True, seconds, proc.pid)
            close_all(clients)
            clients = await mosquitto_clients(level)
            results["mosquitto"][str(level)] = await run_level(clients, False, seconds, None)
            close_all(clients)
            hub, mosq = results["localhub"][str(level)], results["mosquitto"][str(level)]
            print(
                f"{level:4d} connections | localhub p50 {hub['p50_ms']:.3f} ms "
                f"p99 {hub['p99_ms']:.3f} ms {hub['per_second']:8.0f}/s "
                f"(hub cpu {hub['hub_cpu_percent']}%, generator {hub['generator_cpu_percent']}%)"
                f" | mosquitto p50 {mosq['p50_ms']:.3f} ms p99 {mosq['p99_ms']:.3f} ms "
                f"{mosq['per_second']:8.0f}/s"
            )
            await asyncio.sleep(0.5)
        before = rss_mb(proc.pid)
        clients = await hub_clients(host, tls, modules, IDLE_CONNECTIONS)
        await asyncio.sleep(2)
        results["idle"] = {
            "connections": len(clients),
            "hub_rss_mb_before": round(before, 1),
            "hub_rss_mb": round(rss_mb(proc.pid), 1),
        }
        print(
            f"{len(clients)} idle module connections: hub resident memory "
            f"{results['idle']['hub_rss_mb']:.1f} MB (before connecting: {before:.1f} MB)"
        )
        close_all(clients)
        return results
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per level")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/localhub_twin.json")
    args = parser.parse_args()
    import uvloop

    results = uvloop.run(bench(args.seconds))
    hub1, mosq1 = results["localhub"]["1"], results["mosquitto"]["1"]
    results["targets"] = {
        "p50_within_2x_mosquitto": hub1["p50_ms"] <= 2 * mosq1["p50_ms"],
        "at_least_5000_per_second_at_500": results["localhub"]["500"]["per_second"] >= 5000,
        "under_250_mb_at_1000_idle": results["idle"]["hub_rss_mb"] < 250,
    }
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    results["seconds_per_level"] = args.seconds
    write_results(args.json, results)


def write_results(path: Path, results: dict) -> None:
    """Every bench ends the same way: targets printed, everything written as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print("targets:", json.dumps(results["targets"]))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
