"""The tutorial in examples/, run exactly as examples/README.md shows, against `python -m localhub`.

The hub runs as its own process on a loopback address of its own (not localhost, which a
developer's `make run` may hold) and the scripts find it through LOCALHUB_DIR.
"""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _free_loopback_address
from support import REPO, Lines, registry_manager_for, wait_for

CREATE = "examples/create_identities.py"
UPDATE = "examples/update_module_twin.py"
LISTENER = "examples/module_twin_listener.py"
HUB_ENV = ("IOTHUB_CONNECTION_STRING", "IOTHUB_MODULE_CONNECTION_STRING", "LOCALHUB_DIR")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    """The data directory of a `python -m localhub` process serving on a free loopback address."""
    data_dir = tmp_path_factory.mktemp("examples") / "hub"
    command = ["-m", "localhub", "--host", _free_loopback_address(), "--data-dir", str(data_dir)]
    with open(data_dir.parent / "localhub.log", "w") as log:
        hub = subprocess.Popen(
            [sys.executable, *command],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            Lines(hub.stdout).wait_for("HostName=", timeout=30)
            yield data_dir
        finally:
            stop(hub)


def example_env(hub_dir: Path, **extra: str) -> dict[str, str]:
    """This process's environment with the hub settings replaced: LOCALHUB_DIR=hub_dir."""
    env = {name: value for name, value in os.environ.items() if name not in HUB_ENV}
    return {**env, "LOCALHUB_DIR": str(hub_dir), **extra}


def run_example(script: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python examples/….py`` from the repository root, as examples/README.md shows."""
    return subprocess.run(
        [sys.executable, script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_listener(hub_dir: Path) -> tuple[subprocess.Popen, Lines]:
    """The listener as a user starts it, with its stdout and stderr as one stream of lines."""
    listener = subprocess.Popen(
        [sys.executable, LISTENER],
        cwd=REPO,
        env=example_env(hub_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return listener, Lines(listener.stdout)


def test_create_identities_prints_both_primary_keys_and_the_same_ones_when_run_again(hub_dir):
    first = run_example(CREATE, example_env(hub_dir))
    again = run_example(CREATE, example_env(hub_dir))

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    keys = re.findall(r"primary key: (\S+)", first.stdout)
    assert re.findall(r"primary key: (\S+)", again.stdout) == keys
    rm = registry_manager_for(hub_dir)
    assert keys == [
        rm.get_device("myFirstDevice").authentication.symmetric_key.primary_key,
        rm.get_module("myFirstDevice", "myFirstModule").authentication.symmetric_key.primary_key,
    ]


def test_listener_prints_the_desired_patch_and_reports_the_interval_back(hub_dir):
    assert run_example(CREATE, example_env(hub_dir)).returncode == 0
    listener, output = start_listener(hub_dir)
    try:
        output.wait_for("Listening as myFirstDevice/myFirstModule")

        update = run_example(UPDATE, example_env(hub_dir))
        assert update.returncode == 0, update.stderr
        assert '"telemetryInterval": 122' in update.stdout

        patch = output.wait_for("Desired properties patch: ")
        assert json.loads(patch.split(": ", 1)[1])["telemetryInterval"] == 122
        rm = registry_manager_for(hub_dir)

        def reported_interval_is_122():
            twin = rm.get_module_twin("myFirstDevice", "myFirstModule")
            return twin.properties.reported.get("telemetryInterval") == 122

        wait_for(reported_interval_is_122, timeout=10, what="telemetryInterval 122 reported")
    finally:
        stop(listener)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_listener_stops_cleanly_with_exit_code_0_on(sig, hub_dir):
    assert run_example(CREATE, example_env(hub_dir)).returncode == 0
    listener, output = start_listener(hub_dir)
    try:
        output.wait_for("Listening as")
        listener.send_signal(sig)
        assert listener.wait(15) == 0
        lines = output.all()
        assert lines[-1] == "Stopped."
        assert not [line for line in lines if "Traceback" in line]
    finally:
        stop(listener)


@pytest.mark.parametrize("script", [CREATE, UPDATE, LISTENER])
def test_without_a_hub_each_example_exits_1_saying_how_to_start_one(script, tmp_path):
    result = run_example(script, example_env(tmp_path / "no-hub-here"))

    assert result.returncode == 1
    assert "python -m localhub" in result.stderr
    assert "IOTHUB_CONNECTION_STRING" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_hub_is_reported_in_one_line(hub_dir, tmp_path):
    # A hub's files, but for an address where nothing listens.
    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "ca.pem").write_text((hub_dir / "ca.pem").read_text())
    connection_string = (hub_dir / "connection-string").read_text()
    host = connection_string.split(";")[0].removeprefix("HostName=").split(":")[0]
    (gone / "connection-string").write_text(
        connection_string.replace(host, _free_loopback_address())
    )

    result = run_example(CREATE, example_env(gone))

    assert result.returncode == 1
    assert result.stderr.startswith("Cannot reach the hub")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreachable_module_endpoint_is_reported_in_one_line(tmp_path):
    module = f"HostName={_free_loopback_address()};DeviceId=d;ModuleId=m;SharedAccessKey=a2V5"
    env = example_env(tmp_path / "no-hub-here", IOTHUB_MODULE_CONNECTION_STRING=module)

    result = run_example(LISTENER, env)

    assert result.returncode == 1
    assert result.stderr.startswith("The module cannot connect to the hub")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
