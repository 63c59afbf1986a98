"""Device-to-cloud telemetry: acknowledged at QoS 1 and kept in the hub's bounded buffer."""

import json
import queue
import ssl
import time
from urllib.parse import unquote

import paho.mqtt.client as paho
from azure.iot.device import Message
from support import primary_key

from localhub import sas
from localhub.hub import TELEMETRY_BUFFER, TELEMETRY_BUFFER_BYTES


def buffered(localhub):
    """A snapshot of the hub's telemetry buffer: (label, time, topic, payload) tuples.

    No API shows telemetry (the real hub routes it to Event Hubs), so this reads hub state.
    """
    return localhub.call(list, localhub.hub.telemetry)


def test_a_device_message_is_acknowledged_and_buffered_with_its_properties(
    localhub, registry, client_for
):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = client_for("d1", key)
    client.connect()
    message = Message(
        json.dumps({"temperature": 21.5}),
        message_id="mid-1",
        content_type="application/json",
        content_encoding="utf-8",
    )
    message.custom_properties["alert"] = "high temp"

    client.send_message(message)  # returns once the hub has acknowledged it

    [(label, received_at, topic, payload)] = buffered(localhub)
    assert label == "d1"
    assert received_at.endswith("Z")
    assert topic.startswith("devices/d1/messages/events/")
    properties = topic.removeprefix("devices/d1/messages/events/")
    assert "%24.mid=mid-1" in properties
    assert "%24.ct=application%2Fjson" in properties
    assert "%24.ce=utf-8" in properties
    assert "alert=high%20temp" in properties
    assert json.loads(payload) == {"temperature": 21.5}


async def test_a_module_message_is_acknowledged_and_buffered_under_the_module(localhub, registry):
    registry.create_device_with_sas("d1", None, None, "enabled")
    key = primary_key(registry.create_module_with_sas("d1", "m1", None, None, None))
    client = localhub.device_client("d1", key, "m1", aio=True)
    try:
        await client.connect()
        message = Message(b"\x00\x01binary", content_type="application/octet-stream")
        message.custom_properties["source"] = "sensor/7"
        await client.send_message(message)
    finally:
        await client.shutdown()

    [(label, _received_at, topic, payload)] = buffered(localhub)
    assert label == "d1/m1"
    assert topic.startswith("devices/d1/modules/m1/messages/events/")
    assert "%24.ct=application%2Foctet-stream" in topic
    assert "source=sensor/7" in unquote(topic)
    assert payload == b"\x00\x01binary"


def test_messages_are_buffered_in_order_from_each_identity(localhub, registry, client_for):
    device_key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    module_key = primary_key(registry.create_module_with_sas("d1", "m1", None, None, None))
    device = client_for("d1", device_key)
    module = client_for("d1", module_key, "m1")

    for n in range(3):
        device.send_message(f"device {n}")
        module.send_message(f"module {n}")

    entries = buffered(localhub)
    assert [(label, payload) for label, _t, _topic, payload in entries] == [
        (label, f"{who} {n}".encode())
        for n in range(3)
        for label, who in (("d1", "device"), ("d1/m1", "module"))
    ]


def test_sending_a_message_updates_last_activity_time(registry, client_for):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = client_for("d1", key)
    client.connect()
    connected = registry.get_device("d1").last_activity_time

    time.sleep(0.01)  # timestamps have millisecond resolution
    client.send_message("ping")

    assert registry.get_device("d1").last_activity_time > connected


def test_sending_a_module_message_updates_the_modules_last_activity_time(registry, client_for):
    registry.create_device_with_sas("d1", None, None, "enabled")
    key = primary_key(registry.create_module_with_sas("d1", "m1", None, None, None))
    client = client_for("d1", key, "m1")
    client.connect()
    connected = registry.get_module("d1", "m1").last_activity_time

    time.sleep(0.01)
    client.send_message("ping")

    assert registry.get_module("d1", "m1").last_activity_time > connected


def test_a_message_near_the_256_kb_limit_is_accepted(localhub, registry, client_for):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = client_for("d1", key)
    body = b"x" * (250 * 1024)

    client.send_message(Message(body))

    [(_label, _t, _topic, payload)] = buffered(localhub)
    assert payload == body
    assert client.connected


def test_the_telemetry_buffer_is_bounded(localhub):
    assert localhub.hub.telemetry.maxlen == TELEMETRY_BUFFER


def held_bytes(entries) -> int:
    return sum(len(topic) + len(payload) for _label, _t, topic, payload in entries)


def test_the_telemetry_buffer_keeps_the_newest_messages_within_its_byte_bound(
    localhub, registry, client_for
):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    client = client_for("d1", key)
    size = 250 * 1024  # near the SDK's 256 KB limit
    count = TELEMETRY_BUFFER_BYTES // size + 20

    for n in range(count):
        client.send_message(Message(n.to_bytes(4, "big") + b"x" * (size - 4)))

    entries = buffered(localhub)
    assert localhub.call(lambda: localhub.hub.telemetry_bytes) == held_bytes(entries)
    assert held_bytes(entries) <= TELEMETRY_BUFFER_BYTES
    # Only the oldest went, only as many as the bound needs, and the newest are all there.
    assert held_bytes(entries) > TELEMETRY_BUFFER_BYTES - size - 1024
    numbers = [int.from_bytes(payload[:4], "big") for _label, _t, _topic, payload in entries]
    assert numbers == list(range(count - len(entries), count))
    assert client.connected


def test_the_byte_count_follows_messages_dropped_by_the_count_bound(localhub, registry):
    key = primary_key(registry.create_device_with_sas("d1", None, None, "enabled"))
    connected = queue.Queue()
    client = paho.Client(client_id="d1", protocol=paho.MQTTv311, clean_session=True)
    client.tls_set(ca_certs=str(localhub.ca_file), tls_version=ssl.PROTOCOL_TLSv1_2)
    client.username_pw_set(
        f"{localhub.host}/d1/?api-version=2021-04-12",
        sas.generate(f"{localhub.host}/devices/d1", key),
    )
    client.on_connect = lambda _c, _u, _f, rc: connected.put(rc)
    client.connect(localhub.host, 8883)
    client.loop_start()
    try:
        assert connected.get(timeout=10) == 0
        # QoS 0 (unacknowledged) for speed; the last at QoS 1: its PUBACK follows the rest.
        for n in range(TELEMETRY_BUFFER + 50):
            client.publish("devices/d1/messages/events/", b"m" * (n % 7), qos=0)
        client.publish("devices/d1/messages/events/", b"last", qos=1).wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()

    entries = buffered(localhub)
    assert len(entries) == TELEMETRY_BUFFER
    assert entries[-1][3] == b"last"
    assert localhub.call(lambda: localhub.hub.telemetry_bytes) == held_bytes(entries)
