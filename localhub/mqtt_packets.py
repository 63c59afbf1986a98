"""MQTT 3.1.1 packet framing and the few encoders the hub needs."""

import struct

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

# CONNACK return codes.
ACCEPTED, BAD_PROTOCOL, ID_REJECTED, UNAVAILABLE, BAD_CREDENTIALS, NOT_AUTHORIZED = range(6)

# The device SDK caps a message at 256 KB; a little room on top for topic and properties.
MAX_PACKET = 256 * 1024 + 16 * 1024


class ProtocolError(Exception):
    """The peer broke MQTT: the connection is closed, nothing else is touched."""


def split_packets(buffer: bytearray, max_size: int = MAX_PACKET):
    """Yield (type, flags, body) for each whole packet and remove them from ``buffer``."""
    pos, end = 0, len(buffer)
    while end - pos >= 2:
        header = buffer[pos]
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= end:
                del buffer[:pos]
                return
            byte = buffer[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError("remaining length longer than 4 bytes")
        if length > max_size:
            raise ProtocolError(f"packet of {length} bytes is over the {max_size} byte limit")
        if end - i < length:
            break
        yield header >> 4, header & 0x0F, bytes(buffer[i : i + length])
        pos = i + length
    del buffer[:pos]


class Reader:
    """Reads MQTT fields from a packet body, raising ProtocolError when it runs short."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise ProtocolError("packet ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise ProtocolError("packet ends early")
        (value,) = struct.unpack_from("!H", self.data, self.pos)
        self.pos += 2
        return value

    def binary(self) -> bytes:
        size = self.u16()
        if self.pos + size > len(self.data):
            raise ProtocolError("field runs past the end of the packet")
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def text(self) -> str:
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError("string is not UTF-8") from e

    def rest(self) -> bytes:
        return self.data[self.pos :]

    @property
    def at_end(self) -> bool:
        return self.pos >= len(self.data)


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _length(len(body)) + body


def connack(session_present: bool, code: int) -> bytes:
    return bytes([CONNACK << 4, 2, 1 if session_present and code == ACCEPTED else 0, code])


def puback(packet_id: int) -> bytes:
    return struct.pack("!BBH", PUBACK << 4, 2, packet_id)


def suback(packet_id: int, granted: list[int]) -> bytes:
    return packet(SUBACK, 0, struct.pack("!H", packet_id) + bytes(granted))


def unsuback(packet_id: int) -> bytes:
    return struct.pack("!BBH", UNSUBACK << 4, 2, packet_id)


PINGRESP_PACKET = bytes([PINGRESP << 4, 0])


def publish(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH: twin responses, notifications and method calls need no PUBACK."""
    name = topic.encode()
    return packet(PUBLISH, 0, struct.pack("!H", len(name)) + name + payload)


def topic_matches(topic_filter: str, topic: str) -> bool:
    if topic_filter == topic:
        return True
    parts, levels = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)


# -- client side: used by the bench's load generator and by raw-socket tests ---------------
def _text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def connect(client_id: str, username: str, password: str, *, keepalive=60, clean=False) -> bytes:
    flags = 0xC0 | (0x02 if clean else 0)
    body = _text("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    return packet(CONNECT, 0, body + _text(client_id) + _text(username) + _text(password))


def publish_qos1(topic: str, payload: bytes, packet_id: int) -> bytes:
    return packet(PUBLISH, 2, _text(topic) + struct.pack("!H", packet_id) + payload)


def subscribe(packet_id: int, filters: list[str], qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_text(f) + bytes([qos]) for f in filters)
    return packet(SUBSCRIBE, 2, body)


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
