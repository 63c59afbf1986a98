"""The device side: MQTT 3.1.1 over TLS, as azure-iot-device speaks it.

One ``DeviceConnection`` per TCP connection. Everything a device sends is handled inside
``data_received`` (no task per packet); writes that must be durable answer from the
store's commit callback, in the order they were made.
"""

import asyncio
import json
import logging
import time
from urllib.parse import unquote

from . import json_input
from . import mqtt_packets as mp
from .admission import Admission
from .errors import HubError
from .hub import DESIRED_FILTER, Hub
from .identities import Identity

log = logging.getLogger("localhub.mqtt")

CONNECT_TIMEOUT = 10  # seconds a new connection has to send CONNECT
TWIN_PREFIX = "$iothub/twin/"
METHOD_RESPONSE_PREFIX = "$iothub/methods/res/"


def _rid(topic: str) -> tuple[str, dict]:
    """Split ``path/?$rid=1&a=b`` into the path and its parameters."""
    path, _, query = topic.partition("?")
    params = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if "%" in pair:  # the SDK sends plain values; decode only when needed
            name, value = unquote(name), unquote(value)
        params[name] = value
    return path, params


class DeviceConnection(asyncio.Protocol):
    def __init__(self, hub: Hub, admission: Admission | None = None):
        self.hub = hub
        self.admission = admission  # counts this connection until CONNACK 0 or close
        self.transport: asyncio.Transport | None = None
        self.identity: Identity | None = None
        self.buffer = bytearray()
        self.subscriptions: list[str] = []
        self.persistent = False
        self.keepalive = 0.0
        self.last_seen = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = False

    # -- asyncio plumbing ---------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(CONNECT_TIMEOUT, self._idle_check)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._stop_counting()
        for timer in (self._timer, self._expiry):
            if timer is not None:
                timer.cancel()
        if self.identity is not None:
            self.hub.detach(self.identity, self)

    def close(self, reason: str) -> None:
        if not self.closed:
            log.info("closing %s: %s", self.identity.label if self.identity else "client", reason)
            self.closed = True
            self.transport.close()
            if self.identity is not None:
                self.hub.detach(self.identity, self)

    def send(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def _idle_check(self) -> None:
        if self.identity is None:
            self.close("no CONNECT in time")
            return
        # MQTT: the server may drop a client silent for 1.5 times its keepalive.
        silent = time.monotonic() - self.last_seen
        limit = self.keepalive * 1.5
        if silent >= limit:
            self.close("keepalive timeout")
        else:
            self._timer = asyncio.get_running_loop().call_later(limit - silent, self._idle_check)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_seen = time.monotonic()
        self.buffer += data
        try:
            for kind, flags, body in mp.split_packets(self.buffer):
                if self.closed:
                    return
                self._dispatch(kind, flags, body)
        except mp.ProtocolError as e:
            self.close(f"protocol error: {e}")
        except Exception:
            log.exception("dropping a connection after an unexpected error")
            self.close("internal error")

    # -- packets ------------------------------------------------------------------------
    def _dispatch(self, kind: int, flags: int, body: bytes) -> None:
        if self.identity is None:
            if kind != mp.CONNECT:
                raise mp.ProtocolError("the first packet must be CONNECT")
            self._connect(body)
        elif kind == mp.PUBLISH:
            self._publish(flags, body)
        elif kind == mp.PUBACK:
            pass  # we publish at QoS 0; nothing awaits a PUBACK
        elif kind == mp.SUBSCRIBE and flags == 2:
            self._subscribe(body)
        elif kind == mp.UNSUBSCRIBE and flags == 2:
            self._unsubscribe(body)
        elif kind == mp.PINGREQ:
            self.send(mp.PINGRESP_PACKET)
        elif kind == mp.DISCONNECT:
            self.close("client disconnected")
        else:
            raise mp.ProtocolError(f"unexpected packet type {kind}")

    def _connect(self, body: bytes) -> None:
        r = mp.Reader(body)
        if r.text() != "MQTT" or r.u8() != 4:
            self.send(mp.connack(False, mp.BAD_PROTOCOL))
            self.close("not MQTT 3.1.1")
            return
        flags, keepalive = r.u8(), r.u16()
        client_id = r.text()
        if flags & 0x04:  # a will: read and ignore, IoT Hub does not publish wills
            r.text()
            r.binary()
        username = r.text() if flags & 0x80 else ""
        password = r.text() if flags & 0x40 else ""
        accepted = self.hub.authenticate(client_id, username, password)
        if accepted is None:
            self.send(mp.connack(False, mp.NOT_AUTHORIZED))
            self.close(f"refused CONNECT for {client_id!r}")
            return
        identity, expiry = accepted
        loop = asyncio.get_running_loop()
        # IoT Hub severs a connection when its SAS token expires. Set up before attach(),
        # which closes the identity's other connection: nothing may fail after that.
        self._expiry = loop.call_later(max(0.0, expiry - time.time()), self.close, "token expired")
        self.identity = identity
        self.persistent = not flags & 0x02
        if not self.persistent:
            identity.record["session"] = []
        had_session = self.persistent and bool(identity.record["session"])
        self.subscriptions = list(identity.record["session"]) if self.persistent else []
        self.keepalive = keepalive or 0
        self.hub.attach(identity, self)
        self._timer.cancel()
        self._timer = None
        if self.keepalive:
            self._timer = loop.call_later(self.keepalive * 1.5, self._idle_check)
        self.send(mp.connack(had_session, mp.ACCEPTED))
        self._stop_counting()
        log.info("%s connected", identity.label)

    def _stop_counting(self) -> None:
        if self.admission is not None:
            self.admission.release(self)

    def _publish(self, flags: int, body: bytes) -> None:
        qos = (flags >> 1) & 3
        r = mp.Reader(body)
        topic = r.text()
        packet_id = r.u16() if qos else 0
        if qos > 1:
            raise mp.ProtocolError("IoT Hub does not support QoS 2")
        payload = r.rest()
        ident = self.identity
        if topic.startswith(TWIN_PREFIX):
            self._twin_request(topic, payload, packet_id)
        elif topic.startswith(METHOD_RESPONSE_PREFIX):
            path, params = _rid(topic)
            try:
                status = int(path[len(METHOD_RESPONSE_PREFIX) :].strip("/"))
            except ValueError as e:
                raise mp.ProtocolError(f"bad method response topic {topic!r}") from e
            self.hub.method_response(ident, params.get("$rid", ""), status, payload)
            self._ack(packet_id)
        elif topic.startswith(self._events_prefix()):
            self.hub.record_telemetry(ident, topic, payload)
            self._ack(packet_id)
        else:
            # IoT Hub disconnects a client that publishes where it may not.
            raise mp.ProtocolError(f"{ident.label} may not publish to {topic!r}")

    def _events_prefix(self) -> str:
        ident = self.identity
        if ident.module_id:
            return f"devices/{ident.device_id}/modules/{ident.module_id}/messages/events/"
        return f"devices/{ident.device_id}/messages/events/"

    def _ack(self, packet_id: int) -> None:
        if packet_id:
            self.send(mp.puback(packet_id))

    def _twin_request(self, topic: str, payload: bytes, packet_id: int) -> None:
        # The PUBACK travels with the answer, after the write is on disk: an acknowledged
        # patch is a durable one, and one TLS record instead of two is cheaper.
        ack = mp.puback(packet_id) if packet_id else b""
        path, params = _rid(topic)
        rid = params.get("$rid")
        if rid is None:
            raise mp.ProtocolError("twin request without $rid")
        ident = self.identity
        if path == "$iothub/twin/GET/":
            self.hub.touch(ident)
            twin = self.hub.device_twin(ident)
            self.send(ack + mp.publish(f"$iothub/twin/res/200/?$rid={rid}", twin))
            return
        try:
            if path != "$iothub/twin/PATCH/properties/reported/":
                raise HubError("ArgumentInvalid", f"unknown twin operation {path!r}")
            try:
                patch = json_input.loads(payload)
            except ValueError as e:
                raise HubError("ArgumentInvalid", f"reported patch is not valid JSON: {e}") from e
            version, saved = self.hub.patch_reported(ident, patch)
        except HubError as e:
            self.send(ack + self._twin_error(rid, e))
            return
        answer = ack + mp.publish(f"$iothub/twin/res/204/?$rid={rid}&$version={version}", b"")
        saved.add_done_callback(lambda f: self._after_save(f, rid, ack, answer))

    def _after_save(self, saved: asyncio.Future, rid: str, ack: bytes, answer: bytes) -> None:
        if saved.exception() is not None:
            log.error("reported patch not stored: %s", saved.exception())
            error = HubError("ServerError", "the hub could not store the patch")
            self.send(ack + self._twin_error(rid, error))
        else:
            self.send(answer)

    @staticmethod
    def _twin_error(rid: str, error: HubError) -> bytes:
        return mp.publish(f"$iothub/twin/res/{error.status}/?$rid={rid}", error.mqtt_body())

    def _allowed_filter(self, topic_filter: str) -> bool:
        if topic_filter.startswith("$iothub/"):
            return topic_filter in (
                "$iothub/twin/res/#",
                DESIRED_FILTER,
                "$iothub/methods/POST/#",
            )
        ident = self.identity
        if ident.module_id:
            return topic_filter == f"devices/{ident.device_id}/modules/{ident.module_id}/inputs/#"
        return topic_filter == f"devices/{ident.device_id}/messages/devicebound/#"

    def _subscribe(self, body: bytes) -> None:
        r = mp.Reader(body)
        packet_id = r.u16()
        granted = []
        while not r.at_end:
            topic_filter, qos = r.text(), r.u8()
            if self._allowed_filter(topic_filter):
                if topic_filter not in self.subscriptions:
                    self.subscriptions.append(topic_filter)
                granted.append(min(qos & 3, 1))
            else:
                granted.append(0x80)
        if not granted:
            raise mp.ProtocolError("SUBSCRIBE without topics")
        self._session_changed(mp.suback(packet_id, granted))

    def _unsubscribe(self, body: bytes) -> None:
        r = mp.Reader(body)
        packet_id = r.u16()
        while not r.at_end:
            topic_filter = r.text()
            if topic_filter in self.subscriptions:
                self.subscriptions.remove(topic_filter)
        self._session_changed(mp.unsuback(packet_id))

    def _session_changed(self, ack: bytes) -> None:
        if not self.persistent:
            self.send(ack)
            return
        saved = self.hub.save_session(self.identity, list(self.subscriptions))
        saved.add_done_callback(lambda f: f.exception() is None and self.send(ack))

    # -- what the hub pushes --------------------------------------------------------------
    def subscribed(self, topic_filter: str) -> bool:
        return topic_filter in self.subscriptions

    def desired_changed(self, patch: dict) -> None:
        if self.subscribed(DESIRED_FILTER):
            topic = f"$iothub/twin/PATCH/properties/desired/?$version={patch['$version']}"
            self.send(mp.publish(topic, json.dumps(patch).encode()))

    def method_request(self, name: str, rid: str, payload: bytes) -> None:
        self.send(mp.publish(f"$iothub/methods/POST/{name}/?$rid={rid}", payload))
