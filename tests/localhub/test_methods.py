"""Direct methods: the service invokes over REST, the device or module answers over MQTT."""

import asyncio
import concurrent.futures
import queue
import time

import pytest
from azure.iot.device import MethodResponse
from azure.iot.hub.models import CloudToDeviceMethod
from support import create_identities, http_error

MIN_RESPONSE_TIMEOUT = 5  # seconds; the smallest responseTimeoutInSeconds IoT Hub accepts
QUIET_PERIOD = 0.5  # how long a connection is watched to show that nothing reaches it


def method(name="reboot", payload=None, **timeouts):
    return CloudToDeviceMethod(method_name=name, payload=payload, **timeouts)


def answering(client, status=200, payload_for=lambda request: {"ok": True}):
    """Connect ``client`` and make it answer every method; returns the requests it gets."""
    requests = queue.Queue()

    def on_request(request):
        requests.put(request)
        response = MethodResponse.create_from_method_request(request, status, payload_for(request))
        client.send_method_response(response)

    client.connect()
    client.on_method_request_received = on_request
    return requests


@pytest.fixture
def d1(registry):
    """Device d1 with module m1: their primary keys by module id ('' for the device)."""
    return create_identities(registry, "d1", "m1")


# Round trips


def test_a_device_method_returns_the_devices_status_and_payload(registry, d1, client_for):
    requests = answering(
        client_for("d1", d1[""]),
        status=201,
        payload_for=lambda request: {"echo": request.payload, "name": request.name},
    )

    result = registry.invoke_device_method("d1", method("reboot", {"delay": [1, 2]}))

    assert result.status == 201
    assert result.payload == {"echo": {"delay": [1, 2]}, "name": "reboot"}
    request = requests.get_nowait()
    assert request.name == "reboot"
    assert request.payload == {"delay": [1, 2]}


def test_a_method_response_may_carry_any_json(registry, d1, client_for):
    answering(client_for("d1", d1[""]), status=500, payload_for=lambda request: "failed")

    result = registry.invoke_device_method("d1", method("check"))

    assert result.status == 500
    assert result.payload == "failed"


def test_a_module_method_goes_to_the_module_not_the_device(registry, d1, client_for):
    device_requests = answering(
        client_for("d1", d1[""]), payload_for=lambda request: {"answered_by": "d1"}
    )
    module_requests = answering(
        client_for("d1", d1["m1"], "m1"), payload_for=lambda request: {"answered_by": "m1"}
    )

    result = registry.invoke_device_module_method("d1", "m1", method("restart", {"n": 1}))

    assert result.status == 200
    assert result.payload == {"answered_by": "m1"}
    assert module_requests.get_nowait().payload == {"n": 1}
    with pytest.raises(queue.Empty):
        device_requests.get(timeout=QUIET_PERIOD)


def test_a_device_method_does_not_go_to_its_modules(registry, d1, client_for):
    module_requests = answering(client_for("d1", d1["m1"], "m1"))
    answering(client_for("d1", d1[""]), payload_for=lambda request: {"answered_by": "d1"})

    result = registry.invoke_device_method("d1", method("restart"))

    assert result.payload == {"answered_by": "d1"}
    with pytest.raises(queue.Empty):
        module_requests.get(timeout=QUIET_PERIOD)


async def test_an_asyncio_module_answers_a_method(registry, localhub, d1):
    client = localhub.device_client("d1", d1["m1"], "m1", aio=True)

    async def on_request(request):
        response = {"doubled": request.payload * 2}
        await client.send_method_response(
            MethodResponse.create_from_method_request(request, 200, response)
        )

    try:
        await client.connect()
        client.on_method_request_received = on_request

        result = await asyncio.to_thread(
            registry.invoke_device_module_method, "d1", "m1", method("double", 21)
        )
    finally:
        await client.shutdown()

    assert result.status == 200
    assert result.payload == {"doubled": 42}


# Offline devices and timeouts


def test_a_method_to_an_offline_device_fails_at_once_with_404_device_not_online(registry, d1):
    started = time.monotonic()
    response = http_error(registry.invoke_device_method, "d1", method())

    assert response.status_code == 404
    assert "404103" in response.text
    assert time.monotonic() - started < 2


def test_a_method_to_an_offline_module_fails_with_404_device_not_online(registry, d1, client_for):
    answering(client_for("d1", d1[""]))  # the device being online does not help its module

    response = http_error(registry.invoke_device_module_method, "d1", "m1", method())

    assert response.status_code == 404
    assert "404103" in response.text


def test_a_method_waits_for_a_device_that_connects_within_the_connect_timeout(
    localhub, registry, d1, client_for
):
    service = localhub.registry_manager()  # its own HTTP session, for the other thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            service.invoke_device_method, "d1", method("late", connect_timeout_in_seconds=5)
        )
        time.sleep(1)  # the scenario: the device comes online a second after the call
        assert not pending.done()
        answering(client_for("d1", d1[""]), payload_for=lambda request: "made it")

        result = pending.result(timeout=10)

    assert result.status == 200
    assert result.payload == "made it"


def test_a_method_nobody_answers_times_out_with_504(registry, d1, client_for):
    requests = queue.Queue()
    client = client_for("d1", d1[""])
    client.connect()
    client.on_method_request_received = requests.put  # receives, never answers

    started = time.monotonic()
    response = http_error(
        registry.invoke_device_method,
        "d1",
        method("hang", response_timeout_in_seconds=MIN_RESPONSE_TIMEOUT),
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert "504101" in response.text
    assert MIN_RESPONSE_TIMEOUT <= elapsed < MIN_RESPONSE_TIMEOUT + 3
    assert requests.get_nowait().name == "hang"


def test_a_method_to_an_unknown_device_is_404_device_not_found(registry):
    response = http_error(registry.invoke_device_method, "nobody", method())

    assert response.status_code == 404
    assert "404001" in response.text


# Invalid requests


@pytest.mark.parametrize(
    "request_",
    [
        method(name=None),
        method(name=""),
        method(response_timeout_in_seconds=MIN_RESPONSE_TIMEOUT - 1),
        method(response_timeout_in_seconds=0),
        method(response_timeout_in_seconds=301),
        method(connect_timeout_in_seconds=-1),
        method(connect_timeout_in_seconds=301),
    ],
    ids=[
        "no-method-name",
        "empty-method-name",
        "response-timeout-below-5",
        "response-timeout-zero",
        "response-timeout-above-300",
        "negative-connect-timeout",
        "connect-timeout-above-300",
    ],
)
def test_an_invalid_method_request_is_400(registry, d1, client_for, request_):
    requests = answering(client_for("d1", d1[""]))

    response = http_error(registry.invoke_device_method, "d1", request_)

    assert response.status_code == 400
    assert "400004" in response.text
    assert requests.empty()


def test_a_method_payload_over_128_kb_is_refused_before_reaching_the_device(
    registry, d1, client_for
):
    requests = answering(client_for("d1", d1[""]))

    response = http_error(
        registry.invoke_device_method, "d1", method(payload={"blob": "x" * 128 * 1024})
    )

    assert response.status_code == 413
    assert requests.empty()
