"""System checks that refuse a production start with development defaults."""

from django.conf import settings
from django.core.checks import Error, register


@register(deploy=False)
def production_settings(app_configs, **kwargs):
    if settings.DEBUG:
        return []
    errors = []
    if settings.SECRET_KEY_IS_DEFAULT:
        errors.append(
            Error(
                "DEBUG is off but SECRET_KEY is not set.",
                hint="Set SECRET_KEY.",
                id="iotadmin.E001",
            )
        )
    if "InMemoryChannelLayer" in settings.CHANNEL_LAYERS["default"]["BACKEND"]:
        errors.append(
            Error(
                "DEBUG is off but the channel layer is in memory: events will not reach "
                "pages served by other processes.",
                hint="Set REDIS_URL.",
                id="iotadmin.E002",
            )
        )
    return errors
