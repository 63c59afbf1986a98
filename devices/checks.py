"""System checks: the debug page stays on this machine, and production has no development
parts (`manage.py check --deploy`)."""

from django.conf import settings
from django.core.checks import Error, register

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


@register()
def debug_only_on_loopback(app_configs, **kwargs):
    """DEBUG's pages show this machine's settings and code: only for a server that answers
    loopback names (a developer's `make run`), never for one others reach."""
    public = set(settings.ALLOWED_HOSTS) - LOOPBACK_HOSTS
    if settings.DEBUG and public:
        return [
            Error(
                f"DEBUG is on while ALLOWED_HOSTS names {', '.join(sorted(public))}.",
                hint="Unset DEBUG (it is off by default), or serve only localhost/127.0.0.1.",
                id="iotadmin.E003",
            )
        ]
    return []


@register(deploy=True)
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
