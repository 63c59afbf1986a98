"""Connections that have not authenticated are capped per client host and in all, on each
listener; over a cap the hub closes new ones at once, and real clients keep working.

The flood is raw TCP that never sends a TLS byte, from loopback addresses of its own
(127.0.1.x): the SDK clients connect from 127.0.0.1, another host as far as the caps go.
"""

import contextlib
import http.client
import socket
import ssl
import time

import pytest
from support import API_VERSION, primary_key, service_token, wait_for

from localhub import admission
from localhub.admission import MAX_PENDING, MAX_PENDING_PER_HOST

MQTT_PORT, HTTPS_PORT = 8883, 8443


def flood(localhub, port: int, count: int, source: str) -> list[socket.socket]:
    """``count`` TCP connections to the hub from ``source`` that send nothing."""
    made = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect((localhub.host, port))
        made.append(sock)
    return made


def closed_by_hub(sock: socket.socket, timeout: float = 5) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def still_open(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True  # nothing to read, and no end of stream
    except ConnectionResetError:
        return False
    return False


def tls_handshake_completes(localhub, port: int, source: str) -> bool:
    """Whether a new connection from ``source`` is admitted (refused ones end in the handshake)."""
    context = ssl.create_default_context(cafile=str(localhub.ca_file))
    sock = socket.socket()
    sock.settimeout(10)
    try:
        sock.bind((source, 0))
        sock.connect((localhub.host, port))
        with context.wrap_socket(sock, server_hostname=localhub.host):
            return True
    except (ssl.SSLError, ConnectionError, OSError):
        return False
    finally:
        sock.close()


@pytest.fixture
def sockets():
    """Sockets a test opens; all closed afterwards."""
    made: list[socket.socket] = []
    yield made
    for sock in made:
        sock.close()


@pytest.mark.parametrize("port", [MQTT_PORT, HTTPS_PORT], ids=["mqtt", "https"])
def test_connections_over_the_per_host_cap_are_closed_at_once(localhub, sockets, port):
    sockets += flood(localhub, port, MAX_PENDING_PER_HOST + 16, "127.0.1.1")
    admitted, refused = sockets[:MAX_PENDING_PER_HOST], sockets[MAX_PENDING_PER_HOST:]

    assert all(closed_by_hub(sock) for sock in refused)
    assert all(still_open(sock) for sock in admitted)
    assert not tls_handshake_completes(localhub, port, "127.0.1.1")
    assert tls_handshake_completes(localhub, port, "127.0.1.2")  # another host is admitted


def test_a_device_connects_and_works_during_a_flood(localhub, registry, client_for, sockets):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    for port in (MQTT_PORT, HTTPS_PORT):
        sockets += flood(localhub, port, MAX_PENDING_PER_HOST + 16, "127.0.1.1")
    assert closed_by_hub(sockets[-1])

    client = client_for("d1", key)
    client.connect()
    client.patch_twin_reported_properties({"during": "flood"})
    client.send_message("still here")

    assert client.get_twin()["reported"]["during"] == "flood"
    assert registry.get_twin("d1").properties.reported["during"] == "flood"
    assert registry.get_device("d1").connection_state == "Connected"
    assert sum(still_open(sock) for sock in sockets) == 2 * MAX_PENDING_PER_HOST


def test_connections_over_the_total_cap_are_closed_until_the_flood_ends(localhub, sockets):
    hosts = [f"127.0.1.{n}" for n in range(1, MAX_PENDING // MAX_PENDING_PER_HOST + 1)]
    for host in hosts:
        sockets += flood(localhub, MQTT_PORT, MAX_PENDING_PER_HOST, host)
    [late] = flood(localhub, MQTT_PORT, 1, "127.0.2.1")  # under its own host's cap
    sockets.append(late)

    assert closed_by_hub(late)
    assert all(still_open(sock) for sock in sockets[:-1])

    for sock in sockets:
        sock.close()
    wait_for(
        lambda: tls_handshake_completes(localhub, MQTT_PORT, "127.0.2.1"),
        what="a new connection to be admitted once the flood ended",
    )


def test_an_https_connection_that_never_sends_a_request_is_closed(localhub, monkeypatch):
    monkeypatch.setattr(admission, "AUTHENTICATION_DEADLINE", 1.0)
    context = ssl.create_default_context(cafile=str(localhub.ca_file))
    sock = socket.create_connection((localhub.host, HTTPS_PORT), timeout=10)
    with context.wrap_socket(sock, server_hostname=localhub.host) as tls:
        tls.settimeout(10)
        with contextlib.suppress(ConnectionResetError):  # closed either way
            assert tls.recv(1) == b""  # aiohttp alone would keep it for an hour


def test_an_authorized_https_connection_outlives_the_deadline(localhub, monkeypatch):
    monkeypatch.setattr(admission, "AUTHENTICATION_DEADLINE", 0.5)
    context = ssl.create_default_context(cafile=str(localhub.ca_file))
    # One connection for both requests: http.client does not reconnect behind our back.
    connection = http.client.HTTPSConnection(localhub.host, HTTPS_PORT, context=context)
    path = f"/statistics/devices?api-version={API_VERSION}"
    try:
        for _ in range(2):
            connection.request("GET", path, headers={"Authorization": service_token(localhub)})
            response = connection.getresponse()
            assert response.status == 200
            response.read()
            time.sleep(1.0)  # past the deadline
    finally:
        connection.close()
