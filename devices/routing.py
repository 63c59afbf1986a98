"""Websocket routes (wrapped in origin checking and session auth by iotadmin/asgi.py)."""

from django.urls import re_path

from devices.consumers import ModuleEventsConsumer

# Ids are URL-encoded in the path (IoT Hub ids may hold ``? # % :``); never contain ``/``.
websocket_urlpatterns = [
    re_path(
        r"^ws/modules/(?P<device_id>[^/]+)/(?P<module_id>[^/]+)/$",
        ModuleEventsConsumer.as_asgi(),
    ),
]
