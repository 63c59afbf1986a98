"""Start and stop a hub: data directory, TLS, the HTTPS and MQTT listeners."""

import json
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from . import certs, files
from .admission import Admission
from .hub import POLICY_PERMISSIONS, Hub
from .identities import new_key
from .mqtt_server import DeviceConnection
from .rest import make_app
from .store import Store

log = logging.getLogger("localhub")

MQTT_PORT = 8883  # the device SDK hard-codes it


@dataclass
class Settings:
    data_dir: Path = Path("var/localhub")
    host: str = "localhost"
    https_port: int = 8443
    mqtt_port: int = MQTT_PORT


def _policies(store: Store) -> dict[str, tuple[str, str]]:
    saved = store.setting("policies")
    policies = json.loads(saved) if saved else {}
    for name in POLICY_PERMISSIONS:
        if name not in policies:
            policies[name] = [new_key(), new_key()]
    store.set_setting("policies", json.dumps(policies))
    return {name: tuple(keys) for name, keys in policies.items()}


def service_connection_string(host: str, port: int, policy: str, key: str) -> str:
    return f"HostName={host}:{port};SharedAccessKeyName={policy};SharedAccessKey={key}"


@dataclass
class LocalHub:
    """A running hub. ``await LocalHub.start(settings)``, then ``await hub.stop()``."""

    settings: Settings
    hub: Hub
    ca_file: Path
    connection_string: str
    _servers: list = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @classmethod
    async def start(cls, settings: Settings, store_class: type[Store] = Store) -> "LocalHub":
        data_dir = settings.data_dir
        files.private_dir(data_dir)
        ca_file, cert_file, key_file = certs.ensure(data_dir, settings.host)
        store = store_class(data_dir / "hub.sqlite3")
        policies = _policies(store)
        hub = Hub(store, settings.host, settings.https_port, policies)
        conn_str = service_connection_string(
            settings.host, settings.https_port, "iothubowner", policies["iothubowner"][0]
        )
        files.write_private(data_dir / "connection-string", f"{conn_str}\n".encode())

        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2  # the device SDK speaks only 1.2
        tls.load_cert_chain(cert_file, key_file)

        running = cls(settings, hub, ca_file, conn_str)
        # Each listener caps its own unauthenticated connections (see admission.py).
        https_admission, mqtt_admission = Admission(), Admission()
        try:
            app = make_app(hub, https_admission)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            running._runner = runner
            running._servers.append(
                await https_admission.listen(runner.server, settings.host, settings.https_port, tls)
            )
            running._servers.append(
                await mqtt_admission.listen(
                    lambda: DeviceConnection(hub, mqtt_admission),
                    settings.host,
                    settings.mqtt_port,
                    tls,
                )
            )
        except BaseException:
            await running.stop()
            raise
        return running

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for ident in [*self.hub.devices.values(), *self.hub.all_modules()]:
            if ident.connection is not None:
                ident.connection.close("hub stopping")
        if self._runner is not None:
            await self._runner.cleanup()
        await self.hub.save_connection_times()
        await self.hub.store.drain()
        self.hub.store.close()
