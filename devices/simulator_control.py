"""Simulated module processes started from the module page: start, stop, and whether one runs.

Each simulator (``manage.py simulate_module``, however started) holds an exclusive lock on
a file of its module under VAR_DIR/simulators while it runs, holding its pid and start time.
The lock is the truth: it is released when the process ends, even by a crash, so there is no
stale state, a second simulator for a module is refused, and every web process on this
machine sees the same thing. Starting takes a second lock of the module's, so two Start
clicks at once cannot both spawn one.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from devices import hub
from devices.event_forwarder import REACHED, UNREACHABLE
from devices.events import utc_timestamp
from localhub.files import open_private, private_dir

START_TIMEOUT = 15  # seconds to wait for the module to connect before answering
STOP_TIMEOUT = 5
LOCK_ATTEMPTS = 10  # a status check holds the lock for microseconds: try again a little
# Each simulator is a whole Django + SDK process (~100 MB): enough for a demo, not a fleet.
MAX_RUNNING = 20


class ControlError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class AlreadyRunning(ControlError):
    pass


class StartFailed(ControlError):
    pass


@dataclass
class Running:
    pid: int
    started_at: str
    log_path: Path

    @property
    def events_problem(self) -> str:
        """Why its events do not reach the web app, as it last logged; "" while they do.
        Only simulators started from a page write this log: one older than the running
        simulator's lock is an earlier one's."""
        try:
            if self.log_path.stat().st_mtime < self.log_path.with_suffix(".lock").stat().st_mtime:
                return ""
            with open(self.log_path, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 65536))
                tail = log.read().decode(errors="replace")
        except OSError:
            return ""
        for line in reversed(tail.splitlines()):
            if REACHED in line:
                return ""
            if UNREACHABLE in line:
                return line[line.index(UNREACHABLE) :]
        return ""


def _files(device_id: str, module_id: str) -> tuple[Path, Path]:
    key = hashlib.sha256(json.dumps([device_id, module_id]).encode()).hexdigest()[:32]
    lock_path = Path(settings.VAR_DIR) / "simulators" / f"{key}.lock"
    return lock_path, lock_path.with_suffix(".log")


def _already_runs(device_id: str, module_id: str, running: "Running | None") -> AlreadyRunning:
    pid = f" (pid {running.pid})" if running else ""
    return AlreadyRunning(f"A simulator already runs for {device_id}/{module_id}{pid}.")


@contextlib.contextmanager
def module_lock(device_id: str, module_id: str):
    """Held by the simulator process while it runs; AlreadyRunning if another one holds it."""
    lock_path, _ = _files(device_id, module_id)
    private_dir(lock_path.parent)
    fd = open_private(lock_path, os.O_RDWR | os.O_CREAT)
    try:
        for attempt in range(LOCK_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt == LOCK_ATTEMPTS - 1:
                    running = status(device_id, module_id)
                    raise _already_runs(device_id, module_id, running) from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started_at": utc_timestamp()}).encode())
        yield
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def status(device_id: str, module_id: str) -> Running | None:
    return _holder(_files(device_id, module_id)[0])


def _holder(lock_path: Path) -> Running | None:
    """The simulator holding ``lock_path``, or None when no process holds it."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a simulator runs
        else:
            return None
        for _ in range(50):  # the holder writes its pid just after taking the lock
            with contextlib.suppress(ValueError, KeyError, TypeError):
                found = json.loads(os.pread(fd, 4096, 0))
                return Running(found["pid"], found["started_at"], lock_path.with_suffix(".log"))
            time.sleep(0.01)
        return None
    finally:
        os.close(fd)


def _running_in(var_dir: Path | None):
    """(lock path, Running) of each simulator using ``var_dir`` (default VAR_DIR)."""
    for lock_path in (Path(var_dir or settings.VAR_DIR) / "simulators").glob("*.lock"):
        if running := _holder(lock_path):
            yield lock_path, running


def running_count(var_dir: Path | None = None) -> int:
    """How many simulators use ``var_dir`` (default VAR_DIR)."""
    return sum(1 for _ in _running_in(var_dir))


def start(device_id: str, module_id: str, events_url: str) -> Running:
    """Start ``simulate_module`` for the module, handing its events to ``events_url``; return
    once the module connected (or after START_TIMEOUT, still connecting). AlreadyRunning if
    one runs or is starting; StartFailed, with the command's own one-line reason, if it
    exits; ControlError when MAX_RUNNING run already."""
    lock_path, log_path = _files(device_id, module_id)
    private_dir(lock_path.parent)
    starting = open_private(lock_path.with_suffix(".starting"), os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(starting, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"A simulator for {device_id}/{module_id} is being started already."
            ) from None
        if running := status(device_id, module_id):
            raise _already_runs(device_id, module_id, running)
        if running_count() >= MAX_RUNNING:
            raise ControlError(
                f"{MAX_RUNNING} simulators already run on this server: stop one first."
            )
        hub.config()  # HubError if there is no hub: said before starting anything
        return _spawn(device_id, module_id, events_url, log_path)
    finally:
        os.close(starting)  # releases the start lock


def _spawn(device_id: str, module_id: str, events_url: str, log_path: Path) -> Running:
    # The child uses this process's hub, wherever these settings came from; the secret goes
    # in its environment (readable by this user only), not on its command line.
    env = {
        **os.environ,
        "IOTHUB_CONNECTION_STRING": settings.IOTHUB_CONNECTION_STRING,
        "IOTHUB_CA_FILE": settings.IOTHUB_CA_FILE,
        "LOCALHUB_DIR": str(settings.LOCALHUB_DIR),
        "IOTADMIN_VAR_DIR": str(settings.VAR_DIR),
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "simulate_module"]
    # Its log quotes ids and the hub's answers: this user's only, like the rest of VAR_DIR.
    with os.fdopen(open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as log:
        process = subprocess.Popen(
            # Ids after "--": an id such as "--settings=x" is an argument, never an option
            # (Django's own option parsing would import that module).
            [*argv, "--events-url", events_url, "--", device_id, module_id],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=settings.BASE_DIR,
            start_new_session=True,  # not stopped with the web process's own group
        )
    threading.Thread(target=process.wait, daemon=True).start()  # reaps it when it ends
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StartFailed(_failure(log_path, process.returncode))
        if b'"module.connected"' in log_path.read_bytes():
            break
        time.sleep(0.05)
    return status(device_id, module_id) or Running(process.pid, utc_timestamp(), log_path)


def _failure(log_path: Path, code: int) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    last = next((line for line in reversed(lines) if line), "")
    last = last.removeprefix("CommandError: ")
    return last or f"The simulator exited with code {code}."


def stop(device_id: str, module_id: str) -> bool:
    """Stop the module's simulator (SIGTERM, then SIGKILL); False if none ran."""
    running = status(device_id, module_id)
    if running is None:
        return False
    _terminate(running.pid, lambda: status(device_id, module_id) is None)
    return True


def stop_all(var_dir: Path | None = None) -> int:
    """Stop every simulator using ``var_dir`` (default VAR_DIR), however it was started
    (``make run`` does at exit); return how many ran."""
    stopped = 0
    for lock_path, running in _running_in(var_dir):
        _terminate(running.pid, lambda path=lock_path: _holder(path) is None)
        stopped += 1
    return stopped


def _terminate(pid: int, gone) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if gone():
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
