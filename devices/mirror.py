"""Keeping the dashboard's rows equal to the hub: after each write, and by a full sync."""

from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from . import hub
from .models import Device, Module

# The fields a twin document (query result) carries, by model field name.
TWIN_FIELDS = [
    "twin_tags", "twin_desired", "twin_reported", "twin_desired_version",
    "twin_reported_version", "twin_version", "twin_etag", "synced_at", "connection_state",
    "last_activity_time",
]  # fmt: skip
DEVICE_SYNC_FIELDS = [*TWIN_FIELDS, "status", "status_reason", "etag"]
MODULE_SYNC_FIELDS = [*TWIN_FIELDS, "etag"]
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


def save_twin(device_id: str, module_id: str, twin: dict):
    """Store a twin the hub answered with; creates the row if the mirror lacked it."""
    if module_id:
        identity = hub.get_module(device_id, module_id)
        return save_module(identity, twin)
    device = Device.objects.filter(device_id=device_id).first()
    if device is None:
        return save_device(hub.get_device(device_id), twin)
    device.apply_twin(twin, timezone.now())
    device.save()
    return device


def forget_device(device_id: str) -> None:
    Device.objects.filter(device_id=device_id).delete()


def forget_module(device_id: str, module_id: str) -> None:
    Module.objects.filter(device__device_id=device_id, module_id=module_id).delete()


# -- full sync -----------------------------------------------------------------------------
@dataclass
class SyncResult:
    devices: int = 0
    modules: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    pages: int = 0
    seen_devices: set = field(default_factory=set, repr=False)

    def summary(self) -> str:
        return (
            f"{self.devices} devices and {self.modules} modules on the hub: "
            f"{self.created} created, {self.updated} updated, {self.deleted} deleted"
        )


def _from_twin(obj, doc: dict, now) -> None:
    obj.apply_twin(doc, now)
    if doc.get("deviceEtag"):
        obj.etag = doc["deviceEtag"]


def sync_hub(progress=lambda result: None) -> SyncResult:
    """Pull every device and module through the query API, page by page, and make the
    mirror equal the hub: create what is new, update what changed, delete what is gone."""
    result = SyncResult()
    now = timezone.now()
    devices = {d.device_id: d for d in Device.objects.all()}
    for page in hub.query_all("SELECT * FROM devices"):
        result.pages += 1
        new, changed = [], []
        for doc in page:
            device = devices.get(doc["deviceId"])
            result.devices += 1
            result.seen_devices.add(doc["deviceId"])
            if device is None:
                device = Device(device_id=doc["deviceId"])
                _from_twin(device, doc, now)
                new.append(device)
            elif (
                device.twin_etag != doc.get("etag")
                or device.etag != doc.get("deviceEtag")
                or (device.connection_state != doc.get("connectionState"))
            ):
                _from_twin(device, doc, now)
                changed.append(device)
        with transaction.atomic():
            Device.objects.bulk_create(new, batch_size=BATCH)
            Device.objects.bulk_update(changed, DEVICE_SYNC_FIELDS, batch_size=BATCH)
        for device in new:
            devices[device.device_id] = device
        result.created += len(new)
        result.updated += len(changed)
        progress(result)

    gone = [d.pk for d_id, d in devices.items() if d_id not in result.seen_devices]
    result.deleted += Device.objects.filter(pk__in=gone).delete()[1].get("devices.Device", 0)
    device_pk = {d_id: d.pk for d_id, d in devices.items() if d_id in result.seen_devices}

    modules = {(m.device_id, m.module_id): m for m in Module.objects.all()}
    seen = set()
    for page in hub.query_all("SELECT * FROM devices.modules"):
        result.pages += 1
        new, changed = [], []
        for doc in page:
            pk = device_pk.get(doc["deviceId"])
            if pk is None:  # a device created after the device pass: next sync gets it
                continue
            key = (pk, doc["moduleId"])
            seen.add(key)
            result.modules += 1
            module = modules.get(key)
            if module is None:
                module = Module(device_id=pk, module_id=doc["moduleId"])
                _from_twin(module, doc, now)
                new.append(module)
            elif (
                module.twin_etag != doc.get("etag")
                or module.etag != doc.get("deviceEtag")
                or (module.connection_state != doc.get("connectionState"))
            ):
                _from_twin(module, doc, now)
                changed.append(module)
        with transaction.atomic():
            Module.objects.bulk_create(new, batch_size=BATCH)
            Module.objects.bulk_update(changed, MODULE_SYNC_FIELDS, batch_size=BATCH)
        result.created += len(new)
        result.updated += len(changed)
        progress(result)

    gone = [
        m.pk for key, m in modules.items() if key not in seen and m.device_id in device_pk.values()
    ]
    result.deleted += Module.objects.filter(pk__in=gone).delete()[1].get("devices.Module", 0)
    return result
