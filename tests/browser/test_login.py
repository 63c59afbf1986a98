"""Logging in through the real login page, in headless Chromium."""

from browser_support import log_in
from playwright.sync_api import expect


def test_an_operator_logs_in_and_sees_the_device_list(page, live_dashboard, operator):
    log_in(page, operator.username)

    assert page.url == f"{live_dashboard.url}/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Devices")
    expect(page.locator("header")).to_contain_text("operator-user")
    expect(page.locator("header .role")).to_have_text("operator")
