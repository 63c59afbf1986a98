"""Live module events: their shape, their Channels group, and the one place that sends them
(and the message telling pages to check again that their session may still watch).

An event is a plain dict (JSON as the page receives it)::

    {"type": "twin.desired_received", "device_id": "d1", "module_id": "m1",
     "version": 7, "patch": {...}, "at": "2026-11-26T05:40:00.123Z"}

``version`` is the desired or reported ``$version`` the event concerns; ``patch`` the JSON
the module's callback received or the module sent.
"""

import asyncio
import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core import signing

log = logging.getLogger(__name__)

TYPES = (
    "twin.desired_received",
    "twin.reported_sent",
    "module.connected",
    "module.disconnected",
)


class ModuleEvent(TypedDict):
    type: str
    device_id: str
    module_id: str
    version: int | None
    patch: Any
    at: str


EVENT_KEYS = tuple(ModuleEvent.__annotations__)
AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
MAX_VERSION = 2**63 - 1  # $version is a 64-bit integer on the hub


def utc_timestamp(moment: datetime | None = None) -> str:
    """UTC, ISO 8601 with milliseconds and a Z: 2026-11-26T05:40:00.123Z."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def make_event(type: str, device_id: str, module_id: str, version, patch) -> ModuleEvent:
    if type not in TYPES:
        raise ValueError(f"unknown module event type {type!r}; expected one of {TYPES}")
    return {
        "type": type,
        "device_id": device_id,
        "module_id": module_id,
        "version": version,
        "patch": patch,
        "at": utc_timestamp(),
    }


# A simulator makes a fresh token at each connection; a token is good for a module only.
INGEST_SALT = "iotadmin.events.ingest"
INGEST_TOKEN_MAX_AGE = 300


def parse_event(text: str | bytes, ids: tuple[str, str]) -> ModuleEvent:
    """An event as a simulator of module ``ids`` hands it in (JSON text), keeping only the
    known keys; ValueError saying what is wrong when it is not one."""
    try:
        data = json.loads(text)
    except RecursionError as e:
        raise ValueError("nested far too deeply") from e
    if not isinstance(data, dict):
        raise ValueError("an event must be a JSON object")
    if (data.get("device_id"), data.get("module_id")) != ids:
        raise ValueError("the event is for another module than the token's")
    if data.get("type") not in TYPES:
        raise ValueError(f"unknown event type {data.get('type')!r}")
    version = data.get("version")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or not 0 <= version <= MAX_VERSION
    ):
        raise ValueError("version must be a $version (an integer) or null")
    if not isinstance(data.get("at"), str) or not AT.fullmatch(data["at"]):
        raise ValueError("at must be UTC, ISO 8601 with milliseconds: 2026-11-26T05:40:00.123Z")
    return {key: data.get(key) for key in EVENT_KEYS}


def ingest_token(device_id: str, module_id: str) -> str:
    """What a simulated module shows the web app's ingest websocket (``Authorization: Bearer``):
    signed with SECRET_KEY, so only a process holding the app's settings can make one."""
    return signing.dumps([device_id, module_id], salt=INGEST_SALT, compress=True)


def ingest_ids(token: str) -> tuple[str, str] | None:
    """The (device_id, module_id) a token was made for, or None if it is forged or too old."""
    try:
        ids = signing.loads(token, salt=INGEST_SALT, max_age=INGEST_TOKEN_MAX_AGE)
    except signing.BadSignature:  # SignatureExpired is one too
        return None
    if isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, str) for i in ids):
        return ids[0], ids[1]
    return None


def module_group(device_id: str, module_id: str) -> str:
    """The Channels group of one module's pages.

    Group names allow only ``[a-zA-Z0-9-_.]`` and fewer than 100 characters, while IoT Hub ids
    may hold ``- . + % _ # * ? ! ( ) , = @ $ ' : ;`` and are up to 128 characters each, so the
    name is ``module.`` and the SHA-256 of the two ids (JSON-encoded together, so no pair of
    ids can be confused with another): 71 characters, safe for any id.
    """
    ids = json.dumps([device_id, module_id]).encode()
    return "module." + hashlib.sha256(ids).hexdigest()


async def send_module_event(event: ModuleEvent) -> None:
    """Hand ``event`` to every page open on its module (handled by ``module_event``)."""
    layer = get_channel_layer()
    group = module_group(event["device_id"], event["module_id"])
    await layer.group_send(group, {"type": "module.event", "event": event})


# -- who may watch -------------------------------------------------------------------------
def user_group(user_id: int) -> str:
    """The Channels group of one account's open pages."""
    return f"user.{user_id}"


def access_changed(user_ids, ended_session: str = "") -> None:
    """Tell the open pages of these accounts to check again that they may still watch
    (handled by ``access_changed``); a page of ``ended_session`` (logged out) just closes.

    Synchronous, for signal handlers (devices/signals.py). A layer that cannot be reached
    does not fail the change: pages check again by themselves (RECHECK_SECONDS).
    """
    layer = get_channel_layer()

    async def send():
        message = {"type": "access.changed", "ended_session": ended_session}
        for user_id in set(user_ids):
            await layer.group_send(user_group(user_id), message)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        run = async_to_sync(send)
    else:
        # Synchronous code inside a running loop's thread (Playwright's sync API in browser
        # tests) cannot use async_to_sync; a thread of its own has no loop.
        def run():
            with ThreadPoolExecutor(1) as pool:
                pool.submit(async_to_sync(send)).result()

    try:
        run()
    except Exception:
        log.exception("Could not tell the pages of users %s to check their session", user_ids)
