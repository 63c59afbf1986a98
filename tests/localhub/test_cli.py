"""``python -m localhub``: first start, signals, restarts, side-by-side hubs, errors."""

import ipaddress
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from azure.iot.device import IoTHubDeviceClient
from conftest import _free_loopback_address
from cryptography import x509
from msrest.exceptions import HttpOperationError
from support import LocalhubProcess, wait_for


class Cli(LocalhubProcess):
    """One ``python -m localhub`` process, with its output collected as it comes."""

    def __init__(self, data_dir: Path, host: str):
        super().__init__(data_dir, host)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers: list[threading.Thread] = []

    def start(self) -> "Cli":
        self.stdout, self.stderr = [], []
        self.spawn(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()
        return self

    @staticmethod
    def _collect(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.stdout)

    @property
    def errors(self) -> str:
        return "".join(self.stderr)

    def wait_ready(self) -> "Cli":
        def ready():
            if self.process.poll() is not None:
                pytest.fail(f"localhub exited with {self.process.returncode}:\n{self.errors}")
            return "SharedAccessKey=" in self.output

        wait_for(ready, timeout=30, what="localhub to print its connection string")
        return self

    def exit_code(self, timeout: float = 10) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"localhub still running after {timeout}s")
        for reader in self._readers:  # what the process wrote last
            reader.join(5)
        return code

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int:
        self.process.send_signal(sig)
        return self.exit_code(timeout)


@pytest.fixture
def clis(tmp_path):
    """Makes CLI hubs, each on a free loopback address of its own; kills any left running."""
    made = []

    def make(name: str = "hub", host: str | None = None) -> Cli:
        cli = Cli(tmp_path / name, host or _free_loopback_address())
        made.append(cli)
        return cli

    yield make
    for cli in made:
        cli.kill()


@pytest.fixture
def cli(clis):
    return clis()


def test_first_start_creates_the_ca_and_connection_string_and_prints_both(cli):
    assert not cli.data_dir.exists()

    cli.start().wait_ready()

    ca_pem = (cli.data_dir / "ca.pem").read_text()
    assert ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    connection_string = cli.connection_string
    assert re.fullmatch(
        rf"HostName={re.escape(cli.host)}:8443;SharedAccessKeyName=iothubowner;"
        r"SharedAccessKey=[A-Za-z0-9+/]{43}=",
        connection_string,
    )
    assert ca_pem in cli.output
    assert connection_string in cli.output
    registry = cli.registry_manager()
    registry.create_device_with_sas("d1", None, None, "enabled")
    assert registry.get_device("d1").status == "enabled"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_hub_cleanly_and_a_restart_keeps_its_ca_and_keys(cli, sig):
    cli.start().wait_ready()
    ca_pem = (cli.data_dir / "ca.pem").read_text()
    connection_string = cli.connection_string
    key = (
        cli.registry_manager()
        .create_device_with_sas("d1", None, None, "enabled")
        .authentication.symmetric_key.primary_key
    )

    started = time.monotonic()
    assert cli.stop(sig) == 0
    assert time.monotonic() - started < 5
    assert "stopping" in cli.output
    assert "Traceback" not in cli.errors

    cli.start().wait_ready()
    assert (cli.data_dir / "ca.pem").read_text() == ca_pem
    assert cli.connection_string == connection_string
    assert cli.registry_manager(connection_string).get_device("d1").device_id == "d1"
    device = IoTHubDeviceClient.create_from_connection_string(
        f"HostName={cli.host};DeviceId=d1;SharedAccessKey={key}",
        server_verification_cert=ca_pem,
        connection_retry=False,
    )
    try:
        device.connect()
        assert device.get_twin()["reported"]["$version"] == 1
    finally:
        device.shutdown()


def test_a_signal_stops_the_hub_while_a_device_is_connected(cli):
    cli.start().wait_ready()
    key = (
        cli.registry_manager()
        .create_device_with_sas("d1", None, None, "enabled")
        .authentication.symmetric_key.primary_key
    )
    device = IoTHubDeviceClient.create_from_connection_string(
        f"HostName={cli.host};DeviceId=d1;SharedAccessKey={key}",
        server_verification_cert=(cli.data_dir / "ca.pem").read_text(),
        connection_retry=False,
    )
    try:
        device.connect()

        assert cli.stop(signal.SIGTERM) == 0
        assert "Traceback" not in cli.errors
        wait_for(lambda: not device.connected, what="the device to see the hub go", timeout=10)
    finally:
        device.shutdown()


def test_two_hubs_side_by_side_serve_independently(clis):
    first = clis("first").start()
    second = clis("second").start()
    first.wait_ready()
    second.wait_ready()
    assert first.host != second.host
    assert first.connection_string != second.connection_string

    first.registry_manager().create_device_with_sas("only-on-first", None, None, "enabled")
    second.registry_manager().create_device_with_sas("only-on-second", None, None, "enabled")

    for cli, mine, theirs in (
        (first, "only-on-first", "only-on-second"),
        (second, "only-on-second", "only-on-first"),
    ):
        registry = cli.registry_manager()
        assert [d.device_id for d in registry.get_devices()] == [mine]
        with pytest.raises(HttpOperationError) as caught:
            registry.get_device(theirs)
        assert caught.value.response.status_code == 404
    # Each hub's keys are its own: the first hub refuses the second hub's owner key.
    foreign_key = second.connection_string.replace(second.host, first.host)
    with pytest.raises(HttpOperationError) as caught:
        first.registry_manager(foreign_key).get_devices()
    assert caught.value.response.status_code == 401


def test_the_server_certificate_names_localhost_loopback_and_the_host(cli):
    cli.start().wait_ready()

    cert = x509.load_pem_x509_certificate((cli.data_dir / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    addresses = san.get_values_for_type(x509.IPAddress)
    for address in ("127.0.0.1", "::1", cli.host):
        assert ipaddress.ip_address(address) in addresses
    ca = x509.load_pem_x509_certificate((cli.data_dir / "ca.pem").read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)


@pytest.mark.parametrize("port", [8443, 8883], ids=["https", "mqtt"])
def test_a_port_in_use_makes_it_exit_with_a_readable_message(cli, port):
    with socket.socket() as taken:
        taken.bind((cli.host, port))
        taken.listen()

        cli.start()
        code = cli.exit_code(timeout=30)

    assert code != 0
    assert "Traceback" not in cli.errors + cli.output
    message = cli.errors.strip().splitlines()[-1]
    assert "localhub could not start" in message
    assert "address already in use" in message.lower() or str(port) in message
