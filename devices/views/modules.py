"""The module page and what an operator does to a module: reveal its connection strings,
create it, regenerate a key, delete it, start and stop its simulator.

The page also shows the module's live events (static/js/live.js, over the websocket of
devices/consumers.py), and refreshes its twin view and simulator card from the partial
views here as events arrive.
"""

import threading

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from .. import hub, mirror, simulator_control
from ..access import EDIT_TWIN, MANAGE_IDENTITIES, REVEAL_KEYS, forbidden, requires
from ..events import AT, module_group, utc_timestamp
from ..forms import EtagForm, ModuleCreateForm, RegenerateKeyForm
from ..models import AuditEntry
from ..twin_forms import DesiredForm
from .common import handles_hub_errors
from .devices import (
    audit_entries,
    connection_strings,
    last_known_context,
    read_twin,
    reveal,
    stale,
    status_of,
    with_audit_log,
)

Action = AuditEntry.Action
SHARED_READ = 10  # seconds an event's twin read serves the pages refreshing after it


def _module_page(request, device_id: str, module_id: str, revealed: dict | None = None):
    try:
        identity = hub.get_module(device_id, module_id)
    except hub.HubUnavailable as error:
        context = last_known_context(request, error, device_id, module_id)
        context["module"] = {"etag": context["row"].etag}
        context.update(_simulator_context(request, device_id, module_id))
        context["rendered_at"] = utc_timestamp()
        return render(request, "devices/module_detail.html", context)
    twin, twin_error = read_twin(device_id, module_id)
    row = mirror.as_row(identity, twin)
    can_edit_twin = request.user.has_perm(EDIT_TWIN)
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
        "can_edit_twin": can_edit_twin,
        "can_manage": request.user.has_perm(MANAGE_IDENTITIES),
        **_simulator_context(request, device_id, module_id),
        # live.js acts on events after this (replayed or live), not on older ones.
        "rendered_at": utc_timestamp(),
    }
    if can_edit_twin and twin:
        # The inline desired form (partials/desired_card.html), posted to the twin editor.
        context.update(
            form=DesiredForm(twin=twin),
            editor="form",
            inline=True,
            form_url=reverse("devices:module-twin-form", args=[device_id, module_id]),
        )
    return render(request, "devices/module_detail.html", context)


@requires()
@handles_hub_errors
def module_detail(request, device_id, module_id):
    return _module_page(request, device_id, module_id)


@requires()
@require_GET
@handles_hub_errors
def module_twin(request, device_id, module_id):
    """The twin's read-only view alone: the module page refreshes it as events arrive, asking
    for it as of the newest event (``?after=<the event's time>``). Every page open on the
    module asks at once, so the twin read for an event is shared for a while: one hub read
    per event and web process, not per page (a real hub throttles twin reads)."""
    after = request.GET.get("after", "")
    if AT.fullmatch(after):
        twin = shared_twin_read(device_id, module_id, after)
    else:
        twin = hub.get_twin(device_id, module_id)
    context = {
        "twin": twin,
        "device_id": device_id,
        "module_id": module_id,
        "can_edit_twin": request.user.has_perm(EDIT_TWIN),
    }
    return render(request, "devices/partials/twin.html", context)


_reading: dict[str, threading.Lock] = {}
_reading_guard = threading.Lock()


def shared_twin_read(device_id: str, module_id: str, after: str) -> dict:
    """The twin read once for all the requests asking for it as of the event at ``after``
    (they come together, on threads of their own): the first reads, the others wait for it."""
    key = f"twin:{module_group(device_id, module_id)}:{after}"
    with _reading_guard:
        lock = _reading.setdefault(key, threading.Lock())
    try:
        with lock:
            twin = cache.get(key)
            if twin is None:
                twin = hub.get_twin(device_id, module_id)
                cache.set(key, twin, SHARED_READ)
            return twin
    finally:
        with _reading_guard:
            _reading.pop(key, None)


# -- the simulated module ------------------------------------------------------------------
def _simulator_context(request, device_id: str, module_id: str) -> dict:
    running = simulator_control.status(device_id, module_id)
    return {
        "simulator": running,
        "simulator_since": parse_datetime(running.started_at) if running else None,
        "simulator_url": reverse("devices:module-simulator", args=[device_id, module_id]),
        "can_run_simulator": request.user.has_perm(EDIT_TWIN),
    }


def _start_simulator(request, device_id: str, module_id: str) -> str:
    running = simulator_control.start(device_id, module_id, settings.EVENTS_URL)
    AuditEntry.record(request.user, Action.SIMULATOR_STARTED, device_id, module_id, pid=running.pid)
    return f"Simulator started for {device_id}/{module_id} (process {running.pid})."


def _stop_simulator(request, device_id: str, module_id: str) -> str:
    if not simulator_control.stop(device_id, module_id):
        raise simulator_control.ControlError(
            f"No simulator was running for {device_id}/{module_id}: nothing to stop."
        )
    AuditEntry.record(request.user, Action.SIMULATOR_STOPPED, device_id, module_id)
    return f"Simulator for {device_id}/{module_id} stopped."


SIMULATOR_ACTIONS = {"start": _start_simulator, "stop": _stop_simulator}


@requires()
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def module_simulator(request, device_id, module_id):
    """GET: the simulator card (the page refreshes it). POST action=start|stop (operators):
    for htmx the card saying what happened, else back to the module page with a message."""
    done = problem = ""
    if request.method == "POST":
        if not request.user.has_perm(EDIT_TWIN):
            return forbidden(request, EDIT_TWIN)
        act = SIMULATOR_ACTIONS.get(request.POST.get("action", ""))
        try:
            if act is None:
                raise simulator_control.ControlError("Choose Start or Stop.")
            done = act(request, device_id, module_id)
        except (simulator_control.ControlError, hub.HubError) as error:
            problem = error.message
        if not request.htmx:
            (messages.success if done else messages.error)(request, done or problem)
            return redirect("devices:module-detail", device_id, module_id)
    context = {
        "device_id": device_id,
        "module_id": module_id,
        "simulator_done": done,
        "simulator_error": problem,
        **_simulator_context(request, device_id, module_id),
    }
    response = render(request, "devices/partials/simulator.html", context)
    if done:
        with_audit_log(request, response, device_id, module_id)
    return response


@never_cache  # the answer shows a secret key: no copy of it kept in any cache
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
