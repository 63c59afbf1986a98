"""The module page's live parts, server side: the twin view it refreshes, the inline desired
form posted with htmx, and the simulated module's card with Start and Stop, against a real
localhub and real simulator processes. (The websocket feed itself: tests/browser.)"""

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pages import etag_on, messages_of, text, url
from support import create_identities, desired, wait_for

from devices import hub, simulator_control
from devices.models import AuditEntry
from devices.views.modules import shared_twin_read

pytestmark = pytest.mark.django_db

DEVICE, MODULE = "sensor-1", "thermo"
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def thermo(dashboard_hub, registry):
    """Device sensor-1 with module thermo, created outside the dashboard."""
    return create_identities(registry, DEVICE, MODULE)[MODULE]


@pytest.fixture
def simulators(settings, tmp_path):
    """Simulators started by a test run under its own var dir, and are stopped after it."""
    settings.VAR_DIR = tmp_path / "var"
    settings.EVENTS_URL = "ws://127.0.0.1:9/ws/ingest/"  # nothing listens there
    yield
    simulator_control.stop_all()


def hub_desired(registry) -> dict:
    section = registry.get_module_twin(DEVICE, MODULE).as_dict()["properties"]["desired"]
    return {k: v for k, v in section.items() if not k.startswith("$")}


def inline_form(client) -> dict:
    """The inline desired form as the module page shows it, as the browser would post it."""
    form = client.get(url("module-detail", DEVICE, MODULE)).context["form"]
    data = {"etag": form["etag"].value(), "base": form["base"].value()}
    management = form.rows.management_form
    data.update({field.html_name: field.value() for field in management})
    for row in form.rows:
        for field in row:
            if field.value() not in (None, False):
                data[field.html_name] = field.value()
    return data


def with_row(data: dict, key: str, value: str, kind: str = "number") -> dict:
    last = int(data["rows-TOTAL_FORMS"]) - 1  # the empty row for a new key
    return {**data, f"rows-{last}-key": key, f"rows-{last}-type": kind, f"rows-{last}-value": value}


# -- the twin view, alone ------------------------------------------------------------------
def test_the_twin_view_alone_shows_what_the_module_reported(
    client_as, viewer, thermo, localhub, client_for
):
    module = client_for(DEVICE, thermo, MODULE)
    module.connect()
    module.patch_twin_reported_properties({"temperature": 21.5})

    response = client_as(viewer).get(url("module-twin", DEVICE, MODULE))

    page = text(response)
    assert response.status_code == 200
    assert "<html" not in page and page.lstrip().startswith('<section class="card twin" id="twin"')
    assert "temperature" in page and "21.5" in page
    assert "Edit desired properties" not in page  # a viewer's view


def test_the_twin_view_shows_the_delta_with_the_acknowledgement(
    client_as, operator, thermo, registry, client_for
):
    registry.update_module_twin(DEVICE, MODULE, desired({"telemetryInterval": 122}))
    module = client_for(DEVICE, thermo, MODULE)
    module.connect()
    ack = {"value": 60, "ac": 200, "ad": "applied", "av": 1}
    module.patch_twin_reported_properties({"telemetryInterval": ack})

    page = text(client_as(operator).get(url("module-twin", DEVICE, MODULE)))

    assert "Delta: 1 desired property not reported with the desired value" in page
    assert "acknowledged with status 200 at version 1: applied" in page
    assert url("module-twin-form", DEVICE, MODULE) in page  # an operator's view


def test_the_twin_view_needs_a_login(client, thermo):
    response = client.get(url("module-twin", DEVICE, MODULE))

    assert response.status_code == 302 and response.url.startswith("/login/")


def test_the_twin_view_of_an_unknown_module_is_a_404_page(client_as, viewer, thermo):
    response = client_as(viewer).get(url("module-twin", DEVICE, "nope"))

    assert response.status_code == 404
    assert "Not found on the hub" in text(response) and "Traceback" not in text(response)


