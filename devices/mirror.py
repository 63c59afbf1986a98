"""Keeping the dashboard's rows equal to the hub: after each write, and by a full sync."""

import itertools
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from . import hub
from .models import Device, Module, RecentEvent, _time

# The fields a twin document (query result) carries, by model field name.
TWIN_FIELDS = [
    "twin_tags", "twin_desired", "twin_reported", "twin_desired_version",
    "twin_reported_version", "twin_version", "twin_etag", "synced_at", "connection_state",
    "last_activity_time",
]  # fmt: skip
MODULE_SYNC_FIELDS = [*TWIN_FIELDS, "etag", "authentication_type"]
DEVICE_SYNC_FIELDS = [
    *MODULE_SYNC_FIELDS,
    "status",
    "status_reason",
    "status_updated_time",
    "iot_edge",
]
BATCH = 1000


# -- after a write through the dashboard -------------------------------------------------
def save_device(identity: dict, twin: dict | None = None) -> Device:
    device, _ = Device.objects.get_or_create(device_id=identity["deviceId"])
    device.apply_identity(identity)
    if twin is not None:
        device.apply_twin(twin, timezone.now())
    device.save()
    return device


def save_module(identity: dict, twin: dict | None = None) -> Module:
    device = Device.objects.filter(device_id=identity["deviceId"]).first()
    if device is None:
        device = save_device(hub.get_device(identity["deviceId"]))
    module, _ = Module.objects.get_or_create(device=device, module_id=identity["moduleId"])
    module.apply_identity(identity)
    if twin is not None:
        module.apply_twin(twin, timezone.now())
    module.save()
    return module


def as_row(identity: dict, twin: dict | None = None) -> Device | Module:
    """An identity just read from the hub, shaped as a mirror row for a page, not saved:
    opening a page never writes the mirror (a viewer could otherwise add devices to it)."""
    if identity.get("moduleId"):
        row = Module(module_id=identity["moduleId"])
    else:
        row = Device(device_id=identity["deviceId"])
    row.apply_identity(identity)
    if twin is not None:
        row.apply_twin(twin, timezone.now())
    return row


def twin_of(row: Device | Module) -> dict | None:
    """The twin a row last held, in the hub's shape (for pages while the hub is away)."""
    if not row.twin_etag:
        return None
    properties = {"desired": row.twin_desired, "reported": row.twin_reported}
    return {"etag": row.twin_etag, "version": row.twin_version, "tags": row.twin_tags,
            "properties": properties}  # fmt: skip


def last_known(device_id: str, module_id: str = "") -> Device | Module | None:
    if module_id:
        found = Module.objects.filter(device__device_id=device_id, module_id=module_id)
    else:
        found = Device.objects.filter(device_id=device_id)
    return found.first()


def save_twin(device_id: str, module_id: str, twin: dict):
    """Store a twin the hub answered with; the hub is asked for the identity only when the
    mirror lacks the row."""
    if module_id:
        row = Module.objects.filter(device__device_id=device_id, module_id=module_id).first()
        if row is None:
            return save_module(hub.get_module(device_id, module_id), twin)
    else:
        row = Device.objects.filter(device_id=device_id).first()
        if row is None:
            return save_device(hub.get_device(device_id), twin)
    row.apply_twin(twin, timezone.now())
    row.save()
    return row


def forget_device(device_id: str) -> None:
    Device.objects.filter(device_id=device_id).delete()
    RecentEvent.objects.filter(device_id=device_id).delete()


def forget_module(device_id: str, module_id: str) -> None:
    Module.objects.filter(device__device_id=device_id, module_id=module_id).delete()
    RecentEvent.objects.filter(device_id=device_id, module_id=module_id).delete()


# -- full sync -----------------------------------------------------------------------------
@dataclass
class SyncResult:
    devices: int = 0  # on the hub
    modules: int = 0
    created: int = 0  # mirror rows (devices and modules together)
    updated: int = 0
    deleted: int = 0
    pages: int = 0

    def summary(self) -> str:
        return (
            f"{self.devices} devices, {self.modules} modules: "
            f"{self.created} created, {self.updated} updated, {self.deleted} deleted"
        )


def _from_twin(row, doc: dict, now) -> None:
    """A query result is a twin document that also carries the identity's etag."""
    row.apply_twin(doc, now)
    row.etag = doc.get("deviceEtag") or row.etag
    row.authentication_type = doc.get("authenticationType") or row.authentication_type
    if isinstance(row, Device):
        row.status_updated_time = _time(doc.get("statusUpdateTime"))
        row.iot_edge = bool((doc.get("capabilities") or {}).get("iotEdge"))


