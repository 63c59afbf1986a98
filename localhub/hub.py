"""The hub's state and every operation on it, shared by the HTTPS and MQTT endpoints.

State lives in memory (one asyncio loop owns it, so a check and the change it guards run
without interruption) and every change is written to the store before it is acknowledged.
"""

import asyncio
import base64
import binascii
import bisect
import itertools
import json
from collections import deque

from . import json_input, sas, twin, twin_rules
from .errors import HubError, bad_request
from .identities import MAX_MODULES_PER_DEVICE, MAX_STATUS_REASON, Identity, check_id, keys_from
from .query import QueryError, parse_query
from .store import Store

TELEMETRY_BUFFER = 10_000
# Bytes of topic and payload the buffer may hold: 10,000 legal 256 KB messages would be 2.6 GB.
TELEMETRY_BUFFER_BYTES = 64 * 1024 * 1024
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_METHOD_PAYLOAD = 128 * 1024
METHODS_FILTER = "$iothub/methods/POST/#"
DESIRED_FILTER = "$iothub/twin/PATCH/properties/desired/#"

# Policy permissions, as IoT Hub names them.
REGISTRY_READ, REGISTRY_WRITE = "RegistryRead", "RegistryWrite"
SERVICE_CONNECT, DEVICE_CONNECT = "ServiceConnect", "DeviceConnect"
POLICY_PERMISSIONS = {
    "iothubowner": {REGISTRY_READ, REGISTRY_WRITE, SERVICE_CONNECT, DEVICE_CONNECT},
    "service": {SERVICE_CONNECT},
    "device": {DEVICE_CONNECT},
    "registryRead": {REGISTRY_READ},
    "registryReadWrite": {REGISTRY_READ, REGISTRY_WRITE},
}


def etag_matches(if_match: str | None, current: str) -> bool:
    if if_match is None:
        return True
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    return value == "*" or value == current


def _default(value, default):
    return default if value is None else value


def _resume_point(state, collection: str):
    """(key to resume after, items sent so far) from a decoded x-ms-continuation token."""
    if not isinstance(state, dict):
        raise ValueError("not an object")
    after, sent = state.get("after"), state.get("sent")
    if collection == "devices":
        parts = [after]
    elif isinstance(after, list) and len(after) == 2:  # a module's (device id, module id)
        parts, after = after, tuple(after)
    else:
        parts = [None]
    # Only a key of the collection's own type compares with its keys (bisect needs that).
    if not all(isinstance(part, str) for part in parts) or type(sent) is not int or sent < 0:
        raise ValueError("not a position in this collection")
    return after, sent


def _twin_input(body, name: str) -> dict | None:
    if body is None:
        return None
    if not isinstance(body, dict):
        raise bad_request(f"{name} must be a JSON object")
    return body


