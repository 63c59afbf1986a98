"""The one module that talks to IoT Hub (azure-iot-hub's IoTHubRegistryManager).

It builds the registry manager once, returns plain dicts, and turns every SDK failure into
a ``HubError`` subclass whose message an operator can act on. Nothing above this module
knows about msrest or the SDK's model classes.
"""

import dataclasses
import functools
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import Twin, TwinProperties
from django.conf import settings
from msrest.exceptions import ClientRequestError, HttpOperationError

log = logging.getLogger(__name__)

# An operator waits on these calls; fail fast rather than after msrest's 100 s default. A
# page that only reads gives up sooner than a write, whose outcome the operator must learn.
READ_TIMEOUT = 5
WRITE_TIMEOUT = 15
QUERY_PAGE_SIZE = 1000


class HubError(Exception):
    """Something the operator should read; ``status`` is the hub's HTTP status, if any."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None, detail: str = ""):
        super().__init__(message)
        self.message = message
        self.detail = detail
        if status is not None:
            self.status = status


class HubNotConfigured(HubError):
    pass


class HubUnavailable(HubError):
    pass


class BadRequest(HubError):
    status = 400


class Unauthorized(HubError):
    status = 401


class NotFound(HubError):
    status = 404


class Conflict(HubError):
    status = 409


class PreconditionFailed(HubError):
    status = 412


_BY_STATUS = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
}


@dataclass(frozen=True)
class HubConfig:
    connection_string: str
    ca_file: str | None
    local: bool

    @property
    def fields(self) -> dict[str, str]:
        return dict(part.split("=", 1) for part in self.connection_string.split(";") if part)

    @property
    def host_name(self) -> str:
        return self.fields["HostName"]

    @property
    def device_host_name(self) -> str:
        """Devices dial 8883 (or 443 over websockets) whatever the service port is, and the
        device SDK takes HostName as a host name: their strings never carry a port, wherever
        the hub is (a localhub elsewhere has ``HostName=host:8443`` in its service string)."""
        return self.host_name.split(":", 1)[0]


def config() -> HubConfig:
    if settings.IOTHUB_CONNECTION_STRING:
        return HubConfig(settings.IOTHUB_CONNECTION_STRING, settings.IOTHUB_CA_FILE or None, False)
    data_dir = Path(settings.LOCALHUB_DIR)
    path = data_dir / "connection-string"
    if not path.exists():
        raise HubNotConfigured(
            f"No hub configured: set IOTHUB_CONNECTION_STRING, or start the local hub "
            f"(`make run` or `python -m localhub --data-dir {data_dir}`)."
        )
    ca_file = settings.IOTHUB_CA_FILE or str(data_dir / "ca.pem")
    return HubConfig(path.read_text().strip(), ca_file, True)


@functools.cache
def _registry(connection_string: str, ca_file: str | None, timeout: int) -> IoTHubRegistryManager:
    manager = IoTHubRegistryManager.from_connection_string(connection_string)
    connection = manager.protocol.config.connection
    connection.timeout = timeout
    if ca_file:
        connection.verify = ca_file
    # msrest retries a failing GET for ~5 s; a page should say "hub down" at once.
    manager.protocol.config.retry_policy.retries = 0
    return manager


def registry(timeout: int = WRITE_TIMEOUT) -> IoTHubRegistryManager:
    """The registry manager whose calls give up after ``timeout`` seconds (the SDK sets it
    per client, so reads and writes each have their own)."""
    cfg = config()
    return _registry(cfg.connection_string, cfg.ca_file, timeout)


def reader() -> IoTHubRegistryManager:
    return registry(READ_TIMEOUT)


def _hub_message(error: HttpOperationError) -> str:
    """The hub's own explanation, dug out of its nested error JSON when there is one."""
    text = error.response.text if error.response is not None else ""
    try:
        body = json.loads(text)
        inner = body.get("Message", "")
        try:
            return json.loads(inner).get("message", inner)
        except (ValueError, AttributeError):
            return inner
    except (ValueError, AttributeError):
        return text[:300]


