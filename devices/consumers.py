"""The websockets: pages receive a module's live events; simulated modules hand them in."""

import asyncio
import logging
import time
from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings
from django.contrib import auth

from devices.access import VIEW
from devices.events import ingest_ids, module_group, parse_event, send_module_event, user_group
from devices.models import RecentEvent

log = logging.getLogger(__name__)

# Channel layers drop group members after their group_expiry (a day by default): a page open
# longer would stop receiving events while still saying "Live". Joining again keeps it in.
REJOIN_SECONDS = 3600
# Events are kept for pages that open later (RecentEvent) a little after they are sent, a
# burst at a time: database work in the sync thread while the event loop hands an event to
# 100 pages slowed every page by ~5 ms (the two threads contend for the GIL).
SAVE_AFTER_SECONDS = 0.05
# A page checks its session again before forwarding an event when it last did longer ago than
# this: for what no signal reports (a session expiring or deleted, rows changed by update()).
# Logouts, password, is_active and role changes close it at once (devices/signals.py).
RECHECK_SECONDS = 30


class ModuleEventsConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/modules/<device_id>/<module_id>/``: forwards every event sent to the module's group.

    Only while the page's session may watch (``allowed``): anonymous users, inactive ones and
    users who may not view modules are refused, and an open socket closes when its session
    ends or its account loses access (``access_changed``). The origin is checked by
    SameOriginValidator in routing.py. The ids come URL-encoded in the URL; the server
    (daphne, and WebsocketCommunicator in tests) has already decoded ``scope["path"]``, so the
    route's ids are used as they are: decoding again would corrupt ids holding ``%``.
    """

    joined = ()
    rejoin = None
    ended = False
    checked_at = 0.0

    async def connect(self):
        self.session_key = self.scope["session"].session_key
        user = await self.allowed()
        if user is None:
            await self.close()
            return
        ids = self.scope["url_route"]["kwargs"]
        self.joined = [module_group(ids["device_id"], ids["module_id"]), user_group(user.pk)]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        self.rejoin = asyncio.create_task(self.stay_in_groups())
        # What happened just before, marked as such. An event sent before joining is saved
        # within SAVE_AFTER_SECONDS, so wait that long; one sent after arrives live too, and
        # pages show each event once.
        await asyncio.sleep(SAVE_AFTER_SECONDS * 2)
        for event in await self.recent(ids["device_id"], ids["module_id"]):
            await self.send_json({**event, "replayed": True})

    async def stay_in_groups(self):
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            for group in self.joined:
                try:
                    await self.channel_layer.group_add(group, self.channel_name)
                except Exception:  # Redis away for a moment: the next round joins again
                    log.exception("Could not rejoin %s", group)

    async def disconnect(self, code):
        if self.rejoin:
            self.rejoin.cancel()
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def dispatch(self, message):
        # Channels hops to its one sync thread before every handler to close stale database
        # connections; forwarding an event touches no database, and with 100 pages open that
        # hop was half the web process's time (bench/event_latency.py).
        if message["type"] == "module.event":
            await self.module_event(message)
        else:
            await super().dispatch(message)

    async def module_event(self, message):
        if self.ended:
            return
        if time.monotonic() - self.checked_at > RECHECK_SECONDS and not await self.recheck():
            return
        await self.send_json(message["event"])

    async def access_changed(self, message):
        """This account's access may have changed (devices/signals.py); its session logged
        out if ``ended_session`` is this page's: the row is being deleted, nothing to check."""
        if message["ended_session"] and message["ended_session"] == self.session_key:
            await self.end()
        else:
            await self.recheck()

    async def recheck(self) -> bool:
        if await self.allowed() is None:
            await self.end()
            return False
        return True

    async def end(self):
        self.ended = True
        await self.close()

    @database_sync_to_async
    def allowed(self):
        """The session's user if it may watch now, else None: the checks a page request goes
        through (AuthenticationMiddleware's get_user, then access.requires()), on the session
        as it is in the store now. get_user finds no user for a session that is gone, an
        inactive account, or a password changed since the session logged in."""
        self.checked_at = time.monotonic()
        if not self.session_key:
            return None
        store = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key)
        user = auth.get_user(SimpleNamespace(session=store))
        return user if user.is_authenticated and user.has_perm(VIEW) else None

    @database_sync_to_async
    def recent(self, device_id: str, module_id: str) -> list[dict]:
        return RecentEvent.of_module(device_id, module_id)


class IngestConsumer(AsyncWebsocketConsumer):
    """``/ws/ingest/``: a simulated module's events, published to its module's group.

    The simulator is a process of its own, and the in-memory channel layer lives inside the
    web process, so the simulator cannot publish on the layer itself; it hands its events to
    whichever web process it reaches, which publishes them (on Redis, to every web process).
    It authenticates with ``Authorization: Bearer <ingest_token(device_id, module_id)>`` and
    may only send events of that module.
    """

    ids: tuple[str, str] | None = None
    saver: asyncio.Task | None = None

    async def connect(self):
        self.unsaved: list[dict] = []
        headers = dict(self.scope.get("headers", ()))
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        self.ids = ingest_ids(token.strip()) if scheme.lower() == "bearer" else None
        if self.ids is None:
            await self.close()  # before accept: the handshake is refused with 403
            return
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        try:
            event = parse_event(text_data or bytes_data or b"", self.ids)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError too
            log.warning("Refused an event from the simulator of %s/%s: %s", *self.ids, e)
            await self.close(code=4400)
            return
        await send_module_event(event)
        self.unsaved.append(event)
        if self.saver is None or self.saver.done():
            self.saver = asyncio.create_task(self.save_soon())

    async def save_soon(self):
        await asyncio.sleep(SAVE_AFTER_SECONDS)
        await self.save()

    async def save(self):
        events, self.unsaved = self.unsaved, []
        if not events:
            return
        try:
            await database_sync_to_async(RecentEvent.keep)(events)
        except Exception:  # the pages have them; only pages opening later miss them
            log.exception("Could not keep %d events of %s/%s", len(events), *self.ids)

    async def disconnect(self, code):
        if self.saver:
            self.saver.cancel()
        if self.ids:
            await self.save()