# -- the module page's live parts ----------------------------------------------------------
def test_the_page_carries_the_live_card_for_its_module(client_as, viewer, thermo, simulators):
    page = text(client_as(viewer).get(url("module-detail", DEVICE, MODULE)))

    live = page[page.index('id="live"') :]
    assert f'data-device-id="{DEVICE}"' in live and f'data-module-id="{MODULE}"' in live
    assert f'data-twin-url="{url("module-twin", DEVICE, MODULE)}"' in live
    assert f'data-simulator-url="{url("module-simulator", DEVICE, MODULE)}"' in live
    assert 'id="live-status"' in live and 'id="event-feed"' in live
    assert re.search(r'<script src="[^"]*js/live\.js" defer>', page)
    assert 'id="connection-badge">Disconnected<' in page


def test_a_viewer_sees_whether_the_simulator_runs_but_no_buttons_nor_form(
    client_as, viewer, thermo, simulators
):
    page = text(client_as(viewer).get(url("module-detail", DEVICE, MODULE)))

    simulator = page[
        page.index('id="simulator"') : page.index("</section>", page.index('id="simulator"'))
    ]
    assert "Not running" in simulator
    assert "Start" not in simulator and "Stop" not in simulator
    assert "Change desired properties" not in page


def test_the_inline_form_posts_to_the_twin_editor_with_and_without_htmx(
    client_as, operator, thermo, simulators
):
    page = text(client_as(operator).get(url("module-detail", DEVICE, MODULE)))

    form_url = url("module-twin-form", DEVICE, MODULE)
    card = page[page.index('id="desired"') :]
    assert "Change desired properties" in card
    assert f'<form method="post" action="{form_url}" hx-post="{form_url}"' in card


# -- the inline desired form, posted with htmx ---------------------------------------------
def test_htmx_desired_edit_answers_with_the_card_and_a_fresh_form(
    client_as, operator, thermo, registry, simulators
):
    client = client_as(operator)
    before = registry.get_module_twin(DEVICE, MODULE).properties.desired["$version"]
    data = with_row(inline_form(client), "telemetryInterval", "122")

    response = client.post(url("module-twin-form", DEVICE, MODULE), data, **HX)

    page = text(response)
    assert response.status_code == 200
    assert "<html" not in page and 'id="desired"' in page
    assert f"desired $version is now {before + 1}" in page
    # The page refreshes its twin view, and gets its audit log as it is now.
    assert response["HX-Trigger"] == "twin-changed"
    assert 'id="audit" hx-swap-oob="true"' in page and "twin.updated" in page
    assert "HX-Request" in response["Vary"]
    assert hub_desired(registry) == {"telemetryInterval": 122}
    # The fresh form holds the new etag and value: a second edit from it goes through.
    assert etag_on(response) == registry.get_module_twin(DEVICE, MODULE).etag
    again = client.post(
        url("module-twin-form", DEVICE, MODULE),
        {**inline_form(client), "rows-0-value": "30"},
        **HX,
    )
    assert f"desired $version is now {before + 2}" in text(again)
    assert hub_desired(registry) == {"telemetryInterval": 30}
    assert AuditEntry.objects.filter(action=AuditEntry.Action.TWIN_UPDATED).count() == 2


def test_htmx_desired_edit_with_an_error_shows_it_in_the_card(
    client_as, operator, thermo, registry, simulators
):
    client = client_as(operator)
    etag = registry.get_module_twin(DEVICE, MODULE).etag
    data = with_row(inline_form(client), "telemetryInterval", "soon")

    response = client.post(url("module-twin-form", DEVICE, MODULE), data, **HX)

    page = text(response)
    assert response.status_code == 200  # htmx swaps only 2xx answers
    assert "<html" not in page and "'soon' is not a number" in page
    assert registry.get_module_twin(DEVICE, MODULE).etag == etag
    assert not AuditEntry.objects.exists()


