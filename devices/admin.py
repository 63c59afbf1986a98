"""The mirror and the audit log in the Django admin, read-only: the hub is the source of
truth for identities, and audit entries are never edited."""

from django.contrib import admin

from .models import AuditEntry, Device, Module


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdmin):
    list_display = [
        "device_id", "status", "status_reason", "connection_state", "last_activity_time",
        "iot_edge", "twin_desired_version", "twin_reported_version", "synced_at",
    ]  # fmt: skip
    list_filter = ["status", "connection_state", "iot_edge", "authentication_type"]
    search_fields = ["device_id", "status_reason"]


@admin.register(Module)
class ModuleAdmin(ReadOnlyAdmin):
    list_display = [
        "module_id", "device", "managed_by", "connection_state", "last_activity_time",
        "twin_desired_version", "twin_reported_version", "synced_at",
    ]  # fmt: skip
    list_filter = ["connection_state"]
    list_select_related = ["device"]
    search_fields = ["module_id", "device__device_id", "managed_by"]


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "username", "action", "device_id", "module_id"]
    list_filter = ["action", "at"]
    search_fields = ["username", "device_id", "module_id"]
    date_hierarchy = "at"
