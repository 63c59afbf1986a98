"""Simulators started for the module page (devices.simulator_control): real ``simulate_module``
processes against a real localhub, one per module, stopped on request."""

import os
import threading

import pytest
from support import create_identities, wait_for

from devices import simulator_control
from devices.simulator_control import AlreadyRunning, ControlError, StartFailed


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    yield settings.VAR_DIR
    simulator_control.stop_all()


def connection_state(registry, device_id, module_id) -> str:
    return registry.get_module(device_id, module_id).connection_state


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_returns_once_the_module_is_connected(dashboard_hub, registry, var_dir):
    create_identities(registry, "d", "m")

    running = simulator_control.start("d", "m", events_url="")

    assert connection_state(registry, "d", "m") == "Connected"
    assert simulator_control.status("d", "m") == running
    assert '"module.connected"' in running.log_path.read_text()


def test_a_second_start_for_the_module_is_refused(dashboard_hub, registry, var_dir):
    create_identities(registry, "d", "m", "other")
    running = simulator_control.start("d", "m", events_url="")

    with pytest.raises(AlreadyRunning, match=rf"already runs for d/m \(pid {running.pid}\)"):
        simulator_control.start("d", "m", events_url="")
    assert simulator_control.start("d", "other", events_url="").pid != running.pid


def test_stop_ends_the_process_and_the_module_disconnects(dashboard_hub, registry, var_dir):
    create_identities(registry, "d", "m")
    running = simulator_control.start("d", "m", events_url="")

    assert simulator_control.stop("d", "m") is True

    assert simulator_control.status("d", "m") is None
    wait_for(lambda: not alive(running.pid), what="the simulator to exit")
    wait_for(lambda: connection_state(registry, "d", "m") == "Disconnected", what="disconnect")
    assert simulator_control.stop("d", "m") is False  # nothing left to stop


def test_a_simulator_killed_outright_no_longer_counts_as_running(dashboard_hub, registry,
                                                                 var_dir):  # fmt: skip
    create_identities(registry, "d", "m")
    running = simulator_control.start("d", "m", events_url="")
    os.kill(running.pid, 9)
    wait_for(lambda: not alive(running.pid), what="the kill")

    assert simulator_control.status("d", "m") is None
    assert simulator_control.start("d", "m", events_url="").pid != running.pid


def test_a_failed_start_says_why_in_one_line(dashboard_hub, registry, var_dir):
    create_identities(registry, "d")

    with pytest.raises(StartFailed) as failed:
        simulator_control.start("d", "nope", events_url="")

    assert failed.value.message == (
        "Reading module d/nope: Module 'nope' was not found on device 'd'"
    )
    assert simulator_control.status("d", "nope") is None


def test_stop_all_stops_every_simulator(dashboard_hub, registry, var_dir):
    create_identities(registry, "d", "m1", "m2")
    pids = [simulator_control.start("d", m, events_url="").pid for m in ("m1", "m2")]

    assert simulator_control.stop_all() == 2

    wait_for(lambda: not any(alive(pid) for pid in pids), what="both simulators to exit")
    assert simulator_control.status("d", "m1") is None


def test_of_two_starts_at_once_one_is_refused(dashboard_hub, registry, var_dir):
    """Two operators clicking Start together: one simulator, and one of them told so."""
    create_identities(registry, "d", "m")
    outcomes = []

    def click():
        try:
            outcomes.append(simulator_control.start("d", "m", events_url=""))
        except AlreadyRunning as refused:
            outcomes.append(refused)

    clicks = [threading.Thread(target=click) for _ in range(2)]
    for each in clicks:
        each.start()
    for each in clicks:
        each.join(30)

    started = [o for o in outcomes if isinstance(o, simulator_control.Running)]
    refused = [o for o in outcomes if isinstance(o, AlreadyRunning)]
    assert len(started) == 1 and len(refused) == 1, outcomes
    assert simulator_control.status("d", "m").pid == started[0].pid
    assert '"module.connected"' in started[0].log_path.read_text()


def test_no_more_than_max_running_simulators(dashboard_hub, registry, var_dir, monkeypatch):
    monkeypatch.setattr(simulator_control, "MAX_RUNNING", 1)
    create_identities(registry, "d", "m1", "m2")
    simulator_control.start("d", "m1", events_url="")

    with pytest.raises(ControlError, match="1 simulators already run on this server"):
        simulator_control.start("d", "m2", events_url="")
    assert simulator_control.status("d", "m2") is None


def test_the_simulators_dir_and_logs_are_private(dashboard_hub, registry, var_dir):
    create_identities(registry, "d", "m")
    old = os.umask(0o022)
    try:
        running = simulator_control.start("d", "m", events_url="")
    finally:
        os.umask(old)

    assert running.log_path.parent.stat().st_mode & 0o777 == 0o700
    for path in running.log_path.parent.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
