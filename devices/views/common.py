"""What every view shares: turning hub failures into pages that say what happened."""

import functools

from django.shortcuts import render

from .. import hub

# The status a page answers with when the hub refuses or fails.
PAGE_STATUS = {
    hub.BadRequest: 400,
    hub.NotFound: 404,
    hub.HubUnavailable: 503,
    hub.HubNotConfigured: 503,
    hub.Unauthorized: 502,
}


def page_status(error: hub.HubError) -> int:
    """The status of a page saying the hub refused or failed: 502 for what is no one's
    fault here."""
    return next((s for cls, s in PAGE_STATUS.items() if isinstance(error, cls)), 502)


def hub_error_page(request, error: hub.HubError):
    return render(request, "devices/hub_error.html", {"error": error}, status=page_status(error))


def handles_hub_errors(view):
    """Any HubError a view lets through becomes a page with the hub's message, never a
    stack trace. Views with a form catch errors themselves, to show the form again with
    what the operator typed."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except hub.HubError as error:
            return hub_error_page(request, error)

    return wrapped
