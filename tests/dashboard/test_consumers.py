"""The websockets through iotadmin.asgi: the module events one (/ws/modules/<device>/<module>/)
as a browser reaches it (session cookie, Origin header, URL-encoded ids), and the ingest one
(/ws/ingest/) as a simulated module does (a signed token). Every test runs with the in-memory
channel layer and with channels_redis against the Redis on 127.0.0.1:6379."""

import asyncio
import contextlib
import re
import time
import uuid
from urllib.parse import quote

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, Permission, User
from django.contrib.sessions.models import Session
from django.test import Client

from devices.events import (
    INGEST_TOKEN_MAX_AGE,
    ingest_token,
    make_event,
    module_group,
    send_module_event,
)
from devices.models import RecentEvent
from iotadmin.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

LOCAL = (b"origin", b"http://localhost")
HOST = (b"host", b"localhost")  # what a browser on http://localhost/ sends, with LOCAL
AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(params=["memory", "redis"])
async def layer(request, settings):
    """The channel layer the app uses in this test; Redis keys under a prefix of its own."""
    if request.param == "memory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    else:
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    "hosts": ["redis://127.0.0.1:6379/0"],
                    "prefix": f"iotadmin-test-{uuid.uuid4().hex}:",
                },
            }
        }
    channel_layers.backends = {}
    used = get_channel_layer()
    yield used
    if request.param == "redis":
        await used.flush()  # deletes only this test's prefix, then closes the pools
    channel_layers.backends = {}


def browser_of(user: User) -> tuple[Client, tuple[bytes, bytes]]:
    """A test client logged in as ``user``, and the Cookie header of its session."""
    client = Client()
    client.force_login(user)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    return client, (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session}".encode())


def cookie_of(user: User) -> tuple[bytes, bytes]:
    """The Cookie header of a browser logged in as ``user``."""
    return browser_of(user)[1]


async_cookie_of = database_sync_to_async(cookie_of)


def path_of(device_id: str, module_id: str) -> str:
    return f"/ws/modules/{quote(device_id, safe='')}/{quote(module_id, safe='')}/"


@contextlib.asynccontextmanager
async def socket(device_id: str, module_id: str, headers):
    """A websocket on the module's path, to Host localhost; yields (communicator, accepted);
    always closed."""
    path = path_of(device_id, module_id)
    communicator = WebsocketCommunicator(application, path, [HOST, *headers])
    try:
        accepted, _ = await communicator.connect(timeout=5)
        yield communicator, accepted
    finally:
        await communicator.disconnect()


@pytest.fixture
def viewer_cookie(make_user):
    return cookie_of(make_user("viewer"))


# -- who may connect -----------------------------------------------------------------------
async def test_refused_without_login(layer):
    async with socket("d1", "m1", [LOCAL]) as (_, accepted):
        assert not accepted


async def test_refused_for_a_user_without_a_role(layer, django_user_model):
    user = await django_user_model.objects.acreate(username="nobody")

    async with socket("d1", "m1", [LOCAL, await async_cookie_of(user)]) as (_, accepted):
        assert not accepted


async def test_refused_from_a_foreign_origin(layer, viewer_cookie):
    evil = (b"origin", b"http://evil.example")
    async with socket("d1", "m1", [evil, viewer_cookie]) as (_, accepted):
        assert not accepted


@pytest.mark.parametrize("role", ["viewer", "operator", "admin"])
async def test_accepted_for_every_role(layer, role, make_user):
    cookie = await async_cookie_of(await database_sync_to_async(make_user)(role))
    async with socket("d1", "m1", [LOCAL, cookie]) as (_, accepted):
        assert accepted


@pytest.mark.parametrize(
    "origin",
    [
        b"http://localhost:9999",  # another port of the same host
        b"https://localhost",  # another scheme
        b"ws://localhost",
    ],
)
async def test_refused_from_another_scheme_or_port(layer, viewer_cookie, origin):
    async with socket("d1", "m1", [(b"origin", origin), viewer_cookie]) as (_, accepted):
        assert not accepted


async def test_the_origin_includes_the_port_the_page_was_served_on(layer, viewer_cookie):
    served = [(b"host", b"localhost:8000"), viewer_cookie]
    path = path_of("d1", "m1")
    for origin, accepted in [(b"http://localhost:8000", True), (b"http://localhost", False)]:
        page = WebsocketCommunicator(application, path, [*served, (b"origin", origin)])
        assert (await page.connect(timeout=5))[0] is accepted, origin
        await page.disconnect()


