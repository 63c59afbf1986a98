"""sync_hub and the device list page with 10,000 devices and 50,000 modules in a localhub.

    .venv/bin/python bench/dashboard_list.py [--devices 10000] [--requests 200]
        [--json bench/results/dashboard_list.json]

Starts ``python -m localhub`` on a free loopback address with a fresh data directory and
creates the identities through its REST API with a concurrent client (one device in ten
disabled, for the filtered page). Then, with Django on a fresh SQLite database in a temp
directory, times ``sync_hub`` (an empty mirror, then an unchanged hub), and the device list
view server-side through the test client (no network, no browser): the first page, a
search and a filtered page, each requested ``--requests`` times, at p50 and p99; and the
SQL queries per page on page 1 and page 100, which must be the same number.
"""

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localhub_twin import (  # noqa: E402
    create_modules,
    free_loopback_address,
    start_localhub,
    write_results,
)

MODULES_PER_DEVICE = 5
TARGETS = {"sync_seconds": 30, "list_p50_ms": 30}


def setup_django(var_dir: Path, hub_dir: Path) -> None:
    """A fresh SQLite database, the hub just started, production-like settings."""
    var_dir.mkdir(parents=True, exist_ok=True)
    for name in ("DATABASE_URL", "IOTHUB_CONNECTION_STRING", "IOTHUB_CA_FILE", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="iotadmin.settings",
        IOTADMIN_VAR_DIR=str(var_dir),
        LOCALHUB_DIR=str(hub_dir),
        DEBUG="false",  # no query log, no template debug info: as in production
        SECURE_SSL_REDIRECT="false",  # the test client speaks plain http
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="testserver",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {
        "requests": len(ordered),
        "p50_ms": round(pick(0.50), 2),
        "p99_ms": round(pick(0.99), 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


def time_page(client, url: str, count: int) -> dict:
    for _ in range(10):  # warm-up: template loading, caches
        client.get(url)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
    return percentiles(samples)


def queries_on(client, url: str) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def bench(devices: int, requests: int) -> dict:
    host = free_loopback_address()
    work = Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    hub_dir = work / "localhub"
    proc, conn_str = start_localhub(hub_dir, host)
    results: dict = {"devices": devices, "modules": devices * MODULES_PER_DEVICE}
    try:
        t0 = time.perf_counter()

        def body(device_id):
            disabled = int(device_id.rsplit("-", 1)[1]) % 10 == 0
            return {"deviceId": device_id, "status": "disabled" if disabled else "enabled"}

        made = asyncio.run(
            create_modules(
                host, conn_str, hub_dir / "ca.pem", devices, MODULES_PER_DEVICE, body, 32
            )
        )
        results["create_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"created {devices} devices and {len(made)} modules in {results['create_seconds']}s")

        setup_django(work / "var", hub_dir)
        from django.contrib.auth.models import Group, User
        from django.test import Client

        from devices import mirror

        t0 = time.perf_counter()
        first = mirror.sync_hub()
        results["sync_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"sync_hub, empty mirror: {first.summary()} in {results['sync_seconds']}s")
        t0 = time.perf_counter()
        again = mirror.sync_hub()
        results["resync_seconds"] = round(time.perf_counter() - t0, 2)
        print(f"sync_hub, unchanged hub: {again.summary()} in {results['resync_seconds']}s")
        results["sync_pages"] = first.pages

        user = User.objects.create_user("bench-operator")
        user.groups.add(Group.objects.get(name="operator"))
        client = Client()
        client.force_login(user)
        pages = {
            "first_page": "/",
            "search": "/?search=12",  # 1 in 25 ids or so: several pages of matches
            "filtered_page": "/?status=disabled&page=10",
        }
        results["list"] = {}
        results["load_average_before_list"] = round(os.getloadavg()[0], 2)
        for name, url in pages.items():
            results["list"][name] = {"url": url, **time_page(client, url, requests)}
            r = results["list"][name]
            print(f"{name:14s} {url:28s} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms")
        results["queries_per_page"] = {
            "page_1": queries_on(client, "/"),
            "page_100": queries_on(client, "/?page=100"),
        }
        print(f"SQL queries per page: {results['queries_per_page']}")
        return results
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)  # ~60,000 identities and their database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="timed requests per page")
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/dashboard_list.json")
    args = parser.parse_args()
    results = bench(args.devices, args.requests)
    queries = results["queries_per_page"]
    results["targets"] = {
        "sync_under_30_s": results["sync_seconds"] < TARGETS["sync_seconds"],
        "list_p50_under_30_ms": all(
            page["p50_ms"] < TARGETS["list_p50_ms"] for page in results["list"].values()
        ),
        "queries_do_not_grow": queries["page_1"] == queries["page_100"],
    }
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine
    }
    write_results(args.json, results)


if __name__ == "__main__":
    main()
