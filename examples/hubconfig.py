"""Where the examples find their hub: Azure through the environment, or a local hub's files.

- ``IOTHUB_CONNECTION_STRING`` set: that service connection string (an IoT Hub in Azure, whose
  certificate the system already trusts).
- Otherwise the data directory of a local hub started with ``python -m localhub``:
  ``$LOCALHUB_DIR``, by default ``var/localhub`` in the repository. Its ``connection-string``
  file gives the service connection string and its ``ca.pem`` is the certificate to trust.
"""

import os
import sys
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from azure.iot.device.exceptions import ClientError, ConnectionFailedError, CredentialError
from azure.iot.hub import IoTHubRegistryManager
from msrest.exceptions import ClientRequestError, HttpOperationError

DEVICE_ID = "myFirstDevice"
MODULE_ID = "myFirstModule"

MODULE_ENV = "IOTHUB_MODULE_CONNECTION_STRING"

REPOSITORY = Path(__file__).resolve().parent.parent


class HubConfigError(Exception):
    """The examples cannot go on; the message tells the user what to do."""


@dataclass
class HubConfig:
    connection_string: str
    ca_file: Path | None  # None: trust the system's certificates (Azure)

    @property
    def host_name(self) -> str:
        """The hub's name for device and module connection strings: HostName without a port."""
        return _fields(self.connection_string)["HostName"].rsplit(":", 1)[0]

    @property
    def ca_pem(self) -> str | None:
        """The certificate text the device SDK takes as ``server_verification_cert``."""
        return self.ca_file.read_text() if self.ca_file else None

    def registry_manager(self) -> IoTHubRegistryManager:
        manager = IoTHubRegistryManager.from_connection_string(self.connection_string)
        if self.ca_file:
            manager.protocol.config.connection.verify = str(self.ca_file)
        return manager

    def module_connection_string(self, device_id: str, module_id: str, key: str) -> str:
        return (
            f"HostName={self.host_name};DeviceId={device_id};ModuleId={module_id};"
            f"SharedAccessKey={key}"
        )


def _fields(connection_string: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in connection_string.split(";") if "=" in part)


def local_hub_dir() -> Path:
    return Path(os.environ.get("LOCALHUB_DIR") or REPOSITORY / "var" / "localhub")


def load() -> HubConfig:
    """The hub to use, or HubConfigError saying how to get one."""
    connection_string = os.environ.get("IOTHUB_CONNECTION_STRING", "").strip()
    if connection_string:
        return HubConfig(connection_string, ca_file=None)
    connection_string_file = local_hub_dir() / "connection-string"
    ca_file = local_hub_dir() / "ca.pem"
    for path in (connection_string_file, ca_file):
        if not path.is_file():
            raise HubConfigError(
                f"No hub found: {path} does not exist.\n"
                "Start a local hub in another terminal with `python -m localhub` (or `make run`),"
                " or set IOTHUB_CONNECTION_STRING to your IoT Hub's service connection string."
            )
    return HubConfig(connection_string_file.read_text().strip(), ca_file)


def run(main) -> None:
    """Run ``main()`` and exit with its status; hub problems end in one line, not a traceback."""
    try:
        status = main()
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C before the work began: nothing to clean up, nothing to say
    except HubConfigError as e:
        sys.exit(str(e))
    except ClientRequestError as e:
        sys.exit(f"Cannot reach the hub {_host_name()}: {_reason(e)}")
    except HttpOperationError as e:
        message = f"The hub refused the request: {e.response.status_code} {e.response.text}"
        if e.response.status_code == HTTPStatus.NOT_FOUND:
            message += "\nCreate the device and module first: python examples/create_identities.py"
        sys.exit(message)
    except (ConnectionFailedError, CredentialError, ClientError) as e:
        sys.exit(f"The module cannot connect to the hub {_host_name(MODULE_ENV)}: {_reason(e)}")
    sys.exit(status)


def _host_name(env: str = "IOTHUB_CONNECTION_STRING") -> str:
    """The HostName of the connection string in ``env``, or else of the hub in use."""
    try:
        connection_string = os.environ.get(env, "").strip() or load().connection_string
    except HubConfigError:
        return "(none configured)"
    return _fields(connection_string).get("HostName", "")


def _reason(error: BaseException) -> str:
    """The innermost error's message on one line, e.g. "[Errno 111] Connection refused"."""
    while True:
        inner = (
            getattr(error, "inner_exception", None)  # msrest
            or getattr(error, "reason", None)  # urllib3's MaxRetryError
            or error.__cause__
            or (error.args[0] if error.args else None)  # requests wraps urllib3's error
        )
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())
