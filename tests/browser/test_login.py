"""Logging in through the real login page, in headless Chromium."""

from axes.models import AccessAttempt
from browser_support import PASSWORD, log_in
from playwright.sync_api import expect


def test_an_operator_logs_in_and_sees_the_device_list(page, live_dashboard, operator):
    log_in(page, operator.username)

    assert page.url == f"{live_dashboard.url}/"
    expect(page.get_by_role("heading", level=1)).to_have_text("Devices")
    expect(page.locator("header")).to_contain_text("operator-user")
    expect(page.locator("header .role")).to_have_text("operator")


def test_after_twenty_wrong_passwords_the_right_one_is_refused_with_the_lockout_page(
    page, live_dashboard, operator
):
    # The first 19 as axes records them (each typed would cost the server a password hash,
    # seconds on a busy machine); the 20th is typed.
    AccessAttempt.objects.create(
        username=operator.username,
        ip_address="127.0.0.1",
        path_info="/login/",
        failures_since_start=19,
        **dict.fromkeys(["user_agent", "http_accept", "get_data", "post_data"], ""),
    )
    for password in ["not my password", PASSWORD]:
        page.goto("/login/")
        page.get_by_label("User name").fill(operator.username)
        page.get_by_label("Password").fill(password)
        with page.expect_navigation() as navigation:
            page.get_by_role("button", name="Log in").click()

    assert navigation.value.status == 429
    expect(page.get_by_role("heading", level=1)).to_have_text("Logging in is locked")
    expect(page.get_by_role("alert")).to_contain_text("Too many failed logins")
    expect(page.locator("header nav")).to_have_count(0)  # not logged in