class Hub:
    def __init__(self, store: Store, host: str, https_port: int, policies: dict[str, tuple]):
        self.store = store
        self.host = host
        self.https_port = https_port
        self.policies = policies  # name -> (primary key, secondary key)
        self.devices: dict[str, Identity] = {}
        self.telemetry: deque = deque(maxlen=TELEMETRY_BUFFER)
        self.telemetry_bytes = 0  # what the buffer's topics and payloads hold
        self._methods: dict[str, tuple[asyncio.Future, Identity]] = {}
        self._rids = itertools.count(1)
        self._sorted: dict[str, list] = {}
        # Identities whose connection times changed since they were last stored; those
        # are not acknowledged writes, so they go to disk with the next write or at stop.
        self._touched: set[Identity] = set()
        rows = store.load()
        for device_id, module_id, record in rows:
            if not module_id:
                self.devices[device_id] = Identity(device_id, "", record)
        for device_id, module_id, record in rows:
            if module_id and device_id in self.devices:
                self.devices[device_id].modules[module_id] = Identity(device_id, module_id, record)

    # -- look-ups ---------------------------------------------------------------------
    def device(self, device_id: str) -> Identity:
        found = self.devices.get(device_id)
        if found is None:
            raise HubError("DeviceNotFound", f"Device {device_id!r} was not found")
        return found

    def identity(self, device_id: str, module_id: str = "") -> Identity:
        device = self.device(device_id)
        if not module_id:
            return device
        found = device.modules.get(module_id)
        if found is None:
            raise HubError(
                "ModuleNotFound", f"Module {module_id!r} was not found on device {device_id!r}"
            )
        return found

    def all_modules(self):
        for device in self.devices.values():
            yield from device.modules.values()

    def _changed_membership(self) -> None:
        self._sorted.clear()

    async def _save(self, ident: Identity) -> None:
        await self.store.put(ident.key, ident.record)

    async def save_connection_times(self) -> None:
        alive = [i for i in self._touched if self._exists(i)]
        self._touched.clear()
        await asyncio.gather(*(self.store.put(i.key, i.record) for i in alive))

    def _exists(self, ident: Identity) -> bool:
        device = self.devices.get(ident.device_id)
        if not ident.module_id:
            return device is ident
        return device is not None and device.modules.get(ident.module_id) is ident

    # -- service side: identities -----------------------------------------------------
    def _device_fields(self, body: dict, current: Identity | None, now: str):
        status = body.get("status") or "enabled"
        if status not in ("enabled", "disabled"):
            raise bad_request("status must be 'enabled' or 'disabled'")
        reason = body.get("statusReason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_STATUS_REASON):
            raise bad_request(f"statusReason must be a string of at most {MAX_STATUS_REASON}")
        old = current.record["identity"] if current else {}
        capabilities = body.get("capabilities") or {}
        return {
            "status": status,
            "statusReason": reason,
            # Real hubs show the zero date until the status first changes.
            "statusUpdatedTime": now
            if old and old["status"] != status
            else old.get("statusUpdatedTime", twin.NEVER),
            "iotEdge": bool(capabilities.get("iotEdge", False)),
            "deviceScope": body.get("deviceScope"),
            "parentScopes": body.get("parentScopes") or [],
            "authentication": {"symmetricKey": keys_from(body)},
        }

    def _check_body_ids(self, body, device_id: str, module_id: str = "") -> dict:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        if body.get("deviceId") not in (None, device_id):
            raise bad_request("deviceId in the body does not match the URL")
        if module_id and body.get("moduleId") not in (None, module_id):
            raise bad_request("moduleId in the body does not match the URL")
        return body

    async def put_device(self, device_id: str, body, if_match: str | None) -> dict:
        check_id("deviceId", device_id)
        body = self._check_body_ids(body, device_id)
        now = twin.utcnow()
        current = self.devices.get(device_id)
        if if_match is None:
            if current is not None:
                raise HubError("DeviceAlreadyExists", f"A device with ID {device_id!r} exists")
            ident = Identity.new(device_id, "", self._device_fields(body, None, now), now)
            self.devices[device_id] = ident
            self._changed_membership()
        else:
            ident = self.device(device_id)
            if not etag_matches(if_match, twin.identity_etag(ident.record["identityEtag"])):
                raise HubError("PreconditionFailed", "The device's etag does not match If-Match")
            ident.record["identity"] = self._device_fields(body, ident, now)
            ident.record["identityEtag"] += 1
            if ident.record["identity"]["status"] == "disabled":
                self._disconnect_device(ident, "device disabled")
        await self._save(ident)
        return ident.rest_identity()

    def list_devices(self, top: int | None) -> list[dict]:
        devices = list(self.devices.values())[: top if top is not None else None]
        return [d.rest_identity() for d in devices]

    async def delete_device(self, device_id: str, if_match: str | None) -> None:
        ident = self.device(device_id)
        if not etag_matches(if_match, twin.identity_etag(ident.record["identityEtag"])):
            raise HubError("PreconditionFailed", "The device's etag does not match If-Match")
        self._disconnect_device(ident, "device deleted")
        del self.devices[device_id]
        self._changed_membership()
        waits = [self.store.delete(m.key) for m in ident.modules.values()]
        waits.append(self.store.delete(ident.key))
        await asyncio.gather(*waits)

    async def put_module(self, device_id: str, module_id: str, body, if_match: str | None):
        check_id("moduleId", module_id)
        body = self._check_body_ids(body, device_id, module_id)
        device = self.device(device_id)
        current = device.modules.get(module_id)
        managed_by = body.get("managedBy")
        if managed_by is not None and not isinstance(managed_by, str):
            raise bad_request("managedBy must be a string")
        if if_match is None:
            if current is not None:
                raise HubError(
                    "ModuleAlreadyExistsOnDevice",
                    f"A module with ID {module_id!r} exists on device {device_id!r}",
                )
            if len(device.modules) >= MAX_MODULES_PER_DEVICE:
                raise HubError(
                    "TooManyModulesOnDevice",
                    f"Device {device_id!r} already has {MAX_MODULES_PER_DEVICE} modules",
                )
            fields = {
                "managedBy": managed_by,
                "authentication": {"symmetricKey": keys_from(body)},
            }
            ident = Identity.new(device_id, module_id, fields, twin.utcnow())
            device.modules[module_id] = ident
            self._changed_membership()
        else:
            ident = self.identity(device_id, module_id)
            if not etag_matches(if_match, twin.identity_etag(ident.record["identityEtag"])):
                raise HubError("PreconditionFailed", "The module's etag does not match If-Match")
            ident.record["identity"] = {
                "managedBy": managed_by,
                "authentication": {"symmetricKey": keys_from(body)},
            }
            ident.record["identityEtag"] += 1
        await self._save(ident)
        return ident.rest_identity()

    async def delete_module(self, device_id: str, module_id: str, if_match: str | None) -> None:
        ident = self.identity(device_id, module_id)
        if not etag_matches(if_match, twin.identity_etag(ident.record["identityEtag"])):
            raise HubError("PreconditionFailed", "The module's etag does not match If-Match")
        if ident.connection is not None:
            ident.connection.close("module deleted")
        del self.devices[device_id].modules[module_id]
        self._changed_membership()
        await self.store.delete(ident.key)

    def _disconnect_device(self, device: Identity, reason: str) -> None:
        for ident in (device, *device.modules.values()):
            if ident.connection is not None:
                ident.connection.close(reason)

    # -- service side: twins ----------------------------------------------------------
    def get_twin(self, device_id: str, module_id: str = "") -> dict:
        ident = self.identity(device_id, module_id)
        return ident.rest_twin(self.devices[device_id] if module_id else None)

    async def write_twin(self, device_id: str, module_id: str, body, if_match, *, replace: bool):
        """PATCH (merge, null deletes) or PUT (replace) of tags and desired properties."""
        ident = self.identity(device_id, module_id)
        if not isinstance(body, dict):
            raise bad_request("the twin must be a JSON object")
        rec = ident.record
        if not etag_matches(if_match, twin.etag_of_counter(rec["twinEtag"])):
            raise HubError("PreconditionFailed", "The twin's etag does not match If-Match")
        tags = _twin_input(body.get("tags"), "tags")
        properties = _twin_input(body.get("properties"), "properties") or {}
        desired = _twin_input(properties.get("desired"), "properties.desired")
        if desired is not None:
            desired = twin.strip_readonly(desired)
        problems = []
        if tags is not None:
            problems += twin_rules.check_patch("tags", tags)
        if desired is not None:
            problems += twin_rules.check_patch("desired", desired)
        if problems:
            raise bad_request(str(twin_rules.TwinRuleError(problems)))

        now = twin.utcnow()
        new_tags, new_desired = rec["tags"], rec["desired"]
        if replace and tags is not None:
            new_tags = twin.without_nulls(tags)
        elif tags:
            new_tags = twin.merge_values(rec["tags"], tags)
        if desired is not None:
            write = twin.replace_section if replace else twin.patch_section
            new_desired = write(rec["desired"], desired, now, desired=True)
        problems = twin_rules.check_size("tags", new_tags)
        problems += twin_rules.check_size("desired", new_desired)
        if problems:
            raise bad_request(str(twin_rules.TwinRuleError(problems)))

        notification = None
        if new_desired is not rec["desired"]:
            if replace:  # the device learns the whole new document, removals as nulls
                gone = set(twin.values(rec["desired"])) - set(desired)
                notification = {**dict.fromkeys(gone), **desired}
            else:
                notification = desired
            notification = {**notification, "$version": new_desired["$version"]}
        rec["tags"], rec["desired"] = new_tags, new_desired
        rec["twinVersion"] += 1
        rec["twinEtag"] += 1
        await self._save(ident)
        if notification is not None and ident.connection is not None:
            ident.connection.desired_changed(notification)
        return self.get_twin(device_id, module_id)

    # -- service side: query, statistics, methods -------------------------------------
    def _keys(self, collection: str) -> list:
        keys = self._sorted.get(collection)
        if keys is None:
            if collection == "devices":
                keys = sorted(self.devices)
            else:
                keys = sorted((m.device_id, m.module_id) for m in self.all_modules())
            self._sorted[collection] = keys
        return keys

    def query(self, text, continuation: str | None, max_items: str | None):
        if not isinstance(text, str):
            raise bad_request('the body must be {"query": "SELECT ..."}')
        try:
            query = parse_query(text)
        except QueryError as e:
            raise bad_request(f"Invalid query: {e}") from e
        try:
            size = int(max_items) if max_items else DEFAULT_PAGE_SIZE
        except ValueError as e:
            raise bad_request("x-ms-max-item-count must be an integer") from e
        size = max(1, min(size, MAX_PAGE_SIZE))
        start, sent = 0, 0
        keys = self._keys(query.collection)
        if continuation:
            try:
                state = json_input.loads(base64.b64decode(continuation))
                after, sent = _resume_point(state, query.collection)
            except (ValueError, binascii.Error) as e:
                raise bad_request("x-ms-continuation is not a token this hub issued") from e
            start = bisect.bisect_right(keys, after)
        limit = size if query.top is None else min(size, query.top - sent)
        items, index = [], start
        while index < len(keys) and len(items) < limit:
            key = keys[index]
            index += 1
            if query.collection == "devices":
                doc = self.devices[key].rest_twin()
            else:
                doc = self.devices[key[0]].modules[key[1]].rest_twin(self.devices[key[0]])
            if query.matches(doc):
                items.append(query.project(doc))
        sent += len(items)
        more = index < len(keys) and (query.top is None or sent < query.top)
        token = None
        if more:
            after = keys[index - 1]
            token = base64.b64encode(json.dumps({"after": after, "sent": sent}).encode()).decode()
        return items, token, "twin" if query.select_all else "raw"

    def registry_statistics(self) -> dict:
        enabled = sum(d.record["identity"]["status"] == "enabled" for d in self.devices.values())
        return {
            "totalDeviceCount": len(self.devices),
            "enabledDeviceCount": enabled,
            "disabledDeviceCount": len(self.devices) - enabled,
        }

    def service_statistics(self) -> dict:
        return {"connectedDeviceCount": sum(d.connected for d in self.devices.values())}

    async def invoke_method(self, device_id: str, module_id: str, body) -> dict:
        ident = self.identity(device_id, module_id)
        if not isinstance(body, dict) or not isinstance(body.get("methodName"), str):
            raise bad_request("a method call needs a methodName")
        name = body["methodName"]
        if not name or "/" in name or len(name) > 128:
            raise bad_request("methodName must be 1 to 128 characters without '/'")
        try:
            response_timeout = int(_default(body.get("responseTimeoutInSeconds"), 30))
            connect_timeout = int(_default(body.get("connectTimeoutInSeconds"), 0))
        except (TypeError, ValueError) as e:
            raise bad_request("method timeouts must be whole seconds") from e
        if not 5 <= response_timeout <= 300 or not 0 <= connect_timeout <= 300:
            raise bad_request(
                "responseTimeoutInSeconds must be 5-300, connectTimeoutInSeconds 0-300"
            )
        payload = json.dumps(body.get("payload")).encode()
        if len(payload) > MAX_METHOD_PAYLOAD:
            raise HubError(
                "RequestEntityTooLarge",
                f"method payload is {len(payload)} bytes; the limit is {MAX_METHOD_PAYLOAD}",
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_timeout
        while not (ident.connection and ident.connection.subscribed(METHODS_FILTER)):
            if loop.time() >= deadline:
                raise HubError("DeviceNotOnline", f"{ident.label} is not online for methods")
            await asyncio.sleep(0.05)
        rid = format(next(self._rids), "x")
        answer = loop.create_future()
        self._methods[rid] = (answer, ident)
        try:
            ident.connection.method_request(name, rid, payload)
            status, result = await asyncio.wait_for(answer, response_timeout)
        except TimeoutError as e:
            raise HubError(
                "GatewayTimeout", f"{ident.label} did not answer {name!r} in {response_timeout}s"
            ) from e
        finally:
            self._methods.pop(rid, None)
        return {"status": status, "payload": result}

    # -- device side --------------------------------------------------------------------
    def authenticate(self, client_id: str, username: str, password: str):
        """(identity, token expiry) a CONNECT may act as, or None (CONNACK 5)."""
        device_id, _, module_id = client_id.partition("/")
        device = self.devices.get(device_id)
        ident = device.modules.get(module_id) if (device and module_id) else device
        if ident is None or device.record["identity"]["status"] != "enabled":
            return None
        audience = username.split("/?", 1)[0]
        host, _, who = audience.partition("/")
        if who != client_id or host.lower() not in (
            self.host.lower(),
            f"{self.host}:{self.https_port}".lower(),
        ):
            return None
        try:
            token = sas.parse(password)
        except sas.TokenError:
            return None
        path = f"/devices/{device_id}" + (f"/modules/{module_id}" if module_id else "")
        if not sas.host_matches(token, self.host, self.https_port) or sas.expired(token):
            return None
        if token.policy is None:  # signed with the identity's own key: its exact path
            if token.path != path:
                return None
            keys = ident.keys
        elif DEVICE_CONNECT in POLICY_PERMISSIONS.get(token.policy, ()):
            # A policy token's resource is a prefix of the identity's, matched by segment.
            if not (path + "/").startswith(token.path.rstrip("/") + "/"):
                return None
            keys = self.policies.get(token.policy, ())
        else:
            return None
        return (ident, token.expiry) if sas.signed_by(token, keys) else None

    def attach(self, ident: Identity, connection) -> None:
        old = ident.connection
        ident.connection = connection
        if old is not None and old is not connection:
            old.close("a new connection for the same identity")
        now = twin.utcnow()
        ident.record["connectionStateUpdatedTime"] = now
        ident.record["lastActivityTime"] = now
        self._touched.add(ident)

    def detach(self, ident: Identity, connection) -> None:
        if ident.connection is connection:
            ident.connection = None
            ident.record["connectionStateUpdatedTime"] = twin.utcnow()
            self._touched.add(ident)

    def touch(self, ident: Identity) -> None:
        ident.record["lastActivityTime"] = twin.utcnow()
        self._touched.add(ident)

    def device_twin(self, ident: Identity) -> bytes:
        """The twin as a device reads it: desired and reported with ``$version``; no tags,
        no ``$metadata`` (those are for the service side)."""
        rec = ident.record
        doc = {
            name: {k: v for k, v in rec[name].items() if k != twin.META}
            for name in ("desired", "reported")
        }
        return json.dumps(doc).encode()

    def patch_reported(self, ident: Identity, patch) -> tuple[int, asyncio.Future]:
        """Apply a reported patch now; the future resolves once it is on disk."""
        if not isinstance(patch, dict):
            raise bad_request("reported properties must be a JSON object")
        problems = twin_rules.check_patch("reported", patch)
        if problems:
            raise bad_request(str(twin_rules.TwinRuleError(problems)))
        rec = ident.record
        reported = twin.patch_section(rec["reported"], patch, twin.utcnow(), desired=False)
        problems = twin_rules.check_size("reported", reported)
        if problems:
            raise bad_request(str(twin_rules.TwinRuleError(problems)))
        rec["reported"] = reported
        rec["twinVersion"] += 1
        rec["twinEtag"] += 1
        rec["lastActivityTime"] = reported["$metadata"]["$lastUpdated"]
        return reported["$version"], self.store.put(ident.key, rec)

    def save_session(self, ident: Identity, filters: list[str]) -> asyncio.Future:
        ident.record["session"] = filters
        return self.store.put(ident.key, ident.record)

    def method_response(self, ident: Identity, rid: str, status: int, body: bytes) -> None:
        waiting = self._methods.get(rid)
        if waiting is None or waiting[1] is not ident or waiting[0].done():
            return  # late, unknown, or another identity's request: ignore it
        try:
            payload = json_input.loads(body) if body.strip() else None
        except ValueError:
            payload = body.decode("utf-8", "replace")
        waiting[0].set_result((status, payload))

    def record_telemetry(self, ident: Identity, topic: str, payload: bytes) -> None:
        buffer = self.telemetry
        if len(buffer) == buffer.maxlen:  # the append drops the oldest
            self.telemetry_bytes -= len(buffer[0][2]) + len(buffer[0][3])
        buffer.append((ident.label, twin.utcnow(), topic, payload))
        self.telemetry_bytes += len(topic) + len(payload)
        while self.telemetry_bytes > TELEMETRY_BUFFER_BYTES:
            _label, _time, old_topic, old_payload = buffer.popleft()
            self.telemetry_bytes -= len(old_topic) + len(old_payload)
        self.touch(ident)
