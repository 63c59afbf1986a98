"""Page latency while anonymous clients flood /login/ with wrong passwords, with django-axes'
lockout off and on.

    .venv/bin/python bench/login_flood.py [--clients 16] [--requests 100]
        [--json bench/results/login_flood.json]

Serves the dashboard with ``manage.py runserver`` (daphne, as `make run`) on a fresh SQLite
database, and times GET /login/ (``--requests`` times, one after another) alone, then while
``--clients`` threads post wrong passwords for one account as fast as they are answered
(after 20 one by one, which lock it when the lockout is on). Each password hashed (PBKDF2,
~0.3 s of CPU) slows every page; a locked-out attempt is refused unhashed, and answered
after a second (devices/logins.py).
"""

import argparse
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localhub_twin import write_results  # noqa: E402

TARGETS = {"flooded_p50_ms_with_lockout": 100}
USERNAME, PASSWORD = "flooded", "correct horse battery staple"
LOCKED_AFTER = 20  # settings.AXES_FAILURE_LIMIT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return (time.perf_counter() - started) * 1000


def flood(url: str, stop: threading.Event, counts: list[int], until: int = 0) -> None:
    """Wrong passwords for USERNAME, each with the CSRF token of a login page."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = opener.open(url, timeout=60).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    body = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "username": USERNAME, "password": "wrong"}
    ).encode()
    while not stop.is_set() and not (until and len(counts) >= until):
        try:
            opener.open(url, body, timeout=60).read()
        except urllib.error.HTTPError as e:  # 429 once locked
            e.read()
        counts.append(1)


def measure(env: dict, clients: int, requests: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/login/"
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                timed_get(url)
                break
            except OSError:
                time.sleep(0.1)
        alone = [timed_get(url) for _ in range(requests)]
        stop, counts = threading.Event(), []
        # The flood's first attempts, one by one: with the lockout they lock the account.
        flood(url, stop, counts, until=LOCKED_AFTER)
        threads = [threading.Thread(target=flood, args=(url, stop, counts)) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(2)  # the flood under way
        flooded = [timed_get(url) for _ in range(requests)]
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        server.terminate()
        server.wait(30)
    return {
        "alone_p50_ms": round(statistics.median(alone), 1),
        "flooded_p50_ms": round(statistics.median(flooded), 1),
        "flooded_p99_ms": round(sorted(flooded)[int(len(flooded) * 0.99) - 1], 1),
        "login_attempts": len(counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--json", type=Path, default=ROOT / "bench/results/login_flood.json")
    args = parser.parse_args()
    results = {"clients": args.clients, "requests": args.requests}
    with tempfile.TemporaryDirectory() as tmp:
        # The same settings with the lockout off: what the app did before django-axes.
        (Path(tmp) / "without_lockout.py").write_text(
            "from iotadmin.settings import *  # noqa\nAXES_ENABLED = False\n"
        )
        base = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "IOTADMIN_VAR_DIR": tmp,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "True",
            "PYTHONPATH": tmp,
            "DJANGO_SETTINGS_MODULE": "iotadmin.settings",
        }
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=base)
        create = (
            "from django.contrib.auth.models import User; "
            f"User.objects.create_user({USERNAME!r}, password={PASSWORD!r})"
        )
        subprocess.run([sys.executable, "manage.py", "shell", "-c", create], cwd=ROOT, env=base)
        for name, module in [("without_lockout", "without_lockout"), ("with_lockout", None)]:
            env = {**base, "DJANGO_SETTINGS_MODULE": module or base["DJANGO_SETTINGS_MODULE"]}
            results[name] = measure(env, args.clients, args.requests)
            print(name, results[name], flush=True)
    results["targets"] = {
        "flooded_p50_under_100_ms_with_lockout": results["with_lockout"]["flooded_p50_ms"]
        < TARGETS["flooded_p50_ms_with_lockout"],
    }
    write_results(args.json, results)


if __name__ == "__main__":
    main()
