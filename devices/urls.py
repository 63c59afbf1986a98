from django.urls import path, register_converter

from .converters import HubIdConverter
from .views import device_list, devices, modules, sync, twins

app_name = "devices"
register_converter(HubIdConverter, "hubid")

urlpatterns = [
    path("", device_list.device_list, name="device-list"),
    path("sync/", sync.sync, name="sync"),
    path("devices/new/", devices.device_create, name="device-create"),
    path("devices/<hubid:device_id>/", devices.device_detail, name="device-detail"),
    path("devices/<hubid:device_id>/status/", devices.device_status, name="device-status"),
    path("devices/<hubid:device_id>/keys/", devices.device_regenerate_key, name="device-keys"),
    path("devices/<hubid:device_id>/delete/", devices.device_delete, name="device-delete"),
    path(
        "devices/<hubid:device_id>/connection-string/<str:which>/",
        devices.device_connection_string,
        name="device-connection-string",
    ),
    path("devices/<hubid:device_id>/modules/new/", modules.module_create, name="module-create"),
    path(
        "devices/<hubid:device_id>/modules/<hubid:module_id>/",
        modules.module_detail,
        name="module-detail",
    ),
    path(
        "devices/<hubid:device_id>/modules/<hubid:module_id>/twin/",
        modules.module_twin,
        name="module-twin",
    ),
    path(
        "devices/<hubid:device_id>/modules/<hubid:module_id>/simulator/",
        modules.module_simulator,
        name="module-simulator",
    ),
    path(
        "devices/<hubid:device_id>/modules/<hubid:module_id>/delete/",
        modules.module_delete,
        name="module-delete",
    ),
    path(
        "devices/<hubid:device_id>/modules/<hubid:module_id>/keys/",
        modules.module_regenerate_key,
        name="module-keys",
    ),
    path(
        "devices/<hubid:device_id>/modules/<hubid:module_id>/connection-string/<str:which>/",
        modules.module_connection_string,
        name="module-connection-string",
    ),
    # Twins: the same views serve devices (no module id) and modules.
    path("devices/<hubid:device_id>/twin/json/", twins.twin_json, name="device-twin-json"),
    path("devices/<hubid:device_id>/twin/desired/", twins.twin_form, name="device-twin-form"),
    path(
        "devices/<hubid:device_id>/modules/<hubid:module_id>/twin/json/",
        twins.twin_json,
        name="module-twin-json",
    ),
    path(
        "devices/<hubid:device_id>/modules/<hubid:module_id>/twin/desired/",
        twins.twin_form,
        name="module-twin-form",
    ),
]
