"""Websocket routes, each wrapped in the checks it needs.

Pages authenticate with their session cookie, so their route checks the origin (scheme,
host and port: devices/origins.py) and loads the user. Simulated modules are not browsers:
they hand in events with a signed token (devices.events.ingest_token), and send no Origin
or cookie.
"""

from channels.auth import AuthMiddlewareStack
from django.urls import re_path

from devices.consumers import IngestConsumer, ModuleEventsConsumer
from devices.origins import SameOriginValidator

# Ids are URL-encoded in the path (IoT Hub ids may hold ``? # % :``); never contain ``/``.
websocket_urlpatterns = [
    re_path(
        r"^ws/modules/(?P<device_id>[^/]+)/(?P<module_id>[^/]+)/$",
        SameOriginValidator(AuthMiddlewareStack(ModuleEventsConsumer.as_asgi())),
    ),
    re_path(r"^ws/ingest/$", IngestConsumer.as_asgi()),
]