def test_htmx_desired_edit_conflicting_shows_the_conflict_in_the_card(
    client_as, operator, thermo, registry, simulators
):
    client = client_as(operator)
    data = with_row(inline_form(client), "telemetryInterval", "122")
    registry.update_module_twin(DEVICE, MODULE, desired({"telemetryInterval": 60}))

    response = client.post(url("module-twin-form", DEVICE, MODULE), data, **HX)

    page = text(response)
    assert response.status_code == 200
    assert "<html" not in page and "The twin changed since you loaded it" in page
    assert "Re-apply my changes on top of the current twin" in page
    assert hub_desired(registry) == {"telemetryInterval": 60}


def test_htmx_desired_edit_with_the_hub_down_says_so_in_the_card(
    client_as, operator, thermo, localhub, simulators
):
    client = client_as(operator)
    data = with_row(inline_form(client), "telemetryInterval", "122")
    localhub.stop()

    response = client.post(url("module-twin-form", DEVICE, MODULE), data, **HX)

    assert response.status_code == 200
    assert "cannot be reached" in text(response) and "<html" not in text(response)


def test_the_inline_form_without_javascript_goes_back_to_the_module_page(
    client_as, operator, thermo, registry, simulators
):
    client = client_as(operator)
    data = with_row(inline_form(client), "telemetryInterval", "122")

    response = client.post(url("module-twin-form", DEVICE, MODULE), data)

    assert response.status_code == 302 and response.url == url("module-detail", DEVICE, MODULE)
    assert "desired $version is now" in messages_of(response)[0]
    assert hub_desired(registry) == {"telemetryInterval": 122}


# -- the simulated module ------------------------------------------------------------------
def test_a_viewer_may_not_start_a_simulator(client_as, viewer, thermo, simulators):
    client = client_as(viewer)

    response = client.post(url("module-simulator", DEVICE, MODULE), {"action": "start"}, **HX)

    assert response.status_code == 403
    assert "viewers can only read them" in text(response)
    assert simulator_control.status(DEVICE, MODULE) is None
    card = client.get(url("module-simulator", DEVICE, MODULE))
    assert card.status_code == 200 and "Not running" in text(card)


def test_the_simulator_card_needs_a_login(client, thermo, simulators):
    response = client.post(url("module-simulator", DEVICE, MODULE), {"action": "start"})

    assert response.status_code == 302 and response.url.startswith("/login/")
    assert simulator_control.status(DEVICE, MODULE) is None


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_operator_starts_and_stops_the_simulator_from_the_card(
    client_as, operator, thermo, registry, simulators, settings
):
    client = client_as(operator)
    simulator_url = url("module-simulator", DEVICE, MODULE)

    started = client.post(simulator_url, {"action": "start"}, HTTP_HOST="localhost:4444", **HX)

    page = text(started)
    running = simulator_control.status(DEVICE, MODULE)
    assert started.status_code == 200 and "<html" not in page
    assert running is not None
    assert f"Simulator started for {DEVICE}/{MODULE} (process {running.pid})." in page
    assert "Running" in page and "Stop" in page
    assert wait_for(lambda: registry.get_module(DEVICE, MODULE).connection_state == "Connected")
    # Its events go to the configured ingest websocket, never to an address the request names
    # (whoever it names would receive the simulator's token).
    assert settings.EVENTS_URL in command_line(running.pid)
    assert "4444" not in command_line(running.pid)
    # Nothing listens there: the card says the events do not reach the web app.
    wait_for(
        lambda: (
            "Events do not reach the web app at ws://127.0.0.1:9/ws/ingest/"
            in text(client.get(simulator_url))
        ),
        what="the card to say the events are not delivered",
    )
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.username, entry.module_id, entry.detail) == (
        "simulator.started",
        operator.username,
        MODULE,
        {"pid": running.pid},
    )

    second = client.post(simulator_url, {"action": "start"}, **HX)

    assert f"A simulator already runs for {DEVICE}/{MODULE} (pid {running.pid})." in text(second)
    assert simulator_control.status(DEVICE, MODULE).pid == running.pid

    stopped = client.post(simulator_url, {"action": "stop"}, **HX)

    assert f"Simulator for {DEVICE}/{MODULE} stopped." in text(stopped)
    assert "Not running" in text(stopped)
    assert simulator_control.status(DEVICE, MODULE) is None
    assert AuditEntry.objects.first().action == "simulator.stopped"


