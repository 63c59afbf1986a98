"""The dashboard's mirror of the hub's identities, and the audit log.

The hub is the source of truth; these rows let pages list, search and filter 10,000
devices without asking the hub each time. Keys are never stored here.
"""

from django.conf import settings
from django.db import models, transaction
from django.utils.dateparse import parse_datetime

from devices.converters import identity_url
from devices.events import EVENT_KEYS

NEVER = "0001-01-01T00:00:00Z"


def _time(value):
    if not value or str(value).startswith("0001-01-01"):
        return None
    return parse_datetime(value) if isinstance(value, str) else value


class Identity(models.Model):
    """What a device and a module share: identity fields and a twin snapshot."""

    class Status(models.TextChoices):
        ENABLED = "enabled"
        DISABLED = "disabled"

    class ConnectionState(models.TextChoices):
        CONNECTED = "Connected"
        DISCONNECTED = "Disconnected"

    connection_state = models.CharField(
        max_length=16, choices=ConnectionState.choices, default=ConnectionState.DISCONNECTED
    )
    connection_state_updated_time = models.DateTimeField(null=True, blank=True)
    last_activity_time = models.DateTimeField(null=True, blank=True)
    authentication_type = models.CharField(max_length=32, default="sas")
    generation_id = models.CharField(max_length=128, blank=True)
    etag = models.CharField(max_length=128, blank=True)

    twin_tags = models.JSONField(default=dict, blank=True)
    twin_desired = models.JSONField(default=dict, blank=True)
    twin_reported = models.JSONField(default=dict, blank=True)
    twin_desired_version = models.IntegerField(null=True, blank=True)
    twin_reported_version = models.IntegerField(null=True, blank=True)
    twin_version = models.IntegerField(null=True, blank=True)
    twin_etag = models.CharField(max_length=128, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def apply_identity(self, doc: dict) -> None:
        """Copy the fields of a hub identity document (device or module JSON)."""
        self.connection_state = doc.get("connectionState") or self.connection_state
        self.connection_state_updated_time = _time(doc.get("connectionStateUpdatedTime"))
        self.last_activity_time = _time(doc.get("lastActivityTime"))
        self.authentication_type = (doc.get("authentication") or {}).get("type") or "sas"
        self.generation_id = doc.get("generationId") or ""
        self.etag = doc.get("etag") or ""

    def apply_twin(self, doc: dict, synced_at) -> None:
        """Copy a hub twin document (from a twin read, write or query)."""
        properties = doc.get("properties") or {}
        desired = properties.get("desired") or {}
        reported = properties.get("reported") or {}
        self.twin_tags = doc.get("tags") or {}
        self.twin_desired = desired
        self.twin_reported = reported
        self.twin_desired_version = desired.get("$version")
        self.twin_reported_version = reported.get("$version")
        self.twin_version = doc.get("version")
        self.twin_etag = doc.get("etag") or ""
        if doc.get("connectionState"):
            self.connection_state = doc["connectionState"]
        if "lastActivityTime" in doc:
            self.last_activity_time = _time(doc.get("lastActivityTime"))
        self.synced_at = synced_at


class Device(Identity):
    device_id = models.CharField(max_length=128, unique=True)
    status = models.CharField(
        max_length=16, choices=Identity.Status.choices, default=Identity.Status.ENABLED
    )
    status_reason = models.CharField(max_length=128, blank=True)
    status_updated_time = models.DateTimeField(null=True, blank=True)
    iot_edge = models.BooleanField(default=False)

    class Meta:
        ordering = ["device_id"]
        permissions = [
            ("reveal_connection_string", "Reveal device and module connection strings"),
            ("edit_twin", "Edit twin tags and desired properties"),
            ("manage_identities", "Create, disable, delete identities and regenerate keys"),
        ]
        indexes = [
            models.Index(fields=["status", "device_id"]),
            models.Index(fields=["connection_state", "device_id"]),
        ]

    def __str__(self) -> str:
        return self.device_id

    @property
    def page_url(self) -> str:
        return identity_url(self.device_id)

    def apply_identity(self, doc: dict) -> None:
        super().apply_identity(doc)
        self.status = doc.get("status") or self.status
        self.status_reason = doc.get("statusReason") or ""
        self.status_updated_time = _time(doc.get("statusUpdatedTime"))
        self.iot_edge = bool((doc.get("capabilities") or {}).get("iotEdge"))

    def apply_twin(self, doc: dict, synced_at) -> None:
        super().apply_twin(doc, synced_at)
        if doc.get("status"):
            self.status = doc["status"]
            self.status_reason = doc.get("statusReason") or ""


class Module(Identity):
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="modules")
    module_id = models.CharField(max_length=128)
    managed_by = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["device__device_id", "module_id"]
        constraints = [
            models.UniqueConstraint(fields=["device", "module_id"], name="unique_module_per_device")
        ]

    def __str__(self) -> str:
        return f"{self.device.device_id}/{self.module_id}"

    def apply_identity(self, doc: dict) -> None:
        super().apply_identity(doc)
        self.managed_by = doc.get("managedBy") or ""


