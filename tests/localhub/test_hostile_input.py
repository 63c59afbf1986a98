"""Hostile input is answered as IoT Hub answers bad requests (400 in its error shape),
never with a 500, a dropped connection or a hub that stops serving.

Queries nested a thousand levels deep, continuation tokens the hub never issued, JSON
100,000 levels deep over REST and over MQTT, and projections of unexpected types.
"""

import base64
import contextlib
import json
import queue
import ssl
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as paho
import pytest
from azure.iot.hub.models import CloudToDeviceMethod
from support import error_detail, primary_key, rest_request, service_token

from localhub import sas

DEEP_JSON = "[" * 100_000 + "]" * 100_000


def post_query(localhub, body, **headers):
    return rest_request(
        localhub,
        "POST",
        "/devices/query",
        service_token(localhub),
        data=body if isinstance(body, str | bytes) else json.dumps(body),
        headers={"Content-Type": "application/json", **headers},
    )


def assert_bad_request(response, mentions: str = "") -> None:
    assert response.status_code == 400, response.text
    assert response.reason == "Bad Request"
    detail = error_detail(response)
    assert detail["errorCode"] == 400004
    assert mentions.lower() in detail["message"].lower()


def assert_still_serving(localhub) -> None:
    response = post_query(localhub, {"query": "SELECT * FROM devices"})
    assert response.status_code == 200
    assert {twin["deviceId"] for twin in response.json()} == {"d1", "d2"}


@pytest.fixture
def devices(registry):
    """Two devices, d1 and d2; their primary keys by id."""
    return {
        device_id: primary_key(registry.create_device_with_sas(device_id, None, None, "enabled"))
        for device_id in ("d1", "d2")
    }


# -- queries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        "(" * 1000 + "deviceId = 'd1'" + ")" * 1000,
        "NOT " * 1000 + "deviceId = 'd1'",
        "NOT (" * 500 + "deviceId = 'd1'" + ")" * 500,
    ],
    ids=["parentheses", "nots", "both"],
)
def test_a_query_nested_a_thousand_levels_deep_is_400(localhub, devices, where):
    response = post_query(localhub, {"query": f"SELECT * FROM devices WHERE {where}"})

    assert_bad_request(response, "nested")
    assert_still_serving(localhub)


def test_a_query_nested_as_deep_as_allowed_runs(localhub, devices):
    where = "NOT (" * 50 + "deviceId = 'd1'" + ")" * 50  # 100 levels: even NOTs

    response = post_query(localhub, {"query": f"SELECT * FROM devices WHERE {where}"})

    assert response.status_code == 200
    assert [twin["deviceId"] for twin in response.json()] == ["d1"]


@pytest.mark.parametrize("joiner", [" or ", " and "])
def test_a_flat_chain_of_a_thousand_conditions_runs(localhub, devices, joiner):
    where = joiner.join(["a=1"] * 1000)  # no nesting, as long as 8192 characters allow

    response = post_query(localhub, {"query": f"SELECT * FROM devices WHERE {where}"})

    assert response.status_code == 200
    assert response.json() == []


def test_a_number_too_long_to_convert_is_400(localhub, devices):
    response = post_query(localhub, {"query": "SELECT * FROM devices WHERE tags.a = " + "1" * 5000})

    assert_bad_request(response, "number")
    assert_still_serving(localhub)


# -- continuation tokens ---------------------------------------------------------------------


def token_of(state) -> str:
    return base64.b64encode(json.dumps(state).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        token_of({"after": 5, "sent": 1}),
        token_of({"after": ["d1"], "sent": 1}),
        token_of({"after": None, "sent": 0}),
        token_of({"after": {"a": 1}, "sent": 0}),
        token_of({"after": "d1", "sent": "many"}),
        token_of({"after": "d1", "sent": -1}),
        token_of({"after": "d1"}),
        token_of(["d1", 1]),
        token_of("d1"),
        base64.b64encode(DEEP_JSON[:3000].encode() + DEEP_JSON[-3000:].encode()).decode(),
        base64.b64encode(b"\xff\xfe not json").decode(),
        "not base64 at all!",
    ],
    ids=[
        "after-int",
        "after-list",
        "after-null",
        "after-object",
        "sent-string",
        "sent-negative",
        "no-sent",
        "a-list",
        "a-string",
        "deep-json",
        "not-utf8",
        "not-base64",
    ],
)
def test_a_malformed_continuation_token_is_400(localhub, devices, token):
    response = post_query(
        localhub, {"query": "SELECT * FROM devices"}, **{"x-ms-continuation": token}
    )

    assert_bad_request(response, "x-ms-continuation")
    assert_still_serving(localhub)


@pytest.mark.parametrize(
    "state",
    [
        {"after": "d1", "sent": 1},  # a device id where a module key belongs
        {"after": ["d1"], "sent": 1},
        {"after": ["d1", 2], "sent": 1},
        {"after": [["d1"], ["m1"]], "sent": 1},
    ],
    ids=["after-string", "after-one-item", "after-int-item", "after-lists"],
)
def test_a_malformed_module_continuation_token_is_400(localhub, registry, devices, state):
    registry.create_module_with_sas("d1", "m1", None, None, None)
    response = post_query(
        localhub,
        {"query": "SELECT * FROM devices.modules"},
        **{"x-ms-continuation": token_of(state)},
    )

    assert_bad_request(response, "x-ms-continuation")
    assert_still_serving(localhub)


