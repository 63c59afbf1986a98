"""The device page and what an operator does to a device: reveal its connection strings,
create it, enable or disable it, regenerate a key, delete it.

Every change carries the etag the operator saw, records an audit entry and updates the
mirror from the hub's answer.
"""

import json

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from .. import hub, mirror
from ..access import EDIT_TWIN, MANAGE_IDENTITIES, REVEAL_KEYS, requires
from ..forms import DeviceCreateForm, EtagForm, RegenerateKeyForm, StatusForm
from ..models import AuditEntry
from .common import PAGE_STATUS, handles_hub_errors

Action = AuditEntry.Action
KEY_FIELDS = {"primary": "primaryKey", "secondary": "secondaryKey"}
MASK = "•" * 16
AUDIT_ROWS = 50


# -- shared by the device and module pages -------------------------------------------------
def status_of(error: hub.HubError) -> int:
    """The status a form page answers with when the hub refused or failed."""
    return next((s for cls, s in PAGE_STATUS.items() if isinstance(error, cls)), None) or (
        error.status or 502
    )


def stale(label: str) -> str:
    return (
        f"{label} was changed on the hub after you loaded the page, so nothing was done. "
        "Check its current state below and try again if you still want this."
    )


def read_twin(device_id: str, module_id: str = ""):
    """(twin, "") or (None, why): a twin that cannot be read should not hide the page."""
    try:
        return hub.get_twin(device_id, module_id), ""
    except hub.HubError as error:
        return None, error.message


def key_of(identity: dict, which: str) -> str:
    if which not in KEY_FIELDS:
        raise Http404(f"There is no {which!r} key: ask for the primary or secondary one.")
    return identity["authentication"]["symmetricKey"][KEY_FIELDS[which]]


def connection_strings(
    request, identity: dict, revealed: dict | None = None, offline: bool = False
) -> list[dict]:
    """Both connection strings, masked unless in ``revealed``; reveal URLs only for those
    allowed to see keys, and not while the hub (which holds the keys) is ``offline``."""
    device_id, module_id = identity["deviceId"], identity.get("moduleId") or ""
    if problem := hub.connection_string_problem(device_id, module_id):
        return [{"which": "none", "problem": problem}]
    masked = hub.device_connection_string(device_id, MASK, module_id)
    can_reveal = request.user.has_perm(REVEAL_KEYS) and not offline
    strings = []
    for which in KEY_FIELDS:
        if module_id:
            url = reverse("devices:module-connection-string", args=[device_id, module_id, which])
        else:
            url = reverse("devices:device-connection-string", args=[device_id, which])
        strings.append(
            {
                "which": which,
                "masked": masked,
                "value": (revealed or {}).get(which),
                "reveal_url": url if can_reveal else "",
            }
        )
    return strings


def reveal(request, identity: dict, which: str, page):
    """Record the reveal, then answer with the string: the partial for htmx, else ``page``
    (the whole identity page showing it)."""
    device_id, module_id = identity["deviceId"], identity.get("moduleId") or ""
    value = hub.device_connection_string(device_id, key_of(identity, which), module_id)
    AuditEntry.record(
        request.user, Action.CONNECTION_STRING_REVEALED, device_id, module_id, key=which
    )
    if not request.htmx:
        return page(request, revealed={which: value})
    string = next(s for s in connection_strings(request, identity) if s["which"] == which)
    context = {"cs": {**string, "value": value}}
    response = render(request, "devices/partials/connection_string.html", context)
    return with_audit_log(request, response, device_id, module_id or None)


def _summary(detail: dict) -> str:
    def text(value):
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    return "; ".join(f"{key}: {text(value)}" for key, value in detail.items())


def audit_entries(device_id: str, module_id: str | None = None) -> list[AuditEntry]:
    """Newest first: a device's own and its modules' entries, or one module's."""
    entries = AuditEntry.objects.filter(device_id=device_id)
    if module_id is not None:
        entries = entries.filter(module_id=module_id)
    entries = list(entries[:AUDIT_ROWS])
    for entry in entries:
        entry.summary = _summary(entry.detail)
    return entries


