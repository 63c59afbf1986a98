"""``python manage.py simulate_module DEVICE_ID MODULE_ID``: a simulated module (devices.simulator)
that prints one JSON line per event until SIGINT or SIGTERM."""

import signal

from django.core.management.base import BaseCommand, CommandError

from devices import hub, simulator


class Command(BaseCommand):
    help = (
        "Connect as a module, acknowledge every desired property the IoT Plug and Play way "
        "and print one JSON line per event, until Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser):
        parser.add_argument("device_id")
        parser.add_argument("module_id")
        parser.add_argument(
            "--connection-string",
            default="",
            help="The module's connection string (default: built from its key, read from the hub).",
        )

    def handle(self, *args, **options):
        # Only an append: setting a threading.Event from a signal handler can deadlock.
        stop = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda number, _frame: stop.append(number))
        try:
            simulator.run(
                options["device_id"], options["module_id"], stop, options["connection_string"]
            )
        except (hub.HubError, simulator.SimulatorError) as e:
            raise CommandError(getattr(e, "message", None) or str(e)) from e
