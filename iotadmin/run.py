"""``python -m iotadmin.run`` (what ``make run`` calls): the whole stack on this machine.

Migrates, makes sure an admin exists, starts localhub (unless IOTHUB_CONNECTION_STRING names
another hub) and, once the hub is up, the web app at http://127.0.0.1:8000 (IOTADMIN_PORT)
and a simulated module (myFirstDevice/myFirstModule on localhub, created if missing), whose
events the module page shows live; prints the URL and the login, and stops everything on
Ctrl-C or SIGTERM, simulators started from pages included. If localhub exits it is started
again while the web app stays up (its pages say the hub is unreachable meanwhile); if the web
app exits, the others are stopped and the exit is reported.

Each part is a child process in its own process group: a signal reaches this process only,
which stops the children in order, so nothing is left behind and nothing is stopped twice.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from iotadmin import settings

REPO = Path(__file__).resolve().parent.parent
WEB_HOST, WEB_PORT = "127.0.0.1", settings.RUN_PORT
HUB_HOST, HUB_PORT = settings.LOCALHUB_HOST, 8443
DEMO_DEVICE, DEMO_MODULE = "myFirstDevice", "myFirstModule"
STARTUP_TIMEOUT = 60
STOP_TIMEOUT = 10
RESTART_DELAY = 2


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Part:
    """One long-running child process, and how to tell it is ready to serve."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    essential: bool = True  # when it exits, everything stops
    restarts: bool = False  # when it exits, it is started again and the rest goes on
    process: subprocess.Popen | None = field(default=None, repr=False)
    last_start: float = field(default=0.0, repr=False)

    def start(self) -> None:
        print(f"$ python {' '.join(self.argv[1:])}", flush=True)
        self.last_start = time.monotonic()
        self.process = subprocess.Popen(self.argv, cwd=REPO, start_new_session=True)

    def exited(self) -> int | None:
        return self.process.poll() if self.process else None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        # SIGINT, as Ctrl-C would send: runserver's autoreloader and its child both stop.
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"{self.name} did not stop within {STOP_TIMEOUT}s; killing it")
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Stop(Exception):
    pass


def _stop_on_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


def manage(*args: str, capture: bool = False) -> str:
    """Run ``manage.py`` to completion (exit on failure); its output if ``capture``."""
    print(f"$ python manage.py {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, capture_output=capture, text=True
    )
    if done.returncode != 0:
        if capture:
            sys.stderr.write(done.stdout + done.stderr)
        sys.exit(f"`python manage.py {' '.join(args)}` failed (exit {done.returncode}).")
    return done.stdout if capture else ""


def parts() -> list[Part]:
    """What runs, in start order; each starts once the one before it is ready."""
    started = time.time()
    found = []
    if settings.IOTHUB_CONNECTION_STRING:
        print("IOTHUB_CONNECTION_STRING names the hub to manage: localhub is not started.")
    else:
        hub_dir = Path(settings.LOCALHUB_DIR)
        connection_string = hub_dir / "connection-string"
        found.append(
            Part(
                "localhub",
                [
                    *(sys.executable, "-m", "localhub", "--data-dir", str(hub_dir)),
                    *("--host", HUB_HOST, "--https-port", str(HUB_PORT)),
                ],
                # The hub rewrites its connection string at every start, then listens.
                ready=lambda: (
                    connection_string.exists()
                    and connection_string.stat().st_mtime >= started - 1
                    and port_open(HUB_HOST, HUB_PORT)
                ),
                # The pages say the hub is unreachable meanwhile; the web app stays up.
                essential=False,
                restarts=True,
            )
        )
    found.append(
        Part(
            "web app",
            [sys.executable, "manage.py", "runserver", f"{WEB_HOST}:{WEB_PORT}"],
            ready=lambda: port_open(WEB_HOST, WEB_PORT),
        )
    )
    if not settings.IOTHUB_CONNECTION_STRING:  # a real hub is not ours to add identities to
        found.append(
            Part(
                "simulated module",
                [
                    *(sys.executable, "manage.py", "simulate_module", "--create"),
                    *(DEMO_DEVICE, DEMO_MODULE),  # events to settings.EVENTS_URL: the web app
                ],
                ready=lambda: True,  # it prints module.connected; nothing waits for it
                essential=False,
            )
        )
    return found


def wait_ready(part: Part, running: list[Part]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not part.ready():
        for each in running:
            if (code := each.exited()) is not None:
                raise Stop(f"{each.name} exited with code {code} while starting")
        if time.monotonic() > deadline:
            raise Stop(f"{part.name} was not ready after {STARTUP_TIMEOUT}s")
        time.sleep(0.2)


def watch(running: list[Part]) -> None:
    reported = set()
    while True:
        for part in running:
            if (code := part.exited()) is not None:
                if part.essential:
                    raise Stop(f"{part.name} exited with code {code}")
                if part.restarts:
                    # At most one start every RESTART_DELAY: a hub that cannot start (its
                    # port taken, its data dir unreadable) must not spin.
                    if time.monotonic() - part.last_start >= RESTART_DELAY:
                        print(f"{part.name} exited with code {code}; restarting it.", flush=True)
                        part.start()
                    continue
                if part.name not in reported:
                    reported.add(part.name)
                    print(f"{part.name} exited with code {code}; the rest goes on.", flush=True)
        time.sleep(0.5)


def stop_simulators() -> None:
    """Every simulator on this var dir: the demo one, and those started from module pages,
    which run in sessions of their own."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iotadmin.settings")
    from devices import simulator_control

    if stopped := simulator_control.stop_all(Path(settings.VAR_DIR)):
        print(f"Stopped {stopped} simulated module(s).")


def check_ports() -> None:
    needed = [(WEB_HOST, WEB_PORT, "the web app")]
    if not settings.IOTHUB_CONNECTION_STRING:
        needed.append((HUB_HOST, HUB_PORT, "localhub"))
    for host, port, what in needed:
        if port_open(host, port):
            sys.exit(
                f"Port {port} of {host} is taken ({what} needs it): is `make run` running "
                "already? (IOTADMIN_PORT and LOCALHUB_HOST choose others.)"
            )


def main() -> int:
    # A development server on 127.0.0.1: the debug page, for loopback clients only and
    # scrubbed of secrets (iotadmin/error_reports.py). DEBUG=False here is honoured.
    os.environ.setdefault("DEBUG", "true")
    # Whatever the parts create (keys, databases, logs) is this user's only.
    os.umask(0o077)
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    running: list[Part] = []
    reason = ""
    try:
        check_ports()
        manage("migrate", "--no-input")
        login = manage("ensure_admin", capture=True)
        for part in parts():
            part.start()
            running.append(part)
            wait_ready(part, running)
        print(
            f"\niotadmin is running at http://{WEB_HOST}:{WEB_PORT}/\n{login}"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        watch(running)
    except Stop as stop:
        reason = str(stop)
    finally:
        # A second Ctrl-C must not cut the stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Simulators first, while the web app is there to show them stopping.
        stop_simulators()
        for part in reversed(running):
            part.stop()
    if reason in ("SIGINT", "SIGTERM"):
        print("Stopped.")
        return 0
    print(f"Stopped: {reason}.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
