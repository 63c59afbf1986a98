"""The module page and what an operator does to a module: reveal its connection strings,
create it, regenerate a key, delete it."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from .. import hub, mirror
from ..access import EDIT_TWIN, MANAGE_IDENTITIES, REVEAL_KEYS, requires
from ..forms import EtagForm, ModuleCreateForm, RegenerateKeyForm
from ..models import AuditEntry
from .common import handles_hub_errors
from .devices import audit_entries, connection_strings, read_twin, reveal, stale, status_of

Action = AuditEntry.Action


def _module_page(request, device_id: str, module_id: str, revealed: dict | None = None):
    identity = hub.get_module(device_id, module_id)
    twin, twin_error = read_twin(device_id, module_id)
    row = mirror.save_module(identity, twin)
    context = {
        "module": identity,
        "row": row,
        "connection_strings": connection_strings(request, identity, revealed),
        "keys_form": RegenerateKeyForm(initial={"etag": identity["etag"]}),
        "audit": audit_entries(device_id, module_id),
        "twin": twin,
        "twin_error": twin_error,
        "device_id": device_id,
        "module_id": module_id,
        "can_edit_twin": request.user.has_perm(EDIT_TWIN),
        "can_manage": request.user.has_perm(MANAGE_IDENTITIES),
    }
    return render(request, "devices/module_detail.html", context)


@requires()
@handles_hub_errors
def module_detail(request, device_id, module_id):
    return _module_page(request, device_id, module_id)


@requires(REVEAL_KEYS)
@require_POST
@vary_on_headers("HX-Request")
@handles_hub_errors
def module_connection_string(request, device_id, module_id, which):
    identity = hub.get_module(device_id, module_id)

    def page(request, revealed):
        return _module_page(request, device_id, module_id, revealed)

    return reveal(request, identity, which, page)


@requires(MANAGE_IDENTITIES)
@handles_hub_errors
def module_create(request, device_id):
    """As the tutorial does, asking for a module id that exists opens that module."""
    form = ModuleCreateForm(request.POST or None)
    status = 400 if form.is_bound else 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        module_id = data["module_id"]
        try:
            made = hub.create_module(
                device_id, module_id, data["primary_key"], data["secondary_key"]
            )
        except hub.Conflict:
            messages.info(request, f"Module {module_id} already exists on {device_id}: here it is.")
            return redirect("devices:module-detail", device_id, module_id)
        except hub.NotFound:
            raise
        except hub.BadRequest as error:
            form.add_error("module_id", error.detail or error.message)
        except hub.HubError as error:
            form.add_error(None, error.message)
            status = status_of(error)
        else:
            mirror.save_module(made)
            keys = "supplied" if data["primary_key"] else "generated"
            AuditEntry.record(request.user, Action.MODULE_CREATED, device_id, module_id, keys=keys)
            messages.success(request, f"Module {module_id} created on {device_id}.")
            return redirect("devices:module-detail", device_id, module_id)
    elif not form.is_bound:
        hub.get_device(device_id)  # an unknown device is a 404 page, not a form
    context = {"form": form, "device_id": device_id}
    return render(request, "devices/module_form.html", context, status=status)


@requires(MANAGE_IDENTITIES)
@require_POST
@handles_hub_errors
def module_regenerate_key(request, device_id, module_id):
    form = RegenerateKeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose which key to regenerate: primary or secondary.")
        return redirect("devices:module-detail", device_id, module_id)
    which, etag = form.cleaned_data["which"], form.cleaned_data["etag"]
    current = hub.get_module(device_id, module_id)
    try:
        updated = hub.update_module_keys({**current, "etag": etag}, **{f"{which}_key": ""})
    except hub.PreconditionFailed:
        messages.error(request, stale(f"Module {device_id}/{module_id}"))
        return redirect("devices:module-detail", device_id, module_id)
    mirror.save_module(updated)
    AuditEntry.record(request.user, Action.MODULE_KEY_REGENERATED, device_id, module_id, key=which)
    messages.success(
        request,
        f"New {which} key for {device_id}/{module_id}: anything still using the old one can "
        "no longer connect.",
    )
    return redirect("devices:module-detail", device_id, module_id)


@requires(MANAGE_IDENTITIES)
@handles_hub_errors
def module_delete(request, device_id, module_id):
    form = EtagForm(request.POST or None)
    status = 400 if form.is_bound else 200
    if request.method == "POST" and form.is_valid():
        try:
            hub.delete_module(device_id, module_id, form.cleaned_data["etag"])
        except hub.PreconditionFailed as error:
            status = error.status
        else:
            mirror.forget_module(device_id, module_id)
            AuditEntry.record(request.user, Action.MODULE_DELETED, device_id, module_id)
            messages.success(request, f"Module {module_id} was deleted from {device_id}.")
            return redirect("devices:device-detail", device_id)
    module = hub.get_module(device_id, module_id)
    if status == 412:  # ask again, showing what the hub holds now
        form = EtagForm({"etag": module["etag"]})
        form.is_valid()
        form.add_error(None, stale(f"Module {device_id}/{module_id}"))
    elif not form.is_bound:
        form = EtagForm(initial={"etag": module["etag"]})
    context = {"module": module, "form": form}
    return render(request, "devices/module_confirm_delete.html", context, status=status)
