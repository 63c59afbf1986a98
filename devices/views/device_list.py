"""The device list: the mirror searched, filtered and paged, and IoT Hub queries run live."""

import json

from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import render
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from .. import hub
from ..access import requires
from ..converters import identity_url
from ..models import Device, Module

PAGE_SIZE = 50
HUB_PAGE_SIZE = 100
# What the table shows; the twin documents themselves can weigh 64 KB a row.
COLUMNS = [
    "device_id", "status", "connection_state", "last_activity_time",
    "twin_desired_version", "twin_reported_version", "synced_at",
]  # fmt: skip


def listing(search="", status="", connection=""):
    """Mirror devices matching the filters, each with its module count. The count is a
    subquery per row shown (on the module index), not a join and GROUP BY over them all."""
    devices = Device.objects.only(*COLUMNS).order_by("device_id")
    if search:
        devices = devices.filter(device_id__icontains=search)
    if status:
        devices = devices.filter(status=status)
    if connection:
        devices = devices.filter(connection_state=connection)
    modules = (
        Module.objects.filter(device=OuterRef("pk"))
        .order_by()
        .values("device")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return devices.annotate(
        module_count=Coalesce(Subquery(modules, output_field=IntegerField()), 0)
    )


def full_query(text: str) -> str:
    """What the operator typed, as a query: a bare condition searches devices."""
    text = text.strip()
    if text.lower().startswith("select"):
        return text
    if text.lower().startswith("where "):
        text = text[6:]
    return f"SELECT * FROM devices WHERE {text}"


def hub_row(item) -> dict:
    """A query result for the table: links for ids; a twin shows its tags and versions,
    a projection (``SELECT deviceId, tags.location``) the values it selected, whatever their
    type (``SELECT deviceId AS properties`` makes "properties" a string)."""
    if not isinstance(item, dict):
        item = {"value": item}
    properties = item.get("properties")
    twin = isinstance(properties, dict)
    device_id, module_id = item.get("deviceId"), item.get("moduleId")
    ids = {"deviceId": device_id, "moduleId": module_id}
    if twin:
        data = item.get("tags") or {}
    else:
        data = {k: v for k, v in item.items() if k not in ids or not isinstance(v, str)}
    section = (properties or {}) if twin else {}

    def version(name):
        value = section.get(name)
        return value.get("$version") if isinstance(value, dict) else None

    def text(value):
        return value if isinstance(value, str) else None

    return {
        "device_id": text(device_id),
        "module_id": text(module_id),
        "device_url": identity_url(device_id),
        "module_url": identity_url(device_id, module_id) if module_id else "",
        "status": text(item.get("status")),
        "connection_state": text(item.get("connectionState")),
        "desired_version": version("desired"),
        "reported_version": version("reported"),
        "data": json.dumps(data, sort_keys=True) if data else "",
        "twin": twin,
    }


def run_hub_query(text: str, continuation: str) -> dict:
    """One page of the operator's query, or the hub's reason for refusing it."""
    query = full_query(text)
    try:
        items, token = hub.query_page(query, continuation or None, HUB_PAGE_SIZE)
    except hub.HubError as error:
        return {"query": query, "error": error, "rows": [], "continuation": None}
    rows = [hub_row(item) for item in items]
    return {"query": query, "error": None, "rows": rows, "continuation": token}


def _choice(value: str, choices) -> str:
    return value if value in dict(choices) else ""


@requires()
@require_GET
@vary_on_headers("HX-Request")
def device_list(request):
    get = request.GET
    filters = {
        "search": get.get("search", "").strip(),
        "status": _choice(get.get("status", ""), Device.Status.choices),
        "connection": _choice(get.get("connection", ""), Device.ConnectionState.choices),
    }
    context = {
        "filters": filters,
        "filtered": any(filters.values()),
        "statuses": Device.Status.choices,
        "connection_states": Device.ConnectionState.choices,
        "hub_query": get.get("hub_query", ""),
        "continuation": get.get("continuation", ""),
    }
    if context["hub_query"].strip():
        context["hub"] = run_hub_query(context["hub_query"], context["continuation"])
    else:
        page = Paginator(listing(**filters), PAGE_SIZE).get_page(get.get("page"))
        context["page"] = page
        # How fresh the rows shown are: sync_hub stamps every row it confirmed, so after a
        # sync this is its time; a dashboard write since makes its row newer, never older.
        context["synced_at"] = min((d.synced_at for d in page if d.synced_at), default=None)
        context["page_link"] = _link_to_page(get)
    if request.htmx and request.htmx.target == "results":
        return render(request, "devices/partials/device_results.html", context)
    return render(request, "devices/device_list.html", context)


def _link_to_page(params) -> str:
    """``?<the filters>&page=``: pagination links keep the filters."""
    copy = params.copy()
    copy.pop("page", None)
    return f"?{copy.urlencode()}&page=" if copy else "?page="
