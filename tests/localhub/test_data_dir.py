"""The data directory holds keys, the owner connection string and the database: it is 0700
and its files 0600 whatever the umask, and a looser one is tightened at start."""

import stat
import subprocess

from conftest import _free_loopback_address
from support import HubProcess, wait_for

PRIVATE_FILES = [
    "hub.sqlite3",
    "hub.sqlite3-wal",
    "hub.sqlite3-shm",
    "ca.pem",
    "ca-key.pem",
    "server.pem",
    "server-key.pem",
    "connection-string",
]


def modes(data_dir) -> dict[str, str]:
    found = {".": oct(stat.S_IMODE(data_dir.stat().st_mode))}
    for name in PRIVATE_FILES:
        found[name] = oct(stat.S_IMODE((data_dir / name).stat().st_mode))
    return found


PRIVATE = {".": oct(0o700), **dict.fromkeys(PRIVATE_FILES, oct(0o600))}


def test_a_new_data_dir_and_its_files_are_private_even_with_umask_0(tmp_path):
    hub = HubProcess(tmp_path / "hub", _free_loopback_address())
    try:
        hub.spawn(umask=0, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(hub.ready, timeout=30, what="the hub process to start")
        hub.registry_manager().create_device_with_sas("d1", None, None, "enabled")

        assert modes(hub.data_dir) == PRIVATE
    finally:
        hub.kill()


def test_a_loose_data_dir_is_tightened_at_start(localhub):
    data_dir = localhub.settings.data_dir
    localhub.stop()
    data_dir.chmod(0o777)
    for path in data_dir.iterdir():
        path.chmod(0o666)

    localhub.start()

    assert modes(data_dir) == PRIVATE
    assert localhub.registry_manager().get_device_registry_statistics().total_device_count == 0
