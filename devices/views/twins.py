"""Twin editors for devices and modules (module_id "" means the device's own twin).

Every write carries If-Match with the etag the operator loaded; a 412 shows the hub's twin
as it is now beside their edit, which they can re-apply. Nothing is overwritten silently.
"""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from .. import access, hub, mirror, twins
from ..models import AuditEntry
from ..twin_forms import DesiredForm, TwinJsonForm
from .common import PAGE_STATUS, handles_hub_errors


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
    try:
        answer = hub.write_twin(device_id, module_id, form.etag, **form.write_args())
    except hub.PreconditionFailed:
        return _conflict(request, form, device_id, module_id, editor)
    except hub.HubError as error:
        form.add_error(None, error.message)
        return _editor(request, form, device_id, module_id, editor, status=_status(error))
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
    try:
        mirror.save_twin(device_id, module_id, answer)
    except hub.HubError as error:
        messages.warning(request, f"Written, but the dashboard's copy is stale: {error.message}")
    verb = "replaced" if form.replace else "updated"
    messages.success(
        request,
        f"Twin of {_label(device_id, module_id)} {verb}: desired $version is now "
        f"{desired_version} (twin version {answer.get('version')}).",
    )
    return redirect(_detail_url(device_id, module_id))


def _conflict(request, form, device_id, module_id, editor):
    """412: show the twin as it is now beside the operator's edit, kept as they typed it,
    in a form that re-applies their changes against the new etag."""
    try:
        current = hub.get_twin(device_id, module_id)
    except hub.HubError as error:
        form.add_error(
            None, f"The twin changed since you loaded it; reading it again failed: {error.message}"
        )
        return _editor(request, form, device_id, module_id, editor, status=_status(error))
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
    return render(request, "devices/twin_edit.html", context, status=status)


def _status(error: hub.HubError) -> int:
    if isinstance(error, hub.BadRequest):
        return 400
    return next((s for cls, s in PAGE_STATUS.items() if isinstance(error, cls)), 502)


def _label(device_id, module_id) -> str:
    return f"{device_id}/{module_id}" if module_id else device_id


def _url(name, device_id, module_id) -> str:
    if module_id:
        return reverse(f"devices:module-{name}", args=[device_id, module_id])
    return reverse(f"devices:device-{name}", args=[device_id])


def _detail_url(device_id, module_id) -> str:
    return _url("detail", device_id, module_id)