def with_audit_log(request, response, device_id: str, module_id: str | None = None):
    """``response``, an htmx answer that recorded an audit entry, with the page's audit log
    as it is now after it: htmx swaps that in for #audit (hx-swap-oob)."""
    context = {"audit": audit_entries(device_id, module_id), "module_id": module_id, "oob": True}
    response.content += render_to_string("devices/partials/audit.html", context, request).encode()
    return response


def last_known_context(request, error: hub.HubUnavailable, device_id: str, module_id=""):
    """What a page shows of an identity while the hub does not answer: the mirror's last
    copy (no keys, no actions), saying when it was read. HubUnavailable again if the
    mirror never held it."""
    row = mirror.last_known(device_id, module_id)
    if row is None:
        raise error
    identity = {"deviceId": device_id, "moduleId": module_id, "etag": row.etag}
    return {
        "row": row,
        "connection_strings": connection_strings(request, identity, offline=True),
        "audit": audit_entries(device_id, module_id or None),
        "twin": mirror.twin_of(row),
        "twin_error": "The dashboard holds no copy of this twin.",
        "device_id": device_id,
        "module_id": module_id,
        "can_edit_twin": False,
        "can_manage": False,
        "last_known": {"read_at": row.synced_at, "problem": error.message},
    }


# -- the device page -----------------------------------------------------------------------
def _device_page(request, device_id: str, revealed: dict | None = None):
    try:
        identity = hub.get_device(device_id)
    except hub.HubUnavailable as error:
        context = last_known_context(request, error, device_id)
        row = context["row"]
        modules = row.modules.order_by("module_id")
        context["device"] = {"deviceId": device_id, "etag": row.etag}
        context["modules"] = [
            {"moduleId": m.module_id, "connectionState": m.connection_state,
             "managedBy": m.managed_by} for m in modules
        ]  # fmt: skip
        return render(request, "devices/device_detail.html", context)
    modules = hub.get_modules(device_id)
    twin, twin_error = read_twin(device_id)
    row = mirror.as_row(identity, twin)
    status = "disabled" if identity["status"] == "enabled" else "enabled"
    context = {
        "device": identity,
        "row": row,
        "modules": sorted(modules, key=lambda m: m["moduleId"]),
        "connection_strings": connection_strings(request, identity, revealed),
        "status_form": StatusForm(initial={"etag": identity["etag"], "status": status}),
        "audit": audit_entries(device_id),
        "twin": twin,
        "twin_error": twin_error,
        "device_id": device_id,
        "module_id": "",
        "can_edit_twin": request.user.has_perm(EDIT_TWIN),
        "can_manage": request.user.has_perm(MANAGE_IDENTITIES),
    }
    return render(request, "devices/device_detail.html", context)


@requires()
@handles_hub_errors
def device_detail(request, device_id):
    return _device_page(request, device_id)


@never_cache  # the answer shows a secret key: no copy of it kept in any cache
@requires(REVEAL_KEYS)
@require_POST
@vary_on_headers("HX-Request")
@handles_hub_errors
def device_connection_string(request, device_id, which):
    identity = hub.get_device(device_id)
    return reveal(
        request, identity, which, lambda r, revealed: _device_page(r, device_id, revealed)
    )


# -- changes (admin) -----------------------------------------------------------------------
def _create_page(request, form, status=200, existing_url=""):
    context = {"form": form, "title": "New device", "submit": "Create device"}
    context["existing_url"] = existing_url
    return render(request, "devices/device_form.html", context, status=status)


def _status_page(request, device_id, form, current=None, status=200):
    context = {"form": form, "title": f"Enable or disable {device_id}", "submit": "Change status"}
    context.update(device_id=device_id, current=current)
    return render(request, "devices/device_form.html", context, status=status)


@requires(MANAGE_IDENTITIES)
def device_create(request):
    form = DeviceCreateForm(request.POST or None)
    status, existing = 200, ""
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        device_id = data["device_id"]
        try:
            made = hub.create_device(
                device_id, data["primary_key"], data["secondary_key"], data["status"]
            )
        except hub.Conflict as error:
            form.add_error("device_id", "A device with that id exists.")
            existing, status = reverse("devices:device-detail", args=[device_id]), error.status
        except hub.BadRequest as error:
            form.add_error("device_id", error.detail or error.message)
            status = 400
        except hub.HubError as error:
            form.add_error(None, error.message)
            status = status_of(error)
        else:
            mirror.save_device(made)
            keys = "supplied" if data["primary_key"] else "generated"
            AuditEntry.record(
                request.user, Action.DEVICE_CREATED, device_id, status=made["status"], keys=keys
            )
            messages.success(request, f"Device {device_id} created.")
            return redirect("devices:device-detail", device_id)
    elif form.is_bound:
        status = 400
    return _create_page(request, form, status, existing)


