"""A live module page stops the moment its session ends: logging out in another tab of the
same browser closes its websocket (served by daphne), and the page says why."""

from browser_support import log_in
from playwright.sync_api import expect
from support import create_identities

DEVICE, MODULE = "sensor-1", "thermo"


def test_logging_out_in_another_tab_ends_the_live_page(page, live_dashboard, viewer, registry):
    create_identities(registry, DEVICE, MODULE)
    log_in(page, viewer.username)
    page.goto(f"/devices/{DEVICE}/modules/{MODULE}/")
    status = page.locator("#live-status")
    expect(status).to_have_text("Live")

    other_tab = page.context.new_page()
    other_tab.goto("/")
    other_tab.get_by_role("button", name="Log out").click()
    expect(other_tab.get_by_role("heading", name="Log in")).to_be_visible()

    expect(status).to_have_text(
        "Disconnected: your session has ended. Reload the page to log in again."
    )
