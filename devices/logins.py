"""Login throttling around django-axes (settings: AXES_*): the client address it counts, and
locked-out attempts answered early and late.

Axes' backend refuses a locked-out login without hashing the password, but only once the
request has been through CSRF, the login form and its page, and at once: a client flooding
the login page still took as much of the server as it asked for, and every page slowed.
"""

import asyncio
import functools

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_credentials, get_lockout_response
from django.conf import settings
from django.urls import reverse

# A locked-out attempt is answered after this wait, spent on the event loop: a client that
# retries as soon as it is answered makes one attempt a second, whoever it is.
LOCKED_WAIT_SECONDS = 1.0


def client_ip(request) -> str | None:
    """The address a login comes from, as axes counts failures per address
    (AXES_CLIENT_IP_CALLABLE): REMOTE_ADDR, or behind a proxy the header CLIENT_IP_HEADER
    names, whose last entry is the one the proxy itself added (X-Forwarded-For lists what
    the client claimed first)."""
    forwarded = request.META.get(settings.CLIENT_IP_HEADER) if settings.CLIENT_IP_HEADER else ""
    return forwarded.split(",")[-1].strip() if forwarded else request.META.get("REMOTE_ADDR")


@functools.cache
def login_paths() -> frozenset[str]:
    return frozenset([reverse("login"), reverse("admin:login")])


def locked_out(request) -> dict | None:
    """The credentials of a login POST that axes refuses (locked out), else None."""
    if settings.AXES_ENABLED and request.method == "POST" and request.path in login_paths():
        credentials = get_credentials(request.POST.get(settings.AXES_USERNAME_FORM_FIELD))
        if not AxesProxyHandler.is_allowed(request, credentials):
            return credentials
    return None


class LockedLoginsWait:
    """A login POST for a locked-out account or from a locked-out address gets axes' lockout
    page (429) before it reaches the view; under ASGI after LOCKED_WAIT_SECONDS. (Served
    synchronously, by WSGI or the test client, without the wait: it would hold a thread.)"""

    async_capable = sync_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        if (credentials := locked_out(request)) is not None:
            return get_lockout_response(request, None, credentials)
        return self.get_response(request)

    async def __acall__(self, request):
        if (credentials := await sync_to_async(locked_out)(request)) is not None:
            await asyncio.sleep(LOCKED_WAIT_SECONDS)
            return await sync_to_async(get_lockout_response)(request, None, credentials)
        return await self.get_response(request)
