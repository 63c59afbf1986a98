"""Error pages never show a secret: over real HTTP to the dashboard as `make run` serves it
(daphne, DEBUG on), to anonymous clients with a bad Host, an oversized body or too many
fields; and the reporter itself, with the hub's owner key in settings and in locals."""

import base64
import html
import os
import socket
import sys

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory
from django.views.debug import technical_500_response
from pages import text

pytestmark = pytest.mark.django_db


def owner_key(hub) -> str:
    return hub.connection_string.rsplit("SharedAccessKey=", 1)[1]


def raw_http(port: int, request: bytes) -> bytes:
    """One request as bytes on a socket (a client free to lie about Host), the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def post(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    """With a CSRF cookie, so the CSRF check reads the body (as a browser's post would)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Cookie: csrftoken={'a' * 32}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


HOSTILE = {
    "bad host": b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    "oversized body": post("/login/", b"a=" + b"x" * 3_000_000),
    "too many fields": post("/login/", "&".join(f"f{i}=1" for i in range(1500)).encode()),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_anonymous_hostile_requests_get_a_plain_400_without_the_key(
    live_dashboard, dashboard_hub, case
):
    """The server runs with DEBUG on, as `make run` does, and the client is on loopback."""
    answer = raw_http(live_dashboard.port, HOSTILE[case])

    status = answer.split(b"\r\n", 1)[0]
    assert b" 400 " in status, answer[:500]
    body = answer.decode(errors="replace")
    assert "Bad request" in body
    assert owner_key(dashboard_hub) not in body
    assert "SharedAccessKey" not in body and "Traceback" not in body
    assert "IOTHUB_CONNECTION_STRING" not in body  # not the settings list either


def test_a_bad_host_gets_the_plain_page_with_debug_off(client, settings):
    settings.DEBUG = False

    response = client.get("/", HTTP_HOST="evil.example")

    assert response.status_code == 400
    assert "Bad request" in text(response)


def test_an_unknown_page_is_the_apps_404_without_internals(client_as, viewer):
    response = client_as(viewer).get("/no/such/page/")

    assert response.status_code == 404
    assert "There is no such page" in text(response)
    assert "Resolver404" not in text(response)


def _failing_view(identity: dict, connection_string: str, cs: str):
    local_copy = f"device string: {cs}"  # noqa: F841  (a local the debug page would list)
    raise RuntimeError("boom")


def _technical_page(settings, remote_addr: str, secrets: dict, user=None) -> str:
    """The debug page of an error raised with secrets in settings, locals and the POST.
    Made at run time: the page also quotes this file's source lines."""
    settings.DEBUG = True
    settings.IOTHUB_CONNECTION_STRING = (
        f"HostName=hub.example;SharedAccessKeyName=iothubowner;SharedAccessKey={secrets['owner']}"
    )
    settings.REDIS_URL = f"redis://:{secrets['redis']}@cache.example:6379/0"
    identity = {
        "deviceId": "d1",
        "authentication": {
            "symmetricKey": {"primaryKey": secrets["primary"], "secondaryKey": secrets["second"]}
        },
    }
    request = RequestFactory().post(
        "/devices/new/",
        {"device_id": "d1", "primary_key": secrets["posted"]},
        REMOTE_ADDR=remote_addr,
    )
    request.user = user if user is not None else AnonymousUser()
    device_cs = f"HostName=hub.example;DeviceId=d1;SharedAccessKey={secrets['device']}"
    try:
        _failing_view(identity, settings.IOTHUB_CONNECTION_STRING, device_cs)
    except RuntimeError:
        response = technical_500_response(request, *sys.exc_info())
    return response.content.decode()


@pytest.fixture
def secrets():
    names = ("owner", "redis", "primary", "second", "posted", "device")
    return {name: base64.b64encode(os.urandom(24)).decode() for name in names}


@pytest.fixture
def developer(django_user_model):
    return django_user_model.objects.create_user("dev", is_staff=True)


def test_the_debug_page_for_this_machine_hides_keys_in_settings_locals_and_posts(
    settings, secrets, developer
):
    page = _technical_page(settings, "127.0.0.1", secrets, developer)

    assert "RuntimeError" in page and "_failing_view" in page  # the developer's page
    for name, secret in secrets.items():
        assert secret not in page, name
        assert html.escape(secret) not in page, name


@pytest.mark.parametrize("who", ["a remote developer", "anonymous on loopback"])
def test_other_clients_get_the_plain_500_page_even_with_debug_on(settings, secrets, developer, who):
    if who == "a remote developer":
        page = _technical_page(settings, "203.0.113.9", secrets, developer)
    else:
        page = _technical_page(settings, "127.0.0.1", secrets)

    assert "Something went wrong" in page
    assert "RuntimeError" not in page and "_failing_view" not in page
