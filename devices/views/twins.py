"""Twin editors for devices and modules (module_id "" means the device's own twin).

Every write carries If-Match with the etag the operator loaded; a 412 shows the hub's twin
as it is now beside their edit, which they can re-apply. Nothing is overwritten silently.
The module page also holds the desired form inline and posts it with htmx: those requests
are answered with the form's card alone.
"""

import time

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers

from .. import access, hub, mirror, twins
from ..models import AuditEntry
from ..twin_forms import DesiredForm, TwinJsonForm
from .common import handles_hub_errors, page_status
from .devices import with_audit_log

# How long an edit keeps being written again while only what it is not based on changes
# (a device reporting moves the etag): a module reporting every 20 ms must not turn an
# operator's edit into a conflict, and a twin that keeps changing must not hold a worker.
RETRY_SECONDS = 10


@access.requires(access.EDIT_TWIN)
@require_http_methods(["GET", "POST"])
@handles_hub_errors
def twin_json(request, device_id, module_id=""):
    """Tags and desired as JSON documents, sent as a patch (what changed) or a replace."""
    if request.method == "POST":
        form = TwinJsonForm(request.POST)
        if form.is_valid():
            return _write(request, form, device_id, module_id, "json")
        return _editor(request, form, device_id, module_id, "json")
    twin = hub.get_twin(device_id, module_id)
    return _editor(request, TwinJsonForm.for_twin(twin), device_id, module_id, "json", twin)


@access.requires(access.EDIT_TWIN)
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
@handles_hub_errors
def twin_form(request, device_id, module_id=""):
    """Desired properties one row per key; only the keys changed are sent, as a patch."""
    if request.method == "POST":
        if "add_row" in request.POST:
            form = DesiredForm(DesiredForm.with_extra_row(request.POST))
            return _editor(request, form, device_id, module_id, "form")
        form = DesiredForm(request.POST)
        if form.is_valid():
            return _write(request, form, device_id, module_id, "form")
        return _editor(request, form, device_id, module_id, "form")
    twin = hub.get_twin(device_id, module_id)
    return _editor(request, DesiredForm(twin=twin), device_id, module_id, "form", twin)


def _write(request, form, device_id, module_id, editor):
    """Write with the etag the operator loaded. On a 412 whose only cause is what the edit
    is not based on (the device reported), write again with the new etag until it lands or
    RETRY_SECONDS pass; a real change shows the conflict page."""
    etag, deadline = form.etag, time.monotonic() + RETRY_SECONDS
    while True:
        try:
            answer = hub.write_twin(device_id, module_id, etag, **form.write_args())
            break
        except hub.PreconditionFailed:
            try:
                current = hub.get_twin(device_id, module_id)
            except hub.HubError as error:
                why = "The twin changed since you loaded it; reading it again failed"
                form.add_error(None, f"{why}: {error.message}")
                return _editor(
                    request, form, device_id, module_id, editor, status=page_status(error)
                )
            if time.monotonic() > deadline or not twins.still_based_on(form.bases(), current):
                return _conflict(request, form, device_id, module_id, editor, current)
            etag = current.get("etag") or ""
        except hub.HubError as error:
            form.add_error(None, error.message)
            return _editor(request, form, device_id, module_id, editor, status=page_status(error))
    desired_version = answer["properties"]["desired"]["$version"]
    action = AuditEntry.Action.TWIN_REPLACED if form.replace else AuditEntry.Action.TWIN_UPDATED
    AuditEntry.record(
        request.user,
        action,
        device_id,
        module_id,
        patch=form.sent(),
        desired_version=desired_version,
        twin_version=answer.get("version"),
    )
    stale = ""
    try:
        mirror.save_twin(device_id, module_id, answer)
    except hub.HubError as error:
        stale = f"Written, but the dashboard's copy is stale: {error.message}"
    verb = "replaced" if form.replace else "updated"
    done = (
        f"Twin of {_label(device_id, module_id)} {verb}: desired $version is now "
        f"{desired_version} (twin version {answer.get('version')})."
    )
    if request.htmx and editor == "form":
        return _written_card(request, answer, device_id, module_id, done, stale)
    if stale:
        messages.warning(request, stale)
    messages.success(request, done)
    return redirect(_detail_url(device_id, module_id))


def _written_card(request, answer, device_id, module_id, done, stale):
    """The inline form again, fresh from the hub's answer (its etag and values), saying what
    was written; the page refreshes its twin view on the ``twin-changed`` event."""
    fresh = DesiredForm(twin=answer)
    response = _editor(request, fresh, device_id, module_id, "form", done=done, stale=stale)
    response["HX-Trigger"] = "twin-changed"
    return with_audit_log(request, response, device_id, module_id or None)


def _conflict(request, form, device_id, module_id, editor, current):
    """412: show the twin as it is now (``current``) beside the operator's edit, kept as they
    typed it, in a form that re-applies their changes against the new etag."""
    data = request.POST.copy()
    data["etag"] = current.get("etag") or ""
    again = type(form)(data)
    again.is_valid()
    found = twins.conflicts(form.bases(), form.sections(), current, replace=form.replace)
    return _editor(
        request,
        again,
        device_id,
        module_id,
        editor,
        current,
        conflict=found,
        seen_etag=form.etag,
        status=409,
    )


def _editor(request, form, device_id, module_id, editor, twin=None, status=200, **extra):
    context = {
        "form": form,
        "editor": editor,
        "twin": twin,
        "device_id": device_id,
        "module_id": module_id,
        "label": _label(device_id, module_id),
        "detail_url": _detail_url(device_id, module_id),
        "json_url": _url("twin-json", device_id, module_id),
        "form_url": _url("twin-form", device_id, module_id),
        **extra,
    }
    if request.htmx and editor == "form":
        # The module page's inline card. htmx swaps only 2xx answers, so errors and
        # conflicts come as 200 too, shown in the card.
        return render(request, "devices/partials/desired_card.html", {**context, "inline": True})
    return render(request, "devices/twin_edit.html", context, status=status)


def _label(device_id, module_id) -> str:
    return f"{device_id}/{module_id}" if module_id else device_id


def _url(name, device_id, module_id) -> str:
    if module_id:
        return reverse(f"devices:module-{name}", args=[device_id, module_id])
    return reverse(f"devices:device-{name}", args=[device_id])


def _detail_url(device_id, module_id) -> str:
    return _url("detail", device_id, module_id)
