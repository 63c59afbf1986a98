"""Malformed MQTT over raw TLS sockets never disturbs the devices the hub is serving.

Each test sends bad input on a raw connection to port 8883 while a real IoTHubDeviceClient
(the "good" device) stays connected, then checks that the good device still gets its twin
answers and that the REST API still answers.
"""

import itertools
import json
import socket
import ssl
import struct
import time

import pytest
from azure.iot.device import IoTHubDeviceClient

from localhub import mqtt_server, sas
from localhub.mqtt_packets import MAX_PACKET

MQTT_PORT = 8883
API_VERSION = "2021-04-12"

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP = 8, 9, 12, 13

# -- a tiny MQTT 3.1.1 client ----------------------------------------------------------
# Written apart from localhub/mqtt_packets.py on purpose, so that a codec bug cannot hide itself.


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _field(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def encode(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _varint(len(body)) + body


def encode_connect(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    keepalive: int = 60,
    clean_session: bool = False,
    protocol: str = "MQTT",
    level: int = 4,
) -> bytes:
    flags = (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    flags |= 0x02 if clean_session else 0
    body = _field(protocol) + bytes([level, flags]) + struct.pack("!H", keepalive)
    body += _field(client_id)
    if username is not None:
        body += _field(username)
    if password is not None:
        body += _field(password)
    return encode(CONNECT, 0, body)


def encode_subscribe(packet_id: int, filters: list[str], qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_field(f) + bytes([qos]) for f in filters)
    return encode(SUBSCRIBE, 2, body)


def encode_publish(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    body = _field(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return encode(PUBLISH, qos << 1, body)


PINGREQ_PACKET = encode(PINGREQ, 0, b"")


def decode_publish(flags: int, body: bytes) -> tuple[str, bytes]:
    (size,) = struct.unpack_from("!H", body)
    topic = body[2 : 2 + size].decode()
    start = 2 + size + (2 if flags & 0x06 else 0)
    return topic, body[start:]


class Closed(Exception):
    """The hub closed the connection."""


def tls_context(localhub) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the name and the chain
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(localhub.ca_file))
    return context


class RawClient:
    """One TLS connection to the hub's MQTT port, spoken to byte by byte."""

    def __init__(self, localhub, timeout: float = 5):
        tcp = socket.create_connection((localhub.host, MQTT_PORT), timeout=timeout)
        self.sock = tls_context(localhub).wrap_socket(tcp, server_hostname=localhub.host)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise  # still open: the caller decides
            except OSError as e:  # reset, or TLS torn down without close_notify
                raise Closed(str(e)) from e
            if not chunk:
                raise Closed("end of stream")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_packet(self, timeout: float = 5) -> tuple[int, int, bytes]:
        """(type, flags, body) of the next packet; Closed at the end of the stream."""
        self.sock.settimeout(timeout)
        header = self._recv_exact(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._recv_exact(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return header >> 4, header & 0x0F, self._recv_exact(length)

    def read_until_closed(self, timeout: float = 5) -> list[tuple[int, int, bytes]]:
        """Every packet the hub sends before it closes; fails if it is still open at timeout."""
        deadline = time.monotonic() + timeout
        packets = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"the hub kept the connection open for {timeout}s")
            try:
                packets.append(self.read_packet(left))
            except Closed:
                return packets
            except TimeoutError:
                pytest.fail(f"the hub kept the connection open for {timeout}s")

    def read_publish(self, timeout: float = 5) -> tuple[str, bytes]:
        """The next PUBLISH the hub sends, skipping acknowledgements."""
        deadline = time.monotonic() + timeout
        while True:
            kind, flags, body = self.read_packet(max(0.01, deadline - time.monotonic()))
            if kind == PUBLISH:
                return decode_publish(flags, body)

    def ping(self) -> None:
        self.send(PINGREQ_PACKET)
        assert self.read_packet()[:2] == (PINGRESP, 0)

    def close(self) -> None:
        self.sock.close()


def connect_packet_for(localhub, device_id: str, key: str, **options) -> bytes:
    username = f"{localhub.host}/{device_id}/?api-version={API_VERSION}"
    password = sas.generate(f"{localhub.host}/devices/{device_id}", key)
    return encode_connect(device_id, username, password, **options)


def connack_code(packet: tuple[int, int, bytes]) -> int:
    kind, _flags, body = packet
    assert kind == CONNACK, f"expected CONNACK, got packet type {kind}"
    return body[1]


def without_metadata(section: dict) -> dict:
    """A twin section as a device reads it: the service side adds ``$metadata``."""
    return {k: v for k, v in section.items() if k != "$metadata"}


def accepted_connack(packets) -> bool:
    return any(kind == CONNACK and body[1] == 0 for kind, _flags, body in packets)


# -- fixtures ---------------------------------------------------------------------------


def device_key(registry, device_id: str) -> str:
    device = registry.create_device_with_sas(device_id, None, None, "enabled")
    return device.authentication.symmetric_key.primary_key


class GoodDevice:
    """A real SDK client that must keep being served whatever other connections do."""

    def __init__(self, localhub, registry):
        self.registry = registry
        key = device_key(registry, "good")
        self.client = IoTHubDeviceClient.create_from_connection_string(
            localhub.device_connection_string("good", key),
            server_verification_cert=localhub.ca_pem,
        )
        self.values = itertools.count(1)

    def assert_served(self) -> None:
        value = next(self.values)
        self.client.patch_twin_reported_properties({"alive": value})
        assert self.client.get_twin()["reported"]["alive"] == value
        assert self.registry.get_twin("good").properties.reported["alive"] == value
        assert self.registry.get_device("good").connection_state == "Connected"


@pytest.fixture
def good(localhub, registry):
    device = GoodDevice(localhub, registry)
    try:
        device.client.connect()
        device.assert_served()
        yield device
    finally:
        device.client.shutdown()


@pytest.fixture
def raw_key(registry):
    return device_key(registry, "raw")


@pytest.fixture
def raw(localhub, raw_key):
    """A raw client connected and authenticated as device "raw"."""
    client = RawClient(localhub)
    try:
        client.send(connect_packet_for(localhub, "raw", raw_key))
        assert connack_code(client.read_packet()) == 0
        yield client
    finally:
        client.close()


@pytest.fixture
def unconnected(localhub):
    """A raw client past the TLS handshake that has sent nothing yet."""
    client = RawClient(localhub)
    try:
        yield client
    finally:
        client.close()


# -- bad input before or instead of CONNECT ---------------------------------------------


def test_garbage_before_connect_closes_only_that_connection(localhub, good, raw_key, unconnected):
    unconnected.send(b"GARBAGE!" + connect_packet_for(localhub, "raw", raw_key))

    assert not accepted_connack(unconnected.read_until_closed())
    good.assert_served()


@pytest.mark.parametrize(
    "first_packet",
    [PINGREQ_PACKET, encode_subscribe(1, ["$iothub/twin/res/#"]), encode_publish("a/b", b"x")],
    ids=["pingreq", "subscribe", "publish"],
)
def test_a_first_packet_other_than_connect_closes_the_connection(good, unconnected, first_packet):
    unconnected.send(first_packet)

    assert unconnected.read_until_closed() == []
    good.assert_served()


@pytest.mark.parametrize(
    ("protocol", "level"),
    [("MQTT", 3), ("MQIsdp", 3), ("MQTX", 4), ("MQTT", 5)],
    ids=["level-3", "mqtt-3.1", "wrong-name", "level-5"],
)
def test_connect_with_another_protocol_gets_connack_1_then_close(
    localhub, good, raw_key, unconnected, protocol, level
):
    unconnected.send(connect_packet_for(localhub, "raw", raw_key, protocol=protocol, level=level))

    packets = unconnected.read_until_closed()
    assert [connack_code(p) for p in packets] == [1]
    good.assert_served()


def test_connect_whose_fields_run_past_the_packet_closes_the_connection(good, unconnected):
    body = _field("MQTT") + bytes([4, 0xC0]) + struct.pack("!H", 60)
    body += struct.pack("!H", 500) + b"raw"  # the client id claims 500 bytes, has 3
    unconnected.send(encode(CONNECT, 0, body))

    assert not accepted_connack(unconnected.read_until_closed())
    good.assert_served()


def test_connect_without_credentials_is_refused(localhub, good, unconnected):
    unconnected.send(encode_connect("raw"))

    packets = unconnected.read_until_closed()
    assert [connack_code(p) for p in packets] == [5]
    good.assert_served()


# -- framing ----------------------------------------------------------------------------

FIVE_BYTE_LENGTH = bytes([CONNECT << 4, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])


def test_five_byte_remaining_length_before_connect_closes_the_connection(good, unconnected):
    unconnected.send(FIVE_BYTE_LENGTH)

    assert unconnected.read_until_closed() == []
    good.assert_served()


def test_five_byte_remaining_length_after_connect_closes_the_connection(good, raw):
    raw.send(bytes([PUBLISH << 4, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))

    assert raw.read_until_closed() == []
    good.assert_served()


@pytest.mark.parametrize("kind", [CONNECT, PUBLISH])
def test_packet_over_the_size_limit_is_refused_before_it_is_read(localhub, good, raw_key, kind):
    client = RawClient(localhub)
    try:
        if kind == PUBLISH:
            client.send(connect_packet_for(localhub, "raw", raw_key))
            assert connack_code(client.read_packet()) == 0
        # Only the header and a few bytes of the announced body are ever sent: the hub
        # must close on the announced length, not wait for the rest.
        client.send(bytes([kind << 4]) + _varint(MAX_PACKET + 1) + b"\x00\x05")

        assert client.read_until_closed() == []
    finally:
        client.close()
    good.assert_served()


def test_telemetry_as_large_as_the_sdk_allows_is_accepted(good, raw):
    topic = "devices/raw/messages/events/"
    raw.send(encode_publish(topic, b"x" * (256 * 1024 - 64), qos=1, packet_id=9))

    assert raw.read_packet() == (PUBACK, 0, struct.pack("!H", 9))
    good.assert_served()


# -- subscriptions and publishes where a device may not go -------------------------------


@pytest.mark.parametrize(
    "topic_filter",
    [
        "devices/good/messages/devicebound/#",
        "devices/+/messages/devicebound/#",
        "devices/raw/modules/m1/inputs/#",
        "#",
        "$iothub/twin/PATCH/properties/reported/#",
    ],
)
def test_subscribe_to_a_foreign_topic_gets_suback_0x80(good, raw, topic_filter):
    raw.send(encode_subscribe(3, [topic_filter, "devices/raw/messages/devicebound/#"]))

    assert raw.read_packet() == (SUBACK, 0, struct.pack("!H", 3) + bytes([0x80, 1]))
    raw.ping()  # the connection itself stays up
    good.assert_served()


def test_a_foreign_subscription_receives_nothing_for_the_other_device(good, raw, registry):
    raw.send(encode_subscribe(4, ["$iothub/twin/PATCH/properties/desired/#"]))
    assert raw.read_packet()[0] == SUBACK
    raw.send(encode_subscribe(5, ["devices/good/messages/devicebound/#"]))
    assert raw.read_packet()[0] == SUBACK

    registry.update_twin("good", {"properties": {"desired": {"secret": 1}}}, "*")

    raw.ping()
    with pytest.raises(TimeoutError):
        raw.read_packet(timeout=0.5)
    good.assert_served()


@pytest.mark.parametrize(
    "topic",
    [
        "some/unknown/topic",
        "devices/good/messages/events/",
        "devices/raw/messages/devicebound/",
        "devices/raw/modules/m1/messages/events/",
        "$iothub/methods/POST/reboot/?$rid=1",
    ],
)
@pytest.mark.parametrize("qos", [0, 1])
def test_publish_to_a_topic_the_device_may_not_use_closes_the_connection(good, raw, topic, qos):
    raw.send(encode_publish(topic, b"{}", qos=qos, packet_id=qos and 11))

    assert raw.read_until_closed() == []
    good.assert_served()


def test_publish_at_qos_2_closes_the_connection(good, raw):
    raw.send(encode_publish("devices/raw/messages/events/", b"{}", qos=2, packet_id=12))

    assert raw.read_until_closed() == []
    good.assert_served()


# -- twin requests ----------------------------------------------------------------------


def test_twin_request_without_rid_closes_the_connection(good, raw):
    raw.send(encode_publish("$iothub/twin/GET/", b" ", qos=1, packet_id=13))

    packets = raw.read_until_closed()
    assert not any(kind == PUBLISH for kind, _flags, _body in packets)
    good.assert_served()


def test_invalid_json_reported_patch_is_answered_with_400(good, raw, registry):
    before = registry.get_twin("raw").properties.reported

    raw.send(
        encode_publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=bad1", b"{not json", 1, packet_id=14
        )
    )

    topic, body = raw.read_publish()
    assert topic == "$iothub/twin/res/400/?$rid=bad1"
    assert json.loads(body)["errorCode"] == 400004
    assert registry.get_twin("raw").properties.reported == before
    # Only the request was refused: the same connection still gets its twin.
    raw.send(encode_publish("$iothub/twin/GET/?$rid=after", b" "))
    topic, body = raw.read_publish()
    assert topic == "$iothub/twin/res/200/?$rid=after"
    assert json.loads(body)["reported"] == without_metadata(before)
    good.assert_served()


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"null", b'{"$version": 3}'])
def test_reported_patch_that_is_not_a_valid_patch_is_answered_with_400(good, raw, payload):
    raw.send(encode_publish("$iothub/twin/PATCH/properties/reported/?$rid=bad2", payload))

    topic, _body = raw.read_publish()
    assert topic == "$iothub/twin/res/400/?$rid=bad2"
    raw.ping()
    good.assert_served()


def test_reported_patch_at_qos_1_gets_puback_and_204_without_subscribing(good, raw, registry):
    raw.send(
        encode_publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=r1",
            json.dumps({"fromRaw": {"n": 1}}).encode(),
            qos=1,
            packet_id=0x1234,
        )
    )

    packets = [raw.read_packet(), raw.read_packet()]
    assert (PUBACK, 0, struct.pack("!H", 0x1234)) in packets
    [(topic, body)] = [decode_publish(f, b) for k, f, b in packets if k == PUBLISH]
    reported = registry.get_twin("raw").properties.reported
    assert reported["fromRaw"] == {"n": 1}
    assert topic == f"$iothub/twin/res/204/?$rid=r1&$version={reported['$version']}"
    assert body == b""
    good.assert_served()


def test_twin_get_at_qos_0_is_answered_without_subscribing(good, raw, registry):
    registry.update_twin("raw", {"properties": {"desired": {"interval": 5}}}, "*")

    raw.send(encode_publish("$iothub/twin/GET/?$rid=g1", b" "))

    topic, body = raw.read_publish()
    assert topic == "$iothub/twin/res/200/?$rid=g1"
    twin = json.loads(body)
    assert twin["desired"]["interval"] == 5
    assert twin["desired"]["$version"] == registry.get_twin("raw").properties.desired["$version"]
    good.assert_served()


# -- stalled and silent clients ----------------------------------------------------------


def test_clients_stalled_in_the_tls_handshake_do_not_block_others(localhub, registry, good):
    # A ClientHello, cut in half, from a real TLS client driven through memory buffers.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = tls_context(localhub).wrap_bio(incoming, outgoing, server_hostname=localhub.host)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    client_hello = outgoing.read()

    silent = socket.create_connection((localhub.host, MQTT_PORT), timeout=5)
    partial = socket.create_connection((localhub.host, MQTT_PORT), timeout=5)
    partial.sendall(client_hello[: len(client_hello) // 2])
    late = None
    try:
        key = device_key(registry, "late")
        late = IoTHubDeviceClient.create_from_connection_string(
            localhub.device_connection_string("late", key),
            server_verification_cert=localhub.ca_pem,
            connection_retry=False,
        )
        started = time.monotonic()
        late.connect()
        late.patch_twin_reported_properties({"joined": True})
        assert late.get_twin()["reported"]["joined"] is True
        assert time.monotonic() - started < 5
        good.assert_served()
    finally:
        if late is not None:
            late.shutdown()
        silent.close()
        partial.close()


def test_a_client_that_never_sends_connect_is_closed_after_the_connect_timeout(
    localhub, good, monkeypatch
):
    monkeypatch.setattr(mqtt_server, "CONNECT_TIMEOUT", 1.0)
    client = RawClient(localhub)
    try:
        started = time.monotonic()
        good.assert_served()  # served while the silent one waits

        assert client.read_until_closed(timeout=5) == []
        assert 0.9 <= time.monotonic() - started < 4
    finally:
        client.close()
    good.assert_served()


# -- keepalive --------------------------------------------------------------------------


def test_a_silent_client_is_dropped_after_one_and_a_half_keepalives(localhub, good, raw_key):
    client = RawClient(localhub)
    try:
        client.send(connect_packet_for(localhub, "raw", raw_key, keepalive=1))
        assert connack_code(client.read_packet()) == 0
        connected = time.monotonic()

        assert client.read_until_closed(timeout=5) == []
        assert 1.4 <= time.monotonic() - connected < 3
    finally:
        client.close()
    good.assert_served()


def test_a_client_that_pings_within_its_keepalive_stays_connected(
    localhub, good, raw_key, registry
):
    client = RawClient(localhub)
    try:
        client.send(connect_packet_for(localhub, "raw", raw_key, keepalive=1))
        assert connack_code(client.read_packet()) == 0

        until = time.monotonic() + 3.5  # more than twice the 1.5 s limit
        while time.monotonic() < until:
            client.ping()
            time.sleep(0.5)

        assert registry.get_device("raw").connection_state == "Connected"
        client.send(encode_publish("$iothub/twin/GET/?$rid=still", b" "))
        assert client.read_publish()[0] == "$iothub/twin/res/200/?$rid=still"
    finally:
        client.close()
    good.assert_served()
