"""Every kind of page under the strict Content-Security-Policy, in headless Chromium, as an
admin: the browser refuses nothing (no inline script, event handler or style is left), the
live feed's websocket connects, and regenerating a key still asks first."""

import re

import pytest
from browser_support import log_in
from playwright.sync_api import expect
from support import create_identities

DEVICE, MODULE = "sensor-1", "thermo"
DEVICE_PAGE = f"/devices/{DEVICE}/"
MODULE_PAGE = f"{DEVICE_PAGE}modules/{MODULE}/"
PAGES = [
    "/",
    "/?hub_query=tags.location%20%3D%20%27lab%27",
    DEVICE_PAGE,
    MODULE_PAGE,  # with its live feed
    f"{DEVICE_PAGE}twin/json/",
    f"{DEVICE_PAGE}twin/desired/",
    f"{MODULE_PAGE}twin/json/",
    f"{MODULE_PAGE}twin/desired/",
    "/devices/new/",
    f"{DEVICE_PAGE}modules/new/",
    f"{DEVICE_PAGE}delete/",
    "/admin/",
    "/admin/devices/device/",
    "/admin/auth/user/",
    "/admin/axes/accessattempt/",
]
# Reported by the browser for whatever the policy refuses (blockedURI "inline" for inline
# scripts, handlers and styles); Playwright's bindings and init scripts are not subject to it.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => window.reportViolation(
  `${e.violatedDirective} ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`));
"""


def error(message) -> bool:
    # The app has no icon: the browser's own request for one is not the page's.
    return message.type == "error" and not message.location["url"].endswith("/favicon.ico")


@pytest.fixture
def refused(page):
    """What the browser refused or failed on, on any page this test opens."""
    found = []
    page.expose_function("reportViolation", lambda text: found.append(f"{page.url}: {text}"))
    page.add_init_script(REPORT_VIOLATIONS)
    page.on("console", lambda m: error(m) and found.append(f"{page.url}: {m.text}"))
    page.on("pageerror", lambda error: found.append(f"{page.url}: {error}"))
    return found


@pytest.fixture
def superuser(make_user):
    user = make_user("admin")
    user.is_staff = user.is_superuser = True  # the Django admin's pages too
    user.save()
    return user


def test_no_page_breaks_the_policy(page, refused, superuser, registry):
    create_identities(registry, DEVICE, MODULE)
    log_in(page, superuser.username)  # the login page is checked too

    for path in PAGES:
        response = page.goto(path)
        assert response.status == 200, path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        if path == MODULE_PAGE:
            expect(page.locator("#live-status")).to_have_text("Live")
        page.wait_for_load_state("networkidle")
    # htmx at work: the search form swaps the results in.
    page.goto("/")
    page.get_by_label("Device id contains").fill("sensor")
    expect(page).to_have_url(re.compile(r"\?search=sensor"))

    assert refused == []


def test_regenerating_a_key_asks_first(page, refused, superuser, registry):
    old_key = create_identities(registry, DEVICE)[""]
    log_in(page, superuser.username)
    page.goto(DEVICE_PAGE)
    asked = []

    def answer(dialog, accept):
        asked.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    page.get_by_role("button", name="Regenerate primary key").click()
    page.wait_for_load_state("networkidle")
    assert asked == ["Anything using the old key will no longer connect. Regenerate it?"]
    assert registry.get_device(DEVICE).authentication.symmetric_key.primary_key == old_key

    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    page.get_by_role("button", name="Regenerate primary key").click()
    expect(page.get_by_role("status")).to_contain_text(f"New primary key for {DEVICE}")
    assert len(asked) == 2
    assert registry.get_device(DEVICE).authentication.symmetric_key.primary_key != old_key
    assert refused == []
