"""An admin uses the pages in headless Chromium while localhub (a real process) hangs
(SIGSTOP) and then dies (SIGKILL): the busy button that cannot be sent twice, the banner,
the last known identity and twin."""

import os
import signal
from pathlib import Path

import pytest
from browser_support import DashboardServer, chromium_page, log_in
from playwright.sync_api import expect
from support import create_identities, desired

from devices import mirror, simulator_control


@pytest.fixture
def server(transactional_db, dashboard_hub_process, tmp_path):
    running = DashboardServer(dashboard_hub_process.data_dir, tmp_path).start()
    yield running
    running.stop()
    simulator_control.stop_all(Path(running.env["IOTADMIN_VAR_DIR"]))
    print(f"-- dashboard server log --\n{running.log}")


def test_pages_keep_working_while_the_hub_hangs_and_dies(
    server, dashboard_hub_process, admin, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ORM beside Playwright
    registry = dashboard_hub_process.registry_manager()
    create_identities(registry, "sensor-1", "thermo")
    registry.update_twin("sensor-1", desired({"interval": 30}), "*")
    mirror.sync_hub()  # what the dashboard last read

    with chromium_page(server.url) as page:
        log_in(page, admin.username)
        page.goto("/devices/sensor-1/")
        expect(page.locator("#last-known")).to_have_count(0)
        posts = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)

        os.kill(dashboard_hub_process.process.pid, signal.SIGSTOP)
        # Clicked twice, as an impatient operator does: the button says it is busy at once,
        # and the second click sends nothing (clicked from the page's own script: Playwright
        # would wait for the first click's navigation, which the hung hub holds for 5 s).
        busy = page.evaluate(
            """() => {
                const button = [...document.querySelectorAll("button")]
                    .find((b) => b.textContent.trim() === "Disable");
                button.click();
                const busy = button.getAttribute("aria-busy");
                button.click();
                return busy;
            }"""
        )
        assert busy == "true"
        page.wait_for_load_state("domcontentloaded")
        expect(page.locator("#hub-health")).to_contain_text(
            "The hub is not answering", timeout=20_000
        )
        assert len(posts) == 1, posts
        expect(page.locator("main")).to_contain_text("did not answer in time")

        page.goto("/devices/sensor-1/")
        expect(page.locator("#last-known")).to_contain_text("Last known state, read from the hub")
        expect(page.locator("#modules")).to_contain_text("thermo")
        expect(page.locator("#twin")).to_contain_text("interval")
        expect(page.get_by_role("button", name="Reveal")).to_have_count(0)
        page.goto("/")
        expect(page.locator("#hub-health")).to_contain_text("not answering (since")

        os.kill(dashboard_hub_process.process.pid, signal.SIGCONT)
        dashboard_hub_process.kill()
        for _ in range(10):  # the hub is asked again within RETRY_SECONDS
            page.goto("/devices/sensor-1/")
            if "cannot be reached" in page.locator("#last-known").inner_text():
                break
            page.wait_for_timeout(1000)
        expect(page.locator("#last-known")).to_contain_text("cannot be reached")
        expect(page.locator("#identity")).to_contain_text("enabled")  # nothing was changed
