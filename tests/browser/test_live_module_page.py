"""The module page live, in headless Chromium: an operator starts the simulated module and
changes desired telemetryInterval in the inline form; without reloading, they and a viewer in
another browser see the module receive it and acknowledge it, and the twin view follow. Then
the pages say when their websocket drops, and reconnect by themselves."""

import json

import pytest
from browser_support import TIMEOUT_MS, log_in
from playwright.sync_api import expect
from support import create_identities

DEVICE, MODULE = "myFirstDevice", "myFirstModule"
PAGE = f"/devices/{DEVICE}/modules/{MODULE}/"
INTERVAL = 45
START_TIMEOUT_MS = 30_000  # a simulator process starts, then connects to the hub
RECONNECT_TIMEOUT_MS = 30_000  # the server restarts, then the page retries (backoff up to 10 s)


@pytest.fixture
def viewer_page(page, live_dashboard):
    """A second browser context: another person's browser, with cookies of its own."""
    context = page.context.browser.new_context(base_url=live_dashboard.url)
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def open_module_page(page, username):
    log_in(page, username)
    page.goto(PAGE)
    expect(page.locator("#live-status")).to_have_text("Live")
    page.evaluate("window.notReloaded = true")  # gone if the page ever reloads


def events(page, kind):
    return page.locator(f'#event-feed li.event[data-type="{kind}"]')


def patch_of(item) -> dict:
    return json.loads(item.locator("pre").inner_text())


def test_operator_and_viewer_watch_a_desired_change_arrive_and_be_acknowledged(
    page, viewer_page, live_dashboard, make_user, registry
):
    create_identities(registry, DEVICE, MODULE)
    open_module_page(page, make_user("operator").username)
    open_module_page(viewer_page, make_user("viewer").username)
    expect(viewer_page.locator("#simulator").get_by_role("button")).to_have_count(0)
    expect(viewer_page.locator("#desired")).to_have_count(0)

    # Start the simulated module: the card and the badge follow, on both pages.
    page.locator("#simulator").get_by_role("button", name="Start").click()
    simulator = page.locator("#simulator")
    expect(simulator).to_contain_text("Simulator started", timeout=START_TIMEOUT_MS)
    expect(simulator).to_contain_text("Running")
    for each in (page, viewer_page):
        expect(each.locator("#connection-badge")).to_have_text("Connected")
        expect(events(each, "module.connected")).to_have_count(1)
        expect(each.locator("#simulator")).to_contain_text("Running")

    # Change desired telemetryInterval in the inline form.
    version = registry.get_module_twin(DEVICE, MODULE).properties.desired["$version"] + 1
    card = page.locator("#desired")
    card.get_by_label("New key").fill("telemetryInterval")
    card.get_by_label("Type").last.select_option("number")
    card.get_by_label("Value").last.fill(str(INTERVAL))
    card.get_by_role("button", name="Send changed properties").click()
    expect(card.get_by_role("status")).to_contain_text(f"desired $version is now {version}")

    for each in (page, viewer_page):
        # The module received it ...
        received = events(each, "twin.desired_received")
        expect(received).to_have_count(1)
        expect(received).to_have_attribute("data-version", str(version))
        assert patch_of(received)["telemetryInterval"] == INTERVAL
        # ... then acknowledged it the Plug and Play way: newest first in the feed.
        reported = events(each, "twin.reported_sent")
        expect(reported).to_have_count(1)
        assert patch_of(reported) == {
            "telemetryInterval": {"value": INTERVAL, "ac": 200, "ad": "applied", "av": version}
        }
        kinds = each.locator("#event-feed li.event").evaluate_all(
            "items => items.map(item => item.dataset.type)"
        )
        assert kinds == ["twin.reported_sent", "twin.desired_received", "module.connected"]
        # The twin view follows: the reported value, and no delta left.
        twin = each.locator("#twin")
        expect(twin.locator("dd.desired-version")).to_have_text(str(version))
        row = twin.locator("table.twin-properties").get_by_role("row", name="telemetryInterval")
        expect(row).to_contain_text(f'"value": {INTERVAL}')
        expect(twin.locator(".no-delta")).to_be_visible()
        assert each.evaluate("window.notReloaded") is True
    # The operator's page shows its audit log as it is now: the start and the write.
    audit = page.locator("#audit")
    expect(audit).to_contain_text("simulator.started")
    expect(audit).to_contain_text("twin.updated")

    # Stop it: the card and the badge follow.
    simulator.get_by_role("button", name="Stop").click()
    expect(simulator).to_contain_text("Not running")
    for each in (page, viewer_page):
        expect(each.locator("#connection-badge")).to_have_text("Disconnected")
        expect(each.locator("#simulator")).to_contain_text("Not running")

    # The server goes away: the pages say so, and are live again once it is back.
    live_dashboard.stop()
    for each in (page, viewer_page):
        expect(each.locator("#live-status")).to_contain_text("Disconnected: reconnecting")
    live_dashboard.start()
    for each in (page, viewer_page):
        expect(each.locator("#live-status")).to_have_text("Live", timeout=RECONNECT_TIMEOUT_MS)
        assert each.evaluate("window.notReloaded") is True
        # The events replayed on reconnecting are not shown twice: connected, received,
        # reported, disconnected.
        expect(each.locator("#event-feed li.event")).to_have_count(4)


def test_an_edit_made_on_the_editor_page_shows_its_events_back_on_the_module_page(
    page, make_user, registry
):
    """The module acknowledges within milliseconds, before the module page the editor
    redirects to has loaded: the page shows what happened just before it opened."""
    create_identities(registry, DEVICE, MODULE)
    open_module_page(page, make_user("operator").username)
    page.locator("#simulator").get_by_role("button", name="Start").click()
    expect(page.locator("#simulator")).to_contain_text("Running", timeout=START_TIMEOUT_MS)

    page.get_by_role("link", name="Edit tags and desired as JSON").click()
    page.get_by_label("Desired properties").fill('{"telemetryInterval": 12}')
    page.get_by_role("button", name="Send to the hub").click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(MODULE)
    received = events(page, "twin.desired_received")
    expect(received).to_have_count(1)
    assert patch_of(received)["telemetryInterval"] == 12
    reported = events(page, "twin.reported_sent")
    expect(reported).to_have_count(1)
    assert patch_of(reported)["telemetryInterval"]["value"] == 12
    twin = page.locator("#twin table.twin-properties")
    expect(twin.get_by_role("row", name="telemetryInterval")).to_contain_text('"value": 12')