class AuditEntry(models.Model):
    """Who did what, when. Written once, never changed: save() refuses updates."""

    class Action(models.TextChoices):
        DEVICE_CREATED = "device.created"
        DEVICE_ENABLED = "device.enabled"
        DEVICE_DISABLED = "device.disabled"
        DEVICE_DELETED = "device.deleted"
        DEVICE_KEY_REGENERATED = "device.key_regenerated"
        MODULE_CREATED = "module.created"
        MODULE_DELETED = "module.deleted"
        MODULE_KEY_REGENERATED = "module.key_regenerated"
        TWIN_UPDATED = "twin.updated"
        TWIN_REPLACED = "twin.replaced"
        CONNECTION_STRING_REVEALED = "connection_string.revealed"
        SIMULATOR_STARTED = "simulator.started"
        SIMULATOR_STOPPED = "simulator.stopped"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150)  # kept if the user is deleted
    action = models.CharField(max_length=40, choices=Action.choices)
    device_id = models.CharField(max_length=128, db_index=True)
    module_id = models.CharField(max_length=128, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["device_id", "module_id", "-at"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.device_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("audit entries cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit entries cannot be deleted")

    @classmethod
    def record(cls, user, action, device_id, module_id="", **detail) -> "AuditEntry":
        return cls.objects.create(
            user=user,
            username=user.get_username(),
            action=action,
            device_id=device_id,
            module_id=module_id,
            detail=detail,
        )


class RecentEvent(models.Model):
    """A module's latest live events (devices/events.py shape), kept so that a page opening
    or reconnecting shows what happened just before: after an edit on another page, say,
    the module has received and acknowledged it by the time the module page loads."""

    KEEP = 50  # per module

    device_id = models.CharField(max_length=128)
    module_id = models.CharField(max_length=128)
    type = models.CharField(max_length=40)
    version = models.BigIntegerField(null=True)
    patch = models.JSONField(null=True)
    at = models.CharField(max_length=24)  # as the event says it: 2026-11-26T05:40:00.123Z

    class Meta:
        indexes = [models.Index(fields=["device_id", "module_id", "-id"])]

    @classmethod
    def keep(cls, events: list[dict]) -> None:
        """Keep ``events`` (of one module), and only the KEEP newest of the module."""
        with transaction.atomic():
            kept = cls.objects.bulk_create(cls(**event) for event in events)
            of_module = cls.objects.filter(device_id=kept[0].device_id, module_id=kept[0].module_id)
            newest = of_module.order_by("-id").values_list("id", flat=True)
            of_module.filter(id__lt=models.Subquery(newest[cls.KEEP - 1 : cls.KEEP])).delete()

    @classmethod
    def of_module(cls, device_id: str, module_id: str) -> list[dict]:
        """The kept events of the module, oldest first, as pages receive events."""
        rows = cls.objects.filter(device_id=device_id, module_id=module_id).order_by("-id")
        return list(reversed(rows.values(*EVENT_KEYS)[: cls.KEEP]))
