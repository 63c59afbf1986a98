from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "devices"
    verbose_name = "IoT Hub identities"

    def ready(self):
        from . import checks  # noqa: F401  (registers the production checks)
