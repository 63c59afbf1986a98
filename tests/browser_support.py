"""The browser tests' harness: the dashboard served by a real server process, and headless
Chromium (Debian's, at /usr/bin/chromium or $CHROMIUM) driven by Playwright.

The fixtures built on this (``live_dashboard``, ``page``) are at the end of conftest.py;
tests import helpers from here: ``from browser_support import log_in``.

Why a server process rather than pytest-django's ``live_server``: that one is a WSGI thread
(Django's LiveServerThread), and the dashboard is an ASGI app whose live pages need
websockets. ``manage.py runserver`` is daphne, exactly what ``make run`` serves; a process of
its own also keeps Twisted's reactor (which cannot be restarted) out of the test process. It
shares the test database: the test writes users and rows, the server reads them. So the
SQLite test database is a file (see conftest.py) and browser tests use ``transactional_db``
(rows are committed, visible to the server).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from support import REPO

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As root Chromium needs --no-sandbox; this machine's network is closed, so nothing of
# Chromium's own (updates, sync, safe browsing) may try to go out.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# What conftest's make_user gives every user.
PASSWORD = "correct horse battery staple"
TIMEOUT_MS = 10_000
SERVER_START_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    """The test database (set up by pytest-django) as a DATABASE_URL for another process."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        if connection.is_in_memory_db():
            pytest.fail("the browser tests need the SQLite test database in a file")
        return f"sqlite:///{db['NAME']}"
    if connection.vendor == "postgresql":
        auth = quote(db["USER"] or "", safe="")
        if db["PASSWORD"]:
            auth += ":" + quote(db["PASSWORD"], safe="")
        return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    pytest.fail(f"no DATABASE_URL for a {connection.vendor} test database")


class DashboardServer:
    """``manage.py runserver`` (daphne) on a free port, for one test; its output in a file."""

    def __init__(self, hub_dir: Path, work_dir: Path, **env: str):
        from django.conf import settings

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = work_dir / "server.log"
        # The in-memory channel layer unless a test passes REDIS_URL.
        inherited = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        self.env = {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "iotadmin.settings",
            "DATABASE_URL": database_url(),
            "IOTHUB_CONNECTION_STRING": "",
            "IOTHUB_CA_FILE": "",
            "LOCALHUB_DIR": str(hub_dir),
            "IOTADMIN_VAR_DIR": str(work_dir / "var"),
            # The test process's key: a session made here is valid there.
            "SECRET_KEY": settings.SECRET_KEY,
            "DEBUG": "True",  # as `make run`: runserver serves the static files
            # Simulators it starts hand their events to it.
            "IOTADMIN_EVENTS_URL": f"ws://127.0.0.1:{self.port}/ws/ingest/",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> "DashboardServer":
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                pytest.fail(
                    f"the dashboard server exited with {self.process.returncode}:\n{self.log}"
                )
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the dashboard server did not answer in time:\n{self.log}")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/login/", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@contextlib.contextmanager
def chromium_page(base_url: str):
    """A Playwright page in a fresh headless Chromium; relative URLs go to ``base_url``."""
    from django.db import connections
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"Chromium is not at {CHROMIUM}: install Debian's (`apt-get install -y chromium`, "
            "as .ci/run does) or set CHROMIUM=/path/to/chromium. Browser tests never skip."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(base_url=base_url)
            context.set_default_timeout(TIMEOUT_MS)
            yield context.new_page()
        finally:
            # While Playwright runs, the ORM works on a database connection of its own (a
            # separate context); close it, or Postgres cannot drop the test database.
            connections.close_all()
            browser.close()


def log_in(page, username: str, password: str = PASSWORD) -> None:
    """Log in through the login page, as a person would; fail clearly if it is refused."""
    page.goto("/login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    if "/login/" in page.url:
        pytest.fail(f"logging in as {username} failed: {page.locator('main').inner_text()}")