# -- health: what every page's banner says of the hub ---------------------------------------
SLOW_SECONDS = 2  # an answer slower than this marks the hub slow
# While the hub is not answering, calls fail at once rather than each waiting out its
# timeout (a page makes three): one call is let through this often to see if it is back.
RETRY_SECONDS = 5


@dataclass
class Health:
    """This process's view of the hub, from the calls it made."""

    state: str = "unknown"  # "ok", "slow" or "down" once a call has been made
    since: float | None = None  # when it entered this state (time.time())
    checked: float | None = None  # when a call last ended
    seconds: float | None = None  # how long the last answer took
    problem: str = ""  # why it is down


_health = Health()
_health_lock = threading.Lock()


def health() -> Health:
    with _health_lock:
        return dataclasses.replace(_health)


def _observe(state: str, seconds: float | None = None, problem: str = "") -> None:
    global _health
    now = time.time()
    with _health_lock:
        since = _health.since if _health.state == state else now
        _health = Health(state, since, now, seconds, problem)


def forget_health() -> None:
    """Back to "unknown" (tests start each from there)."""
    global _health
    with _health_lock:
        _health = Health()


def _unanswered(what: str) -> HubError | None:
    """A fail-fast HubUnavailable while the hub is known not to answer, or None to try."""
    with _health_lock:
        down = _health.state == "down" and time.time() - _health.checked < RETRY_SECONDS
        problem = _health.problem
    return HubUnavailable(f"{what}: {problem}") if down else None


_TIMEOUTS = (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)
_REFUSED = urllib3.exceptions.NewConnectionError


def _timed_out(error: BaseException) -> bool:
    """Whether a transport failure was a timeout, wherever requests and urllib3 wrapped it
    (a hung TLS handshake comes as a ConnectionError around a read timeout)."""
    seen, todo = set(), [error]
    while todo:
        each = todo.pop()
        if each is None or id(each) in seen:
            continue
        seen.add(id(each))
        # urllib3's NewConnectionError (refused, unreachable) is a ConnectTimeoutError by
        # descent, not by nature.
        if isinstance(each, _TIMEOUTS) and not isinstance(each, _REFUSED):
            return True
        todo += [getattr(each, "inner_exception", None), getattr(each, "reason", None)]
        todo += [each.__cause__, each.__context__]
        todo += [arg for arg in getattr(each, "args", ()) if isinstance(arg, BaseException)]
    return False


def call(what: str, fn, *args, **kwargs):
    """Run one SDK call, translating its failures. ``what`` names it for the operator."""
    if refused := _unanswered(what):
        raise refused
    started = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except HttpOperationError as e:
        _observe("ok", time.monotonic() - started)  # refused, but it answered
        status = e.response.status_code if e.response is not None else None
        detail = _hub_message(e)
        cls = _BY_STATUS.get(status, HubError)
        raise cls(f"{what}: {detail or e}", status=status, detail=detail) from e
    except ClientRequestError as e:
        host = config().host_name
        problem = (
            f"the hub at {host} did not answer in time."
            if _timed_out(e)
            else f"the hub at {host} cannot be reached. Is it running?"
        )
        _observe("down", problem=problem)
        raise HubUnavailable(f"{what}: {problem}") from e
    except ValueError as e:  # the SDK's own argument and connection-string checks
        raise BadRequest(f"{what}: {e}") from e
    seconds = time.monotonic() - started
    _observe("slow" if seconds > SLOW_SECONDS else "ok", seconds)
    return result


def _plain(model) -> dict:
    """An SDK model as the hub's own JSON (camelCase keys), so templates see one shape."""
    return model.serialize(keep_readonly=True) if model is not None else {}


