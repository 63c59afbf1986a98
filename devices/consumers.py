"""The websocket a module page opens to receive that module's live events."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from devices.events import module_group

VIEW_MODULE = "devices.view_module"


class ModuleEventsConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/modules/<device_id>/<module_id>/``: forwards every event sent to the module's group.

    Anonymous users and users who may not view modules are refused; the origin is checked by
    AllowedHostsOriginValidator in asgi.py. The ids come URL-encoded in the URL; the server
    (daphne, and WebsocketCommunicator in tests) has already decoded ``scope["path"]``, so the
    route's ids are used as they are: decoding again would corrupt ids holding ``%``.
    """

    group = None

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not await self.may_view(user):
            await self.close()
            return
        ids = self.scope["url_route"]["kwargs"]
        self.group = module_group(ids["device_id"], ids["module_id"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def module_event(self, message):
        await self.send_json(message["event"])

    @database_sync_to_async
    def may_view(self, user) -> bool:
        return user.has_perm(VIEW_MODULE)
