import time

from django.core.management.base import BaseCommand, CommandError

from devices import hub
from devices.mirror import sync_hub


class Command(BaseCommand):
    help = "Make the dashboard's mirror equal the hub: every device and module, paged."

    def handle(self, *args, **options):
        def progress(result):
            if options["verbosity"] >= 1:
                self.stdout.write(
                    f"page {result.pages}: {result.devices} devices, {result.modules} modules"
                )

        started = time.perf_counter()
        try:
            result = sync_hub(progress)
        except hub.HubError as e:
            raise CommandError(e.message) from e
        seconds = time.perf_counter() - started
        self.stdout.write(self.style.SUCCESS(f"{result.summary()} (in {seconds:.1f} s)"))
