from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DevicesConfig(AppConfig):
    name = "devices"
    verbose_name = "IoT Hub identities"

    def ready(self):
        from . import (
            checks,  # noqa: F401  (registers the production checks)
            signals,
        )
        from .roles import ensure_roles

        signals.connect()  # open pages check their session again when access changes
        # After auth's own handler has made this app's permissions.
        post_migrate.connect(ensure_roles, sender=self)