def _checked(what: str, doc: dict, device_id: str, module_id: str = "") -> dict:
    """``doc`` if it is the identity asked for. An answer for another one (a proxy or hub
    resolving the URL otherwise than we meant) must never be shown or acted on as this."""
    if doc.get("deviceId") != device_id or (doc.get("moduleId") or "") != module_id:
        got = "/".join(str(i) for i in (doc.get("deviceId"), doc.get("moduleId")) if i)
        raise HubError(f"{what}: the hub answered for {got or 'no identity'}, so it was ignored.")
    return doc


# -- identities --------------------------------------------------------------------------
def get_device(device_id: str) -> dict:
    what = f"Reading device {device_id}"
    return _checked(what, _plain(call(what, reader().get_device, device_id)), device_id)


def create_device(device_id: str, primary_key=None, secondary_key=None, status="enabled"):
    rm = registry()
    made = call(
        f"Creating device {device_id}",
        rm.create_device_with_sas,
        device_id,
        primary_key or None,
        secondary_key or None,
        status,
    )
    return _checked(f"Creating device {device_id}", _plain(made), device_id)


def update_device(device: dict, *, status=None, status_reason=None, primary_key=None,
                  secondary_key=None) -> dict:  # fmt: skip
    """Change status or keys; ``device`` is what the operator saw (its etag guards it).
    A key passed as "" asks the hub to generate a new one."""
    keys = device["authentication"]["symmetricKey"]
    rm = registry()
    updated = call(
        f"Updating device {device['deviceId']}",
        rm.update_device_with_sas,
        device["deviceId"],
        device["etag"],
        keys["primaryKey"] if primary_key is None else primary_key,
        keys["secondaryKey"] if secondary_key is None else secondary_key,
        status or device["status"],
        # The SDK resets whatever is not passed: carry the rest of the identity over.
        iot_edge=bool((device.get("capabilities") or {}).get("iotEdge")),
        status_reason=device.get("statusReason") if status_reason is None else status_reason,
        device_scope=device.get("deviceScope"),
        parent_scopes=device.get("parentScopes"),
    )
    return _checked(f"Updating device {device['deviceId']}", _plain(updated), device["deviceId"])


def delete_device(device_id: str, etag: str | None = None) -> None:
    call(f"Deleting device {device_id}", registry().delete_device, device_id, etag)


def get_module(device_id: str, module_id: str) -> dict:
    what = f"Reading module {device_id}/{module_id}"
    doc = _plain(call(what, reader().get_module, device_id, module_id))
    return _checked(what, doc, device_id, module_id)


def get_modules(device_id: str) -> list[dict]:
    what = f"Listing modules of {device_id}"
    modules = [_plain(m) for m in call(what, reader().get_modules, device_id)]
    for module in modules:
        _checked(what, module, device_id, module.get("moduleId") or "")
    return modules


def create_module(device_id: str, module_id: str, primary_key=None, secondary_key=None):
    rm = registry()
    made = call(
        f"Creating module {device_id}/{module_id}",
        rm.create_module_with_sas,
        device_id,
        module_id,
        None,
        primary_key or None,
        secondary_key or None,
    )
    return _checked(f"Creating module {device_id}/{module_id}", _plain(made), device_id, module_id)


def update_module_keys(module: dict, *, primary_key=None, secondary_key=None) -> dict:
    keys = module["authentication"]["symmetricKey"]
    rm = registry()
    what = f"Updating module {module['deviceId']}/{module['moduleId']}"
    updated = call(
        what,
        rm.update_module_with_sas,
        module["deviceId"],
        module["moduleId"],
        module.get("managedBy"),
        module["etag"],
        keys["primaryKey"] if primary_key is None else primary_key,
        keys["secondaryKey"] if secondary_key is None else secondary_key,
    )
    return _checked(what, _plain(updated), module["deviceId"], module["moduleId"])


def delete_module(device_id: str, module_id: str, etag: str | None = None) -> None:
    what = f"Deleting module {device_id}/{module_id}"
    call(what, registry().delete_module, device_id, module_id, etag)