# -- projections of unexpected types -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "row_of"),
    [
        (
            "SELECT deviceId AS properties FROM devices",
            lambda twin: {"properties": twin["deviceId"]},
        ),
        (
            "SELECT properties.desired AS deviceId FROM devices",
            lambda twin: {"deviceId": twin["properties"]["desired"]},
        ),
        (
            "SELECT tags AS etag, status AS tags, version AS properties FROM devices",
            lambda twin: {
                "etag": twin["tags"],
                "tags": twin["status"],
                "properties": twin["version"],
            },
        ),
    ],
    ids=["string-as-properties", "object-as-deviceId", "swapped"],
)
def test_a_projection_of_an_unexpected_type_returns_the_values_as_they_are(
    localhub, registry, devices, text, row_of
):
    registry.update_twin("d1", {"tags": {"site": "lab"}}, "*")
    twins = {
        t["deviceId"]: t for t in post_query(localhub, {"query": "SELECT * FROM devices"}).json()
    }

    response = post_query(localhub, {"query": text})

    assert response.status_code == 200
    assert response.headers["x-ms-item-type"] == "raw"
    assert sorted(response.json(), key=json.dumps) == sorted(
        (row_of(twin) for twin in twins.values()), key=json.dumps
    )


# -- JSON nested 100,000 levels deep -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/twins/d1", DEEP_JSON),
        ("PUT", "/twins/d1", '{"tags": ' + DEEP_JSON + "}"),
        ("PUT", "/devices/d3", DEEP_JSON),
        ("POST", "/devices/query", '{"query": ' + DEEP_JSON + "}"),
        ("POST", "/twins/d1/methods", '{"methodName": "m", "payload": ' + DEEP_JSON + "}"),
    ],
    ids=["twin-patch", "twin-replace", "device", "query", "method"],
)
def test_json_nested_100000_levels_deep_is_400_over_rest(localhub, devices, method, path, body):
    response = rest_request(
        localhub,
        method,
        path,
        service_token(localhub),
        data=body,
        headers={"Content-Type": "application/json", "If-Match": '"*"'},
    )

    assert_bad_request(response, "nested deeper")
    assert_still_serving(localhub)


@contextlib.contextmanager
def twin_client(localhub, device_id: str, key: str):
    """A paho client connected as ``device_id``, subscribed to twin answers and methods.

    Yields (client, received): a queue of the (topic, payload) of every message it gets.
    """
    received, subscribed = queue.Queue(), queue.Queue()
    client = paho.Client(client_id=device_id, protocol=paho.MQTTv311, clean_session=True)
    client.tls_set(ca_certs=str(localhub.ca_file), tls_version=ssl.PROTOCOL_TLSv1_2)
    token = sas.generate(f"{localhub.host}/devices/{device_id}", key)
    client.username_pw_set(f"{localhub.host}/{device_id}/?api-version=2021-04-12", token)
    filters = [("$iothub/twin/res/#", 0), ("$iothub/methods/POST/#", 0)]
    client.on_connect = lambda c, _u, _f, rc: rc == 0 and c.subscribe(filters)
    client.on_subscribe = lambda *_args: subscribed.put(True)
    client.on_message = lambda _c, _u, message: received.put((message.topic, message.payload))
    client.connect(localhub.host, 8883)
    client.loop_start()
    try:
        subscribed.get(timeout=10)
        yield client, received
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_reported_patch_nested_100000_levels_deep_gets_a_400_answer(localhub, registry, devices):
    with twin_client(localhub, "d1", devices["d1"]) as (client, received):
        client.publish("$iothub/twin/PATCH/properties/reported/?$rid=1", DEEP_JSON, qos=0)

        topic, payload = received.get(timeout=10)
        assert topic == "$iothub/twin/res/400/?$rid=1"
        detail = json.loads(payload)
        assert detail["errorCode"] == 400004
        assert "nested deeper" in detail["message"]

        # The same connection still works.
        client.publish("$iothub/twin/PATCH/properties/reported/?$rid=2", '{"ok": 1}', qos=0)
        topic, _payload = received.get(timeout=10)
        assert topic.startswith("$iothub/twin/res/204/?$rid=2&$version=")
        assert client.is_connected()

    assert registry.get_twin("d1").properties.reported["ok"] == 1


def test_a_method_response_nested_100000_levels_deep_keeps_the_connection(
    localhub, registry, devices
):
    call = CloudToDeviceMethod(method_name="m", payload={}, response_timeout_in_seconds=10)
    with twin_client(localhub, "d1", devices["d1"]) as (client, received):
        with ThreadPoolExecutor(1) as pool:
            result = pool.submit(registry.invoke_device_method, "d1", call)
            topic, _payload = received.get(timeout=10)
            assert topic.startswith("$iothub/methods/POST/m/?$rid=")
            rid = topic.partition("$rid=")[2]
            client.publish(f"$iothub/methods/res/200/?$rid={rid}", DEEP_JSON, qos=0)

            # Not JSON this hub reads: the caller gets the body as text, like other non-JSON.
            answer = result.result(timeout=20)
        assert answer.status == 200
        assert answer.payload == DEEP_JSON

        client.publish("$iothub/twin/GET/?$rid=2", b"", qos=0)
        topic, payload = received.get(timeout=10)
        assert topic == "$iothub/twin/res/200/?$rid=2"
        assert "reported" in json.loads(payload)
        assert client.is_connected()
