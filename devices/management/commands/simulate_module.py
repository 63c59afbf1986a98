"""``python manage.py simulate_module DEVICE_ID MODULE_ID``: a simulated module (devices.simulator)
that prints one JSON line per event and hands each to the web app, until SIGINT or SIGTERM."""

import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from devices import hub, mirror, simulator, simulator_control
from devices.event_forwarder import EventForwarder


class Command(BaseCommand):
    help = (
        "Connect as a module, acknowledge every desired property the IoT Plug and Play way, "
        "print one JSON line per event and hand it to the web app's pages, until Ctrl-C or "
        "SIGTERM. One simulator per module at a time."
    )

    def add_arguments(self, parser):
        parser.add_argument("device_id")
        parser.add_argument("module_id")
        parser.add_argument(
            "--connection-string",
            default="",
            help="The module's connection string (default: built from its key, read from the hub).",
        )
        parser.add_argument(
            "--events-url",
            default=settings.EVENTS_URL,
            help="The web app's ingest websocket (default: IOTADMIN_EVENTS_URL, "
            f"{settings.EVENTS_URL}); empty: only print the events.",
        )
        parser.add_argument(
            "--create",
            action="store_true",
            help="Create the device and the module first if the hub has not got them.",
        )

    def handle(self, *args, **options):
        device_id, module_id = options["device_id"], options["module_id"]
        # Only an append: setting a threading.Event from a signal handler can deadlock.
        stop = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda number, _frame: stop.append(number))
        forwarder = None
        emit = simulator.print_event
        if options["events_url"]:
            forwarder = EventForwarder(options["events_url"], device_id, module_id)

            def emit(event):
                simulator.print_event(event)
                forwarder.send(event)

        try:
            if options["create"]:
                self.create(device_id, module_id)
            with simulator_control.module_lock(device_id, module_id):
                simulator.run(device_id, module_id, stop, options["connection_string"], emit)
        except (hub.HubError, simulator.SimulatorError, simulator_control.ControlError) as e:
            raise CommandError(getattr(e, "message", None) or str(e)) from e
        finally:
            if forwarder:
                forwarder.close()

    def create(self, device_id: str, module_id: str) -> None:
        """Make what is missing (on stderr: stdout holds only events), mirrored for the list."""
        try:
            hub.get_device(device_id)
        except hub.NotFound:
            mirror.save_device(hub.create_device(device_id))
            self.stderr.write(f"Created device {device_id} on the hub.")
        try:
            hub.get_module(device_id, module_id)
        except hub.NotFound:
            mirror.save_module(hub.create_module(device_id, module_id))
            self.stderr.write(f"Created module {device_id}/{module_id} on the hub.")
