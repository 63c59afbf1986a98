"""localhub's memory under a flood of connections that never authenticate, and after it.

    .venv/bin/python bench/connection_flood.py [--connections 5000] [--hosts 100]
        [--json bench/results/connection_flood.json]

Starts ``python -m localhub`` on a free loopback address with a fresh data directory and
connects one module over MQTT (so the hub has done real work). Then, for each listener
(MQTT 8883, HTTPS 8443), two floods of raw TCP connections that never send a TLS byte:
all from one client address, then spread over ``--hosts`` addresses (127.0.3.x) so that
the cap in all binds rather than the per-host one. During each, a real MQTT client
connects (MQTT floods) or a service request is made (HTTPS floods), from 127.0.0.1, and is
timed; when the flood fills the cap in all it is refused, as any new connection is. The
hub's resident memory is read from /proc/PID/status before, during (all connections
open) and after (all closed).
"""

import argparse
import asyncio
import os
import platform
import signal
import ssl
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localhub_twin import (  # noqa: E402
    create_modules,
    free_loopback_address,
    hub_clients,
    rss_mb,
    start_localhub,
    write_results,
)

from localhub import sas  # noqa: E402
from localhub.admission import MAX_PENDING, MAX_PENDING_PER_HOST  # noqa: E402

SETTLE_SECONDS = 3.0  # for the hub to process a wave of opens or closes before reading /proc


class Silent(asyncio.Protocol):
    """A connection that sends nothing and notes when the hub closes it."""

    def __init__(self):
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(time.perf_counter())


async def open_flood(host: str, port: int, count: int, sources: list[str]):
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(200)

    async def one(i):
        async with sem:
            _transport, protocol = await loop.create_connection(
                Silent, host, port, local_addr=(sources[i % len(sources)], 0)
            )
            return _transport, protocol

    return await asyncio.gather(*(one(i) for i in range(count)))


async def probe_ms(host: str, port: int, tls, modules, conn_str: str) -> float | None:
    """How long a real client takes to be served on ``port``; None if it is refused."""
    t0 = time.perf_counter()
    try:
        if port == 8883:
            [device] = await hub_clients(host, tls, modules, 1)
            device.transport.close()
        else:
            fields = dict(part.split("=", 1) for part in conn_str.split(";"))
            token = sas.generate(
                fields["HostName"], fields["SharedAccessKey"], fields["SharedAccessKeyName"]
            )
            url = f"https://{fields['HostName']}/statistics/devices?api-version=2021-04-12"
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http,
                http.get(url, headers={"Authorization": token}) as response,
            ):
                response.raise_for_status()
    except (OSError, aiohttp.ClientError):
        return None
    return round((time.perf_counter() - t0) * 1000, 1)


async def flood_phase(host, port, count, sources, tls, modules, conn_str, pid) -> dict:
    started = time.perf_counter()
    flood = await open_flood(host, port, count, sources)
    opened = time.perf_counter() - started
    await asyncio.sleep(SETTLE_SECONDS)
    closed_by_hub = sum(p.closed.done() for _t, p in flood)
    during = rss_mb(pid)
    served_ms = await probe_ms(host, port, tls, modules, conn_str)
    for transport, _protocol in flood:
        transport.close()
    await asyncio.sleep(SETTLE_SECONDS)
    return {
        "port": port,
        "connections": count,
        "source_hosts": len(sources),
        "open_seconds": round(opened, 2),
        "closed_by_hub_at_once": closed_by_hub,
        "left_open": count - closed_by_hub,
        "hub_rss_mb_during": round(during, 1),
        "hub_rss_mb_after": round(rss_mb(pid), 1),
        "real_client_ms_during": served_ms,
    }


async def bench(connections: int, hosts: int) -> dict:
    host = free_loopback_address()
    data_dir = Path(tempfile.mkdtemp(prefix="localhub-flood-"))
    proc, conn_str = start_localhub(data_dir, host)
    try:
        ca_file = data_dir / "ca.pem"
        tls = ssl.create_default_context(cafile=str(ca_file))
        tls.maximum_version = ssl.TLSVersion.TLSv1_2  # what the device SDK speaks
        modules = await create_modules(host, conn_str, ca_file, devices=1, modules_per_device=1)
        [warm] = await hub_clients(host, tls, modules, 1)
        warm.transport.close()
        await asyncio.sleep(SETTLE_SECONDS)
        results: dict = {"hub_rss_mb_before": round(rss_mb(proc.pid), 1), "floods": {}}
        print(f"hub resident memory before: {results['hub_rss_mb_before']:.1f} MB")
        spread = [f"127.0.3.{n}" for n in range(1, hosts + 1)]
        for port, listener in ((8883, "mqtt"), (8443, "https")):
            for sources, name in ((["127.0.3.250"], "one_host"), (spread, "many_hosts")):
                phase = await flood_phase(
                    host, port, connections, sources, tls, modules, conn_str, proc.pid
                )
                results["floods"][f"{listener}_{name}"] = phase
                served = phase["real_client_ms_during"]
                print(
                    f"{listener:5} {connections} connections from {len(sources):3} hosts: "
                    f"{phase['left_open']:5} left open, {phase['closed_by_hub_at_once']:5} "
                    f"closed at once; RSS during {phase['hub_rss_mb_during']:.1f} MB, after "
                    f"{phase['hub_rss_mb_after']:.1f} MB; a real client meanwhile: "
                    + (f"served in {served} ms" if served is not None else "refused")
                )
        return results
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=5000, help="per flood")
    parser.add_argument("--hosts", type=int, default=100, help="client addresses when spread")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/connection_flood.json")
    args = parser.parse_args()
    results = asyncio.run(bench(args.connections, args.hosts))
    floods = results["floods"].values()
    before = results["hub_rss_mb_before"]
    results["targets"] = {
        # A pending connection costs ~50 KB; 1,024 of them ~50 MB, all released after.
        "rss_after_within_10_mb_of_before": all(
            f["hub_rss_mb_after"] - before <= 10 for f in floods
        ),
        "rss_during_under_before_plus_100_mb": all(
            f["hub_rss_mb_during"] - before < 100 for f in floods
        ),
        "at_most_the_caps_left_open": all(
            f["left_open"] <= min(MAX_PENDING, MAX_PENDING_PER_HOST * f["source_hosts"])
            for f in floods
        ),
    }
    results["caps"] = {"per_host": MAX_PENDING_PER_HOST, "total": MAX_PENDING}
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    write_results(args.json, results)


if __name__ == "__main__":
    main()
