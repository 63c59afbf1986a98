"""When the hub falters, pages keep working: a real localhub process stopped (SIGSTOP: it
accepts connections and never answers), then killed. Detail pages show the mirror's last
copy, marked as such; every page has a banner saying since when; the hub is asked again a few
seconds later rather than on every call."""

import os
import signal

import pytest
from pages import text, url
from support import create_identities, desired, wait_for

from devices import hub, mirror

pytestmark = pytest.mark.django_db


@pytest.fixture
def known(dashboard_hub_process):
    """A device and module the mirror holds (synced), and one it never saw."""
    registry = dashboard_hub_process.registry_manager()
    create_identities(registry, "sensor-1", "thermo")
    registry.update_twin("sensor-1", desired({"interval": 30}), "*")
    mirror.sync_hub()
    create_identities(registry, "made-later")
    return registry


def test_a_hung_hub_gives_the_last_known_pages_with_a_banner(
    client_as, operator, known, dashboard_hub_process
):
    client = client_as(operator)
    os.kill(dashboard_hub_process.process.pid, signal.SIGSTOP)

    device = client.get(url("device-detail", "sensor-1"))
    module = client.get(url("module-detail", "sensor-1", "thermo"))  # at once: not asked again
    unknown = client.get(url("device-detail", "made-later"))
    listing = client.get(url("device-list"))

    assert device.status_code == 200
    page = text(device)
    assert "Last known state, read from the hub" in page
    assert "did not answer in time" in page
    assert "The hub is not answering (since" in page
    assert "thermo" in page and '"interval"' in page.replace("&quot;", '"')
    assert "Reveal" not in page and url("device-delete", "sensor-1") not in page
    assert module.status_code == 200 and "Last known state" in text(module)
    assert unknown.status_code == 503 and "The hub is not answering" in text(unknown)
    assert "The hub is not answering" in text(listing)  # the banner is on every page


def test_the_pages_come_back_with_the_hub_and_say_so_when_it_is_killed(
    client_as, viewer, known, dashboard_hub_process
):
    client = client_as(viewer)
    os.kill(dashboard_hub_process.process.pid, signal.SIGSTOP)
    assert "Last known state" in text(client.get(url("device-detail", "sensor-1")))

    os.kill(dashboard_hub_process.process.pid, signal.SIGCONT)
    page = wait_for(
        lambda: (
            (p := text(client.get(url("device-detail", "sensor-1"))))
            and "Last known state" not in p
            and p
        ),
        timeout=3 * hub.RETRY_SECONDS,
        what="the page to read the hub again",
    )
    assert "The hub is not answering" not in page
    assert known.get_device("sensor-1").generation_id in page

    dashboard_hub_process.kill()
    hub.forget_health()  # as a later request would once RETRY_SECONDS passed
    page = text(client.get(url("device-detail", "sensor-1")))
    assert "Last known state" in page and "cannot be reached" in page