async def test_behind_a_tls_proxy_the_public_https_origin_is_accepted(
    layer, viewer_cookie, settings
):
    """The proxy says https (SECURE_PROXY_SSL_HEADER), or its origin is trusted."""
    settings.ALLOWED_HOSTS = ["iotadmin.example.com", "web-1.internal"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.CSRF_TRUSTED_ORIGINS = ["https://iotadmin.example.com"]
    public = (b"origin", b"https://iotadmin.example.com")
    plain = (b"origin", b"http://iotadmin.example.com")
    path = path_of("d1", "m1")
    cases = [
        ([(b"host", b"iotadmin.example.com"), (b"x-forwarded-proto", b"https"), public], True),
        ([(b"host", b"iotadmin.example.com"), (b"x-forwarded-proto", b"https"), plain], False),
        ([(b"host", b"web-1.internal:8000"), public], True),  # the proxy rewrote Host
    ]
    for headers, expected in cases:
        page = WebsocketCommunicator(application, path, [*headers, viewer_cookie])
        assert (await page.connect(timeout=5))[0] is expected, headers
        await page.disconnect()


# -- when access ends, the socket closes ---------------------------------------------------
async def assert_closed(page):
    """The server closed the socket (and sends nothing else)."""
    assert (await page.receive_output(timeout=5))["type"] == "websocket.close"
    assert await page.receive_nothing(timeout=0.3)


@pytest.fixture
async def viewer_browser(make_user):
    """(test client logged in as a viewer, its Cookie header)."""
    return await database_sync_to_async(browser_of)(
        await database_sync_to_async(make_user)("viewer")
    )


async def test_logging_out_closes_that_sessions_sockets_only(layer, viewer_browser):
    browser, cookie = viewer_browser
    viewer = await User.objects.aget(username="viewer-user")
    other_cookie = await async_cookie_of(viewer)  # the same account in another browser
    async with (
        socket("d1", "m1", [LOCAL, cookie]) as (page, accepted),
        socket("d1", "m1", [LOCAL, other_cookie]) as (other_page, other_accepted),
    ):
        assert accepted and other_accepted
        assert (await database_sync_to_async(browser.post)("/logout/")).status_code == 302
        sent = make_event("twin.desired_received", "d1", "m1", 2, {"secret": "twin"})
        await send_module_event(sent)

        await assert_closed(page)
        assert await other_page.receive_json_from(timeout=5) == sent


def change_password(user):
    user.set_password("another horse battery staple")
    user.save()


def deactivate(user):
    user.is_active = False
    user.save()


def remove_role(user):
    user.groups.remove(Group.objects.get(name="viewer"))


def take_view_from_the_role(user):
    Group.objects.get(name="viewer").permissions.remove(
        Permission.objects.get(codename="view_device")
    )


def delete_the_session(user):
    """Not a logout: nothing tells the page; it finds out by checking again."""
    Session.objects.all().delete()


@pytest.mark.parametrize(
    "change",
    [change_password, deactivate, remove_role, take_view_from_the_role, delete_the_session],
)
async def test_a_socket_closes_when_its_account_loses_access(
    layer, viewer_browser, change, monkeypatch
):
    if change is delete_the_session:
        monkeypatch.setattr("devices.consumers.RECHECK_SECONDS", 0)
    _, cookie = viewer_browser
    viewer = await User.objects.aget(username="viewer-user")
    async with socket("d1", "m1", [LOCAL, cookie]) as (page, accepted):
        assert accepted
        await database_sync_to_async(change)(viewer)
        await send_module_event(make_event("twin.reported_sent", "d1", "m1", 3, {"x": 1}))

        await assert_closed(page)

    async with socket("d1", "m1", [LOCAL, cookie]) as (_, accepted):
        assert not accepted


# -- what arrives --------------------------------------------------------------------------
async def test_module_events_arrive_with_their_shape_and_others_do_not(layer, viewer_cookie):
    async with socket("d1", "m1", [LOCAL, viewer_cookie]) as (page, accepted):
        assert accepted
        await send_module_event(make_event("twin.desired_received", "d1", "m2", 1, {"x": 1}))
        await send_module_event(make_event("twin.desired_received", "d2", "m1", 1, {"x": 2}))
        sent = make_event("twin.desired_received", "d1", "m1", 7, {"telemetryInterval": 5})
        await send_module_event(sent)

        received = await page.receive_json_from(timeout=5)

        assert received == sent
        assert set(received) == {"type", "device_id", "module_id", "version", "patch", "at"}
        assert received["type"] == "twin.desired_received"
        assert received["version"] == 7 and received["patch"] == {"telemetryInterval": 5}
        assert AT.match(received["at"]), received["at"]
        assert await page.receive_nothing(timeout=0.3)


async def test_every_open_page_receives_each_event(layer, viewer_cookie):
    async with (
        socket("d1", "m1", [LOCAL, viewer_cookie]) as (first, accepted1),
        socket("d1", "m1", [LOCAL, viewer_cookie]) as (second, accepted2),
    ):
        assert accepted1 and accepted2
        sent = make_event("module.connected", "d1", "m1", None, None)
        await send_module_event(sent)

        assert await first.receive_json_from(timeout=5) == sent
        assert await second.receive_json_from(timeout=5) == sent


@pytest.mark.parametrize(
    "device_id, module_id",
    [("a#b?c", "m:1;x"), ("p%41", "(x)=@$'!*+,"), ("dev.1-2_3", "mod.1-2_3")],
)
async def test_ids_with_special_characters_work_end_to_end(
    layer, viewer_cookie, device_id, module_id
):
    """``p%41`` stays ``p%41``: the path is decoded once (by the server), never twice."""
    async with socket(device_id, module_id, [LOCAL, viewer_cookie]) as (page, accepted):
        assert accepted
        await send_module_event(make_event("twin.reported_sent", "p%41", "A", 2, {}))
        sent = make_event("twin.reported_sent", device_id, module_id, 3, {"a": {"ac": 200}})
        await send_module_event(sent)

        assert await page.receive_json_from(timeout=5) == sent
        assert await page.receive_nothing(timeout=0.3)


async def test_leaving_the_page_leaves_the_group(viewer_cookie, settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends = {}
    group = module_group("d1", "m1")
    async with socket("d1", "m1", [LOCAL, viewer_cookie]) as (_, accepted):
        assert accepted
        assert len(get_channel_layer().groups[group]) == 1
    assert not get_channel_layer().groups.get(group)


# -- the event shape and group names -------------------------------------------------------
def test_unknown_event_types_are_refused():
    with pytest.raises(ValueError, match="unknown module event type"):
        make_event("twin.changed", "d1", "m1", 1, {})


def test_group_names_are_valid_for_any_ids():
    long_id = "#?%:;" * 25  # 125 characters, all of them forbidden in group names
    names = {module_group(d, m) for d, m in [("a", "b:c"), ("a:b", "c"), (long_id, long_id)]}

    assert len(names) == 3
    for name in names:
        assert re.fullmatch(r"[a-zA-Z0-9\-_.]{1,99}", name), name


# -- /ws/ingest/: where simulated modules hand in their events ------------------------------
@contextlib.asynccontextmanager
async def ingest(headers):
    """The ingest websocket as a simulator opens it (no Origin, no cookie); always closed."""
    communicator = WebsocketCommunicator(application, "/ws/ingest/", headers)
    try:
        accepted, _ = await communicator.connect(timeout=5)
        yield communicator, accepted
    finally:
        await communicator.disconnect()


def bearer(token: str) -> tuple[bytes, bytes]:
    return b"authorization", f"Bearer {token}".encode()


async def test_ingest_refuses_a_missing_forged_or_stale_token(layer, monkeypatch):
    async with ingest([]) as (_, accepted):
        assert not accepted
    forged = ingest_token("d1", "m1")[:-2] + "xx"
    async with ingest([bearer(forged)]) as (_, accepted):
        assert not accepted
    stale_now = time.time() - INGEST_TOKEN_MAX_AGE - 5
    monkeypatch.setattr("django.core.signing.time.time", lambda: stale_now)
    stale = ingest_token("d1", "m1")
    monkeypatch.undo()
    async with ingest([bearer(stale)]) as (_, accepted):
        assert not accepted
    async with ingest([bearer(ingest_token("d1", "m1"))]) as (_, accepted):
        assert accepted


async def test_ingested_events_reach_the_modules_pages(layer, viewer_cookie):
    async with (
        socket("a#b?c", "m:1", [LOCAL, viewer_cookie]) as (page, page_accepted),
        ingest([bearer(ingest_token("a#b?c", "m:1"))]) as (simulator, accepted),
    ):
        assert page_accepted and accepted
        assert await page.receive_nothing(timeout=0.3)  # nothing to replay yet
        sent = make_event("twin.desired_received", "a#b?c", "m:1", 4, {"telemetryInterval": 9})
        await simulator.send_json_to({**sent, "extra": "dropped"})

        assert await page.receive_json_from(timeout=5) == sent


@pytest.mark.parametrize(
    "bad",
    [
        {"device_id": "d1", "module_id": "other"},  # another module than the token's
        {"type": "twin.changed"},
        {"version": "7"},
        {"version": 2**63},
        {"at": None},
        {"at": "yesterday"},
    ],
)
async def test_ingest_drops_a_bad_event_and_closes(layer, viewer_cookie, bad):
    async with (
        socket("d1", "m1", [LOCAL, viewer_cookie]) as (page, _),
        ingest([bearer(ingest_token("d1", "m1"))]) as (simulator, accepted),
    ):
        assert accepted
        await simulator.send_json_to({**make_event("module.connected", "d1", "m1", 1, {}), **bad})

        assert (await simulator.receive_output(timeout=5))["code"] == 4400
        assert await page.receive_nothing(timeout=0.3)


async def test_ingest_closes_on_text_that_is_not_json(layer):
    async with ingest([bearer(ingest_token("d1", "m1"))]) as (simulator, accepted):
        assert accepted
        await simulator.send_to(text_data="{not json")
        assert (await simulator.receive_output(timeout=5))["code"] == 4400


async def test_a_page_open_longer_than_the_group_expiry_still_receives_events(
    viewer_cookie, settings, monkeypatch
):
    """Layers drop group members after group_expiry (a day by default); pages rejoin."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"group_expiry": 1},
        }
    }
    channel_layers.backends = {}
    monkeypatch.setattr("devices.consumers.REJOIN_SECONDS", 0.3)
    try:
        async with socket("d1", "m1", [LOCAL, viewer_cookie]) as (page, accepted):
            assert accepted
            await asyncio.sleep(2.5)  # the layer counts whole seconds: past 1 s for sure
            sent = make_event("module.connected", "d1", "m1", 1, {})
            await send_module_event(sent)

            assert await page.receive_json_from(timeout=5) == sent
    finally:
        channel_layers.backends = {}


# -- what a page opening later is shown ----------------------------------------------------
async def test_a_page_opening_later_first_receives_the_recent_events_marked_replayed(
    layer, viewer_cookie
):
    sent = [
        make_event("module.connected", "d1", "m1", 1, {"desired": {}, "reported": {}}),
        make_event("twin.desired_received", "d1", "m1", 2, {"fan": 3, "$version": 2}),
        make_event("twin.reported_sent", "d1", "m1", 2, {"fan": {"value": 3, "ac": 200}}),
    ]
    async with ingest([bearer(ingest_token("d1", "m1"))]) as (simulator, accepted):
        assert accepted
        for event in sent:
            await simulator.send_json_to(event)
        await simulator.send_json_to(make_event("twin.desired_received", "d1", "m1", 3, {}))
        stored = database_sync_to_async(RecentEvent.objects.count)
        for _ in range(100):
            if await stored() == 4:
                break
            await asyncio.sleep(0.05)

    async with socket("d1", "m1", [LOCAL, viewer_cookie]) as (page, accepted):
        assert accepted
        replayed = [await page.receive_json_from(timeout=5) for _ in range(4)]
        assert await page.receive_nothing(timeout=0.3)

    assert replayed[:3] == [{**event, "replayed": True} for event in sent]
    assert replayed[3]["version"] == 3


@pytest.mark.django_db
def test_only_the_newest_events_of_each_module_are_kept():
    keep = RecentEvent.KEEP
    for version in range(0, keep + 5, 5):  # bursts of five
        burst = range(version, version + 5)
        RecentEvent.keep([make_event("twin.reported_sent", "d1", "m1", v, {}) for v in burst])
    RecentEvent.keep([make_event("twin.reported_sent", "d1", "m2", 0, {})])

    kept = RecentEvent.of_module("d1", "m1")

    assert [e["version"] for e in kept] == list(range(5, keep + 5))
    assert len(RecentEvent.of_module("d1", "m2")) == 1


async def test_a_page_opening_just_after_an_event_gets_it(layer, viewer_cookie):
    """Events are saved for later pages a moment after they are sent: a page joining in
    between has it replayed, not lost."""
    async with ingest([bearer(ingest_token("d1", "m1"))]) as (simulator, accepted):
        assert accepted
        sent = make_event("twin.desired_received", "d1", "m1", 5, {"fan": 1})
        await simulator.send_json_to(sent)
        await asyncio.sleep(0.01)
        async with socket("d1", "m1", [LOCAL, viewer_cookie]) as (page, joined):
            assert joined
            assert await page.receive_json_from(timeout=5) == {**sent, "replayed": True}