@requires(MANAGE_IDENTITIES)
@handles_hub_errors
def device_status(request, device_id):
    """Enable or disable with a reason. GET shows the form on its own (the device page
    carries the same form inline)."""
    if request.method != "POST":
        current = hub.get_device(device_id)
        status = "disabled" if current["status"] == "enabled" else "enabled"
        form = StatusForm(initial={"etag": current["etag"], "status": status})
        return _status_page(request, device_id, form, current)
    form = StatusForm(request.POST)
    if not form.is_valid():
        return _status_page(request, device_id, form, status=400)
    data = form.cleaned_data
    current = None
    try:
        current = hub.get_device(device_id)
        updated = hub.update_device(
            {**current, "etag": data["etag"]}, status=data["status"], status_reason=data["reason"]
        )
    except hub.NotFound:
        raise
    except hub.PreconditionFailed as error:
        # Show what the hub holds now and carry its etag, so a second submit is a choice.
        form = StatusForm({**request.POST.dict(), "etag": current["etag"]})
        form.is_valid()
        form.add_error(None, stale(f"Device {device_id}"))
        return _status_page(request, device_id, form, current, error.status)
    except hub.HubError as error:
        form.add_error(None, error.message)
        return _status_page(request, device_id, form, current, status_of(error))
    mirror.save_device(updated)
    enabled = updated["status"] == "enabled"
    action = Action.DEVICE_ENABLED if enabled else Action.DEVICE_DISABLED
    AuditEntry.record(request.user, action, device_id, reason=data["reason"])
    messages.success(request, f"Device {device_id} is now {updated['status']}.")
    return redirect("devices:device-detail", device_id)


@requires(MANAGE_IDENTITIES)
@require_POST
@handles_hub_errors
def device_regenerate_key(request, device_id):
    form = RegenerateKeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose which key to regenerate: primary or secondary.")
        return redirect("devices:device-detail", device_id)
    which, etag = form.cleaned_data["which"], form.cleaned_data["etag"]
    current = hub.get_device(device_id)
    try:
        updated = hub.update_device(
            {**current, "etag": etag},
            status_reason=current.get("statusReason"),
            **{f"{which}_key": ""},  # "" asks the hub for a new key
        )
    except hub.PreconditionFailed:
        messages.error(request, stale(f"Device {device_id}"))
        return redirect("devices:device-detail", device_id)
    mirror.save_device(updated)
    AuditEntry.record(request.user, Action.DEVICE_KEY_REGENERATED, device_id, key=which)
    messages.success(
        request,
        f"New {which} key for {device_id}: anything still using the old one can no longer connect.",
    )
    return redirect("devices:device-detail", device_id)


@requires(MANAGE_IDENTITIES)
@handles_hub_errors
def device_delete(request, device_id):
    form = EtagForm(request.POST or None)
    status = 400 if form.is_bound else 200
    if request.method == "POST" and form.is_valid():
        try:
            hub.delete_device(device_id, form.cleaned_data["etag"])
        except hub.PreconditionFailed as error:
            status = error.status
        else:
            mirror.forget_device(device_id)
            AuditEntry.record(request.user, Action.DEVICE_DELETED, device_id)
            messages.success(request, f"Device {device_id} and its modules were deleted.")
            return redirect("devices:device-list")
    device = hub.get_device(device_id)
    if status == 412:  # ask again, showing what the hub holds now
        form = EtagForm({"etag": device["etag"]})
        form.is_valid()
        form.add_error(None, stale(f"Device {device_id}"))
    elif not form.is_bound:
        form = EtagForm(initial={"etag": device["etag"]})
    context = {"device": device, "modules": hub.get_modules(device_id), "form": form}
    return render(request, "devices/device_confirm_delete.html", context, status=status)
