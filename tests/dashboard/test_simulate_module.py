"""``manage.py simulate_module``, run as a user runs it (its own process), against a localhub."""

import json
import os
import signal
import subprocess
import sys

import pytest
from support import REPO, Lines, create_identities, desired, wait_for

from devices.simulator import acknowledgement

# The line reader of the examples' tests: waits for output with a deadline.


def start(localhub, *args) -> tuple[subprocess.Popen, Lines]:
    """The command as a user runs it; events only printed (``--events-url=``): handing them to
    a web app is tested in test_live_events.py."""
    process = subprocess.Popen(
        [sys.executable, "manage.py", "simulate_module", "--events-url=", *args],
        cwd=REPO,
        env={
            **os.environ,
            "IOTHUB_CONNECTION_STRING": "",
            "IOTHUB_CA_FILE": "",
            "LOCALHUB_DIR": str(localhub.settings.data_dir),
            # Its lock (one simulator per module) in this test's own folder.
            "IOTADMIN_VAR_DIR": str(localhub.settings.data_dir.parent / "var"),
            "PYTHONUNBUFFERED": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, Lines(process.stdout)


def next_event(lines: Lines, type_: str, timeout: float = 15) -> dict:
    return json.loads(lines.wait_for(f'{{"type": "{type_}"', timeout))


@pytest.fixture
def simulator(dashboard_hub, registry):
    """The simulator running for d/m, once it has said module.connected; stopped afterwards."""
    create_identities(registry, "d", "m")
    process, lines = start(dashboard_hub, "d", "m")
    yield process, lines
    if process.poll() is None:
        process.kill()
        process.wait(10)


def reported(registry) -> dict:
    return registry.get_module_twin("d", "m").properties.reported


def test_connects_and_prints_module_connected_with_the_twin(simulator):
    _, lines = simulator
    event = next_event(lines, "module.connected")
    assert (event["device_id"], event["module_id"]) == ("d", "m")
    assert event["at"].endswith("Z")
    assert "desired" in event["patch"]


def test_a_desired_change_is_printed_then_acknowledged_in_reported(simulator, registry):
    _, lines = simulator
    next_event(lines, "module.connected")
    twin = registry.update_module_twin("d", "m", desired({"telemetryInterval": 122}), "*")
    version = twin.properties.desired["$version"]

    received = next_event(lines, "twin.desired_received")
    assert received["version"] == version
    assert received["patch"]["telemetryInterval"] == 122
    sent = next_event(lines, "twin.reported_sent")
    ack = {"value": 122, "ac": 200, "ad": "applied", "av": version}
    assert sent["patch"] == {"telemetryInterval": ack}
    assert sent["version"] == reported(registry)["$version"]
    assert reported(registry)["telemetryInterval"] == ack


def test_current_desired_properties_are_acknowledged_at_startup(dashboard_hub, registry):
    create_identities(registry, "d", "m")
    twin = registry.update_module_twin("d", "m", desired({"telemetryInterval": 5}), "*")
    process, lines = start(dashboard_hub, "d", "m")
    try:
        next_event(lines, "module.connected")
        sent = next_event(lines, "twin.reported_sent")
        assert sent["patch"]["telemetryInterval"]["av"] == twin.properties.desired["$version"]
    finally:
        process.kill()
        process.wait(10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_on(sig, simulator):
    process, lines = simulator
    next_event(lines, "module.connected")
    process.send_signal(sig)
    assert process.wait(10) == 0
    assert json.loads(lines.all()[-1])["type"] == "module.disconnected"
    assert "Traceback" not in process.stderr.read()


def test_an_unknown_module_ends_in_one_line_without_traceback(dashboard_hub, registry):
    create_identities(registry, "d")
    process, lines = start(dashboard_hub, "d", "nope")
    assert process.wait(30) != 0
    assert lines.all() == []
    error = process.stderr.read().strip()
    assert "Traceback" not in error
    assert len(error.splitlines()) == 1
    assert "d/nope" in error


def test_a_second_simulator_for_the_same_module_is_refused(simulator, dashboard_hub):
    first, lines = simulator
    next_event(lines, "module.connected")
    second, second_lines = start(dashboard_hub, "d", "m")
    assert second.wait(30) == 1
    assert second_lines.all() == []
    assert second.stderr.read().strip() == (
        f"CommandError: A simulator already runs for d/m (pid {first.pid})."
    )
    assert first.poll() is None  # the first one goes on


def test_reconnects_after_the_hub_restarts_and_still_receives_changes(simulator, registry,
                                                                      localhub):  # fmt: skip
    _, lines = simulator
    next_event(lines, "module.connected")
    localhub.restart()
    next_event(lines, "module.disconnected")
    next_event(lines, "module.connected", timeout=20)
    registry.update_module_twin("d", "m", desired({"telemetryInterval": 7}), "*")
    assert next_event(lines, "twin.desired_received")["patch"]["telemetryInterval"] == 7
    wait_for(lambda: reported(registry)["telemetryInterval"]["value"] == 7, what="the ack")
    assert all(json.loads(line) for line in lines.seen)  # SDK warnings go to stderr only


def test_connects_with_the_connection_string_it_is_given(dashboard_hub, registry):
    keys = create_identities(registry, "d", "m")
    connection_string = dashboard_hub.device_connection_string("d", keys["m"], "m")
    registry.delete_module("d", "m")  # not read from the hub: the string is used as given
    registry.create_module_with_sas("d", "m", None, keys["m"], None)
    process, lines = start(dashboard_hub, "d", "m", "--connection-string", connection_string)
    try:
        assert next_event(lines, "module.connected")["module_id"] == "m"
    finally:
        process.kill()
        process.wait(10)


def test_acknowledgement_skips_metadata_and_removes_deleted_properties():
    patch = {"a": 1, "b": None, "$version": 4}
    assert acknowledgement(patch) == {
        "a": {"value": 1, "ac": 200, "ad": "applied", "av": 4},
        "b": None,
    }