def _changed(row, doc: dict) -> bool:
    """Whether the hub's document differs from the row. Twin etags change with tags and
    properties, identity etags with status and keys; connection fields change neither."""
    if row.twin_etag != (doc.get("etag") or ""):
        return True
    if doc.get("deviceEtag") and row.etag != doc["deviceEtag"]:
        return True
    if doc.get("connectionState") and row.connection_state != doc["connectionState"]:
        return True
    return "lastActivityTime" in doc and row.last_activity_time != _time(doc["lastActivityTime"])


# What a sync never needs to read back from the mirror: it overwrites them from the hub.
UNREAD = ["twin_tags", "twin_desired", "twin_reported"]


def _sync_devices(result: SyncResult, pages, now, progress) -> None:
    mirror = {d.device_id: d for d in Device.objects.defer(*UNREAD)}
    seen = set()
    for page in pages:
        result.pages += 1
        new, changed = [], []
        for doc in page:
            seen.add(doc["deviceId"])
            device = mirror.get(doc["deviceId"])
            if device is None:
                device = Device(device_id=doc["deviceId"])
                _from_twin(device, doc, now)
                new.append(device)
            elif _changed(device, doc):
                _from_twin(device, doc, now)
                changed.append(device)
        result.devices += len(page)
        with transaction.atomic():
            # ignore_conflicts: a row another sync, or a dashboard write, created meanwhile.
            Device.objects.bulk_create(new, batch_size=BATCH, ignore_conflicts=True)
            Device.objects.bulk_update(changed, DEVICE_SYNC_FIELDS, batch_size=BATCH)
        result.created += len(new)
        result.updated += len(changed)
        progress(result)
    gone = [d.pk for device_id, d in mirror.items() if device_id not in seen]
    for chunk in _chunks(gone):
        # Their modules go with them (on_delete=CASCADE), counted in the total.
        result.deleted += Device.objects.filter(pk__in=chunk).delete()[0]


def _sync_modules(result: SyncResult, pages, now, progress) -> None:
    # Read after the device pass: it includes devices that pass created, and any the
    # dashboard created meanwhile, so none of their modules is taken for deleted.
    device_pk = dict(Device.objects.values_list("device_id", "pk"))
    mirror = {(m.device_id, m.module_id): m for m in Module.objects.defer(*UNREAD)}
    seen = set()
    for page in pages:
        result.pages += 1
        new, changed = [], []
        for doc in page:
            pk = device_pk.get(doc["deviceId"])
            if pk is None:  # its device was created after the device pass: next sync
                continue
            key = (pk, doc["moduleId"])
            seen.add(key)
            module = mirror.get(key)
            if module is None:
                module = Module(device_id=pk, module_id=doc["moduleId"])
                _from_twin(module, doc, now)
                new.append(module)
            elif _changed(module, doc):
                _from_twin(module, doc, now)
                changed.append(module)
        result.modules += len(page)
        with transaction.atomic():
            Module.objects.bulk_create(new, batch_size=BATCH, ignore_conflicts=True)
            Module.objects.bulk_update(changed, MODULE_SYNC_FIELDS, batch_size=BATCH)
        result.created += len(new)
        result.updated += len(changed)
        progress(result)
    gone = [m.pk for key, m in mirror.items() if key not in seen]
    for chunk in _chunks(gone):
        result.deleted += Module.objects.filter(pk__in=chunk).delete()[0]


def _chunks(items: list, size: int = BATCH):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def sync_hub(progress=lambda result: None) -> SyncResult:
    """Pull every device and module through the query API, page by page, and make the
    mirror equal the hub: create what is new, update what changed, delete what is gone.
    Rows the hub confirmed unchanged get ``synced_at`` too: it says when each row was last
    known equal to the hub."""
    result = SyncResult()
    now = timezone.now()
    # The first page is asked for before the mirror is read: a hub that is down (or a
    # dashboard not configured) fails at once, whatever the state of the database.
    devices = hub.query_all("SELECT * FROM devices", hub.QUERY_PAGE_SIZE)
    first = next(devices)
    _sync_devices(result, itertools.chain([first], devices), now, progress)
    modules = hub.query_all("SELECT * FROM devices.modules", hub.QUERY_PAGE_SIZE)
    _sync_modules(result, modules, now, progress)
    stale = Q(synced_at__lt=now) | Q(synced_at__isnull=True)
    Device.objects.filter(stale).update(synced_at=now)
    Module.objects.filter(stale).update(synced_at=now)
    # A module deleted outside the dashboard and made again must not replay the old one's.
    mirrored = Module.objects.filter(
        device__device_id=OuterRef("device_id"), module_id=OuterRef("module_id")
    )
    RecentEvent.objects.exclude(Exists(mirrored)).delete()
    return result