def test_without_javascript_start_and_stop_come_back_to_the_page_with_a_message(
    client_as, operator, thermo, simulators, settings
):
    settings.EVENTS_URL = "ws://127.0.0.1:9/ws/ingest/"
    client = client_as(operator)
    simulator_url = url("module-simulator", DEVICE, MODULE)

    started = client.post(simulator_url, {"action": "start"})

    assert started.status_code == 302 and started.url == url("module-detail", DEVICE, MODULE)
    running = simulator_control.status(DEVICE, MODULE)
    assert messages_of(started) == [
        f"Simulator started for {DEVICE}/{MODULE} (process {running.pid})."
    ]
    assert settings.EVENTS_URL in command_line(running.pid)
    page = text(client.get(url("module-detail", DEVICE, MODULE)))
    assert f"process {running.pid}" in page[page.index('id="simulator"') :]

    stopped = client.post(simulator_url, {"action": "stop"})
    assert stopped.status_code == 302
    assert messages_of(stopped) == [f"Simulator for {DEVICE}/{MODULE} stopped."]
    client.get(url("module-detail", DEVICE, MODULE))  # shows (and so clears) the messages
    nothing = client.post(simulator_url, {"action": "stop"})
    assert messages_of(nothing) == [
        f"No simulator was running for {DEVICE}/{MODULE}: nothing to stop."
    ]


def test_starting_a_simulator_for_an_unknown_module_says_why(
    client_as, operator, thermo, simulators
):
    response = client_as(operator).post(
        url("module-simulator", DEVICE, "nope"), {"action": "start"}, **HX
    )

    page = text(response)
    assert response.status_code == 200
    assert 'role="alert"' in page and "nope" in page and "Traceback" not in page
    assert simulator_control.status(DEVICE, "nope") is None
    assert not AuditEntry.objects.exists()


def test_pages_refreshing_after_the_same_event_share_one_twin_read(
    client_as, viewer, thermo, registry
):
    """Every page open on the module asks for the twin as of the newest event at once: the
    hub is read once for them all, and a newer event reads it again."""
    client = client_as(viewer)
    twin_url = url("module-twin", DEVICE, MODULE)
    after_first = {"after": "2026-11-26T07:00:00.000Z"}
    assert "No desired or reported properties yet" in text(client.get(twin_url, after_first))

    registry.update_module_twin(DEVICE, MODULE, desired({"fan": 3}), "*")

    assert "fan" not in text(client.get(twin_url, after_first))  # that event's read, shared
    assert "fan" in text(client.get(twin_url, {"after": "2026-11-26T07:00:01.000Z"}))
    assert "fan" in text(client.get(twin_url))  # without an event: read now


def test_requests_for_the_same_event_read_the_twin_once_whatever_their_number(thermo, monkeypatch):
    """They come together, each on a thread of its own (as Django runs sync views under
    ASGI); the hub is read by the first, the others wait for its answer."""
    reads = []
    real_read = hub.get_twin

    def counted_read(*ids):
        reads.append(ids)
        time.sleep(0.1)  # a hub far away: every request arrives while the first reads
        return real_read(*ids)

    monkeypatch.setattr(hub, "get_twin", counted_read)
    after = "2026-11-26T08:00:00.000Z"
    with ThreadPoolExecutor(20) as pool:
        twins = list(pool.map(lambda _: shared_twin_read(DEVICE, MODULE, after), range(20)))

    assert len(reads) == 1
    assert all(t["moduleId"] == MODULE for t in twins)