# -- twins ---------------------------------------------------------------------------------
def get_twin(device_id: str, module_id: str = "") -> dict:
    rm = reader()
    if module_id:
        what = f"Reading the twin of {device_id}/{module_id}"
        doc = _plain(call(what, rm.get_module_twin, device_id, module_id))
    else:
        what = f"Reading the twin of {device_id}"
        doc = _plain(call(what, rm.get_twin, device_id))
    return _checked(what, doc, device_id, module_id)


def write_twin(device_id: str, module_id: str, etag: str, *, tags=None, desired=None,
               replace=False) -> dict:  # fmt: skip
    """PATCH (merge; null deletes) or PUT (replace) tags and desired, guarded by ``etag``:
    a twin changed since the operator read it raises PreconditionFailed."""
    if not etag:
        raise PreconditionFailed("Refusing to write a twin without the etag it was read with.")
    patch = Twin(
        tags=tags, properties=TwinProperties(desired=desired) if desired is not None else None
    )
    rm = registry()
    label = f"{device_id}/{module_id}" if module_id else device_id
    verb = "Replacing" if replace else "Updating"
    what = f"{verb} the twin of {label}"
    if module_id:
        fn = rm.replace_module_twin if replace else rm.update_module_twin
        doc = _plain(call(what, fn, device_id, module_id, patch, etag))
    else:
        fn = rm.replace_twin if replace else rm.update_twin
        doc = _plain(call(what, fn, device_id, patch, etag))
    return _checked(what, doc, device_id, module_id)


# -- queries and statistics ---------------------------------------------------------------
def query_page(text: str, continuation: str | None = None, page_size: int = QUERY_PAGE_SIZE,
               timeout: int = READ_TIMEOUT):  # fmt: skip
    """One page of an IoT Hub query: (items as the hub's JSON, continuation token or None)."""
    return call("Running the query", _query, text, continuation, page_size, timeout)


def _query(text: str, continuation: str | None, page_size: int, timeout: int):
    """POST /devices/query through the SDK's own client (auth, TLS, timeout), keeping the
    hub's JSON. The SDK's query_iot_hub would make every item a Twin model, which drops
    what a projection selects (``SELECT tags.location``), and its model round trip costs
    15 times the request itself: a sync of 60,000 twins would take minutes."""
    protocol = registry(timeout).protocol
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json; charset=utf-8",
        "x-ms-max-item-count": str(page_size),
    }
    if continuation:
        headers["x-ms-continuation"] = continuation
    params = {"api-version": protocol.query.api_version}
    request = protocol._client.post("/devices/query", params, headers, {"query": text})
    response = protocol._client.send(request, stream=False)
    if response.status_code != 200:
        raise HttpOperationError(protocol._deserialize, response)
    return response.json(), response.headers.get("x-ms-continuation") or None


def query_all(text: str, page_size: int = QUERY_PAGE_SIZE):
    """Every result of a query, page after page (yields lists, one per page). A sync asks
    for pages of a thousand twins: each may take longer than a page's read."""
    token = None
    while True:
        items, token = query_page(text, token, page_size, WRITE_TIMEOUT)
        yield items
        if not token:
            return


# -- connection strings --------------------------------------------------------------------
def connection_string_problem(device_id: str, module_id: str = "") -> str:
    """Why no connection string can name this identity, or "". IoT Hub allows ';' in ids,
    but a connection string is ';'-separated: the SDKs would read a field cut in two."""
    for kind, value in (("device", device_id), ("module", module_id)):
        if ";" in value:
            return (
                f"The {kind} id {value!r} holds ';', which separates a connection string's "
                "fields, so no connection string can name it: give the device its id, the "
                "hub's host name and its key (or a SAS token) separately."
            )
    return ""


def device_connection_string(device_id: str, key: str, module_id: str = "") -> str:
    """In the order the Azure portal shows them: ModuleId before the key."""
    problem = connection_string_problem(device_id, module_id)
    if problem:
        raise BadRequest(problem)
    who = f"DeviceId={device_id};ModuleId={module_id}" if module_id else f"DeviceId={device_id}"
    return f"HostName={config().device_host_name};{who};SharedAccessKey={key}"
