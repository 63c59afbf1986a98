"""Make docs/module-page.png, the README's picture of the module page.

    .venv/bin/python docs/screenshot.py [output.png]

Everything is temporary and thrown away afterwards: a localhub (on localhost, so ports 8883
and a free HTTPS port must be free there), the dashboard's database and an admin user. The
page is walked in headless Chromium as in tests/browser/test_tutorial.py, reusing its harness
(tests/browser_support.py): create myFirstDevice and myFirstModule, connect the module with
its revealed connection string and report telemetryInterval 60, set the desired value to 122,
reveal the primary string again and take the picture (1280 px wide, the whole page).
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
HUB_HOST = "localhost"
WIDTH = 1280
DEVICE, MODULE = "myFirstDevice", "myFirstModule"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_hub(data_dir: Path, https_port: int) -> subprocess.Popen:
    if port_open(HUB_HOST, 8883):
        sys.exit(f"Port 8883 on {HUB_HOST} is taken (is `make run` running?); stop it first.")
    hub = subprocess.Popen(
        [
            *(sys.executable, "-m", "localhub", "--data-dir", str(data_dir)),
            *("--host", HUB_HOST, "--https-port", str(https_port)),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (port_open(HUB_HOST, https_port) and port_open(HUB_HOST, 8883)):
        if hub.poll() is not None or time.monotonic() > deadline:
            hub.kill()
            sys.exit("localhub did not start")
        time.sleep(0.1)
    return hub


def set_up_django(work: Path) -> str:
    """Settings pointing at the temporary hub and database; returns the admin's password."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="iotadmin.settings",
        IOTADMIN_VAR_DIR=str(work / "var"),  # the same var dir DashboardServer gives the server
        LOCALHUB_DIR=str(work / "hub"),
        IOTHUB_CONNECTION_STRING="",
        IOTHUB_CA_FILE="",
        DATABASE_URL=f"sqlite:///{work / 'iotadmin.sqlite3'}",
        # Playwright's sync API runs an event loop in this thread; the ORM is only touched
        # before it starts and when chromium_page closes the connections.
        DJANGO_ALLOW_ASYNC_UNSAFE="true",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from devices.management.commands.ensure_admin import ensure_admin

    return ensure_admin("admin").password


def walk_and_shoot(page, password: str, ca_pem: str, output: Path) -> None:
    from azure.iot.device import IoTHubModuleClient
    from browser_support import log_in
    from playwright.sync_api import expect

    log_in(page, "admin", password)
    page.get_by_role("link", name="New device").click()
    page.get_by_label("Device id").fill(DEVICE)
    page.get_by_role("button", name="Create device").click()
    page.get_by_role("link", name="New module").click()
    page.get_by_label("Module id").fill(MODULE)
    page.get_by_role("button", name="Create module").click()
    primary = page.get_by_role("group", name="Primary connection string")

    def reveal() -> str:
        primary.get_by_role("button", name="Reveal").click()
        expect(primary.get_by_role("button", name="Copy")).to_be_visible()
        return primary.locator("code").inner_text()

    # The module connects and reports the interval it runs with.
    client = IoTHubModuleClient.create_from_connection_string(
        reveal(), server_verification_cert=ca_pem
    )
    client.connect()
    try:
        client.patch_twin_reported_properties({"telemetryInterval": 60})
        # The operator asks for 122: desired and reported now differ (the delta).
        page.get_by_role("link", name="Edit desired properties").click()
        page.get_by_label("New key").fill("telemetryInterval")
        page.get_by_label("Type").select_option("number")
        page.get_by_label("Value").fill("122")
        page.get_by_role("button", name="Send changed properties").click()
        expect(page.locator("#twin .delta-list")).to_contain_text("telemetryInterval")
        reveal()
        page.mouse.move(0, 0)
        page.screenshot(path=str(output), full_page=True)
    finally:
        client.shutdown()


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "module-page.png"
    with tempfile.TemporaryDirectory(prefix="iotadmin-screenshot-") as tmp:
        work = Path(tmp)
        from browser_support import DashboardServer, chromium_page, free_port

        hub = start_hub(work / "hub", free_port())
        try:
            password = set_up_django(work)
            server = DashboardServer(work / "hub", work).start()
            try:
                with chromium_page(server.url) as page:
                    page.set_viewport_size({"width": WIDTH, "height": 800})
                    ca_pem = (work / "hub" / "ca.pem").read_text()
                    walk_and_shoot(page, password, ca_pem, output)
            finally:
                server.stop()
        finally:
            hub.terminate()
            hub.wait(10)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
