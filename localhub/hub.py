"""The hub's state and every operation on it, shared by the HTTPS and MQTT endpoints.

State lives in memory (one asyncio loop owns it, so a check and the change it guards run
without interruption). A write is checked and serialised against the latest state, queued
for the store, and made visible (to readers, in its answer, to the device) only once it is
on disk, in commit order: nothing a client saw can be lost in a crash. Writes that come
while one is queued build on it, so If-Match sees every earlier write; when a commit
fails, it and everything queued after it are dropped and answered with an error.
"""

import asyncio
import base64
import binascii
import bisect
import itertools
import json
import logging
from collections import deque

from . import json_input, sas, twin, twin_rules
from .errors import HubError, bad_request
from .identities import MAX_MODULES_PER_DEVICE, MAX_STATUS_REASON, Identity, check_id, keys_from
from .query import QueryError, parse_query
from .store import Key, Store, encode

log = logging.getLogger("localhub")

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


def _encode(record: dict) -> bytes:
    try:
        return encode(record)
    except ValueError as e:  # before anything changed: the write is simply refused
        raise bad_request(f"the change cannot be stored: {e}") from e


async def _stored(*saves: asyncio.Future) -> None:
    """Wait for commits; a failed one is the hub's error, and changed nothing."""
    results = await asyncio.gather(*saves, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        log.error("a write was not stored: %r", failed[0])
        raise HubError("ServerError", "the hub could not store the change; nothing changed")


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
        # Creations and deletions queued but not yet committed, newest per key: the
        # identity that will exist (None: none will), tagged with the change it came from.
        self._members: dict[Key, tuple[object, Identity | None]] = {}
        rows = store.load()
        # One epoch per start, stored before serving (see twin.next_etag). A data dir
        # from before epochs has counters that a crash may have reissued: not epoch 0.
        saved = store.setting("etagEpoch")
        self.etag_epoch = int(saved) + 1 if saved is not None else int(bool(rows))
        store.set_setting("etagEpoch", str(self.etag_epoch))
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

    # -- writes: staged, then visible once committed --------------------------------------
    def _latest(self, device_id: str, module_id: str = "") -> Identity | None:
        """The identity writes see, with every queued creation and deletion applied."""
        staged = self._members.get((device_id, module_id))
        if staged is not None:
            return staged[1]
        device = self.devices.get(device_id)
        if device is None or not module_id:
            return device
        return device.modules.get(module_id)

    def _writable(self, device_id: str, module_id: str = "") -> Identity:
        ident = self._latest(device_id, module_id)
        if ident is None:
            if module_id and self._latest(device_id) is not None:
                raise HubError(
                    "ModuleNotFound", f"Module {module_id!r} was not found on device {device_id!r}"
                )
            raise HubError("DeviceNotFound", f"Device {device_id!r} was not found")
        return ident

    def _latest_module_ids(self, device: Identity) -> list[str]:
        ids = dict.fromkeys(device.modules)
        for (device_id, module_id), (_, ident) in self._members.items():
            if device_id == device.device_id and module_id:
                if ident is None:
                    ids.pop(module_id, None)
                else:
                    ids[module_id] = None
        return list(ids)

    def _stage(self, ident: Identity, record: dict, then=None) -> asyncio.Future:
        """Queue ``record`` as the identity's next state; once it is on disk it becomes
        ``ident.record`` and ``then()`` runs (in commit order: notify the device there)."""
        data = _encode(record)
        ident.staged = record
        self._touched.discard(ident)  # its connection times go with this record

        def settled(error):
            if error is not None:
                ident.staged = None  # what was staged after it failed with it
                self._touched.add(ident)
                return
            ident.record = record
            if ident.staged is record:
                ident.staged = None
            if then is not None:
                then()

        return self.store.put(ident.key, data, settled)

    def _stage_member(self, key: Key, ident: Identity | None, then) -> asyncio.Future:
        """Queue the creation (``ident``) or deletion (None) of ``key``; ``then()`` changes
        the membership readers see, once it is on disk."""
        data = None if ident is None else _encode(ident.record)
        change = object()
        self._members[key] = (change, ident)

        def settled(error):
            if error is not None or self._members.get(key, (None,))[0] is change:
                self._members.pop(key, None)
            if error is None:
                then()
                self._changed_membership()

        if data is None:
            return self.store.delete(key, settled)
        return self.store.put(key, data, settled)

    def _next_etag(self, previous: int) -> int:
        return twin.next_etag(previous, self.etag_epoch)

    def _with_identity(self, rec: dict, fields: dict) -> dict:
        return {**rec, "identity": fields, "identityEtag": self._next_etag(rec["identityEtag"])}

    async def save_connection_times(self) -> None:
        alive = [i for i in self._touched if self._latest(i.device_id, i.module_id) is i]
        self._touched.clear()
        await asyncio.gather(*(self._stage(i, dict(i.latest)) for i in alive))

    # -- service side: identities -----------------------------------------------------
    def _device_fields(self, body: dict, current: dict | None, now: str):
        status = body.get("status") or "enabled"
        if status not in ("enabled", "disabled"):
            raise bad_request("status must be 'enabled' or 'disabled'")
        reason = body.get("statusReason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_STATUS_REASON):
            raise bad_request(f"statusReason must be a string of at most {MAX_STATUS_REASON}")
        old = current["identity"] if current else {}
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
        if if_match is None:
            if self._latest(device_id) is not None:
                raise HubError("DeviceAlreadyExists", f"A device with ID {device_id!r} exists")
            ident = Identity.new(device_id, "", self._device_fields(body, None, now), now)
            record = ident.record

            def created():
                self.devices[device_id] = ident

            saved = self._stage_member(ident.key, ident, created)
        else:
            ident = self._writable(device_id)
            rec = ident.latest
            if not etag_matches(if_match, twin.identity_etag(rec["identityEtag"])):
                raise HubError("PreconditionFailed", "The device's etag does not match If-Match")
            fields = self._device_fields(body, rec, now)
            record = self._with_identity(rec, fields)

            def updated():
                if fields["status"] == "disabled":
                    self._disconnect_device(ident, "device disabled")

            saved = self._stage(ident, record, updated)
        await _stored(saved)
        return ident.rest_identity(record)

    def list_devices(self, top: int | None) -> list[dict]:
        devices = list(self.devices.values())[: top if top is not None else None]
        return [d.rest_identity() for d in devices]

    async def delete_device(self, device_id: str, if_match: str | None) -> None:
        ident = self._writable(device_id)
        if not etag_matches(if_match, twin.identity_etag(ident.latest["identityEtag"])):
            raise HubError("PreconditionFailed", "The device's etag does not match If-Match")

        def deleted():
            if self.devices.get(device_id) is ident:
                self._disconnect_device(ident, "device deleted")
                del self.devices[device_id]

        modules = [(device_id, m) for m in self._latest_module_ids(ident)]
        waits = [self._stage_member(key, None, lambda: None) for key in modules]
        waits.append(self._stage_member(ident.key, None, deleted))
        await _stored(*waits)

    async def put_module(self, device_id: str, module_id: str, body, if_match: str | None):
        check_id("moduleId", module_id)
        body = self._check_body_ids(body, device_id, module_id)
        device = self._writable(device_id)
        current = self._latest(device_id, module_id)
        managed_by = body.get("managedBy")
        if managed_by is not None and not isinstance(managed_by, str):
            raise bad_request("managedBy must be a string")
        if if_match is None:
            if current is not None:
                raise HubError(
                    "ModuleAlreadyExistsOnDevice",
                    f"A module with ID {module_id!r} exists on device {device_id!r}",
                )
            if len(self._latest_module_ids(device)) >= MAX_MODULES_PER_DEVICE:
                raise HubError(
                    "TooManyModulesOnDevice",
                    f"Device {device_id!r} already has {MAX_MODULES_PER_DEVICE} modules",
                )
            fields = {
                "managedBy": managed_by,
                "authentication": {"symmetricKey": keys_from(body)},
            }
            ident = Identity.new(device_id, module_id, fields, twin.utcnow())
            record = ident.record

            def created():
                device.modules[module_id] = ident

            saved = self._stage_member(ident.key, ident, created)
        else:
            ident = self._writable(device_id, module_id)
            rec = ident.latest
            if not etag_matches(if_match, twin.identity_etag(rec["identityEtag"])):
                raise HubError("PreconditionFailed", "The module's etag does not match If-Match")
            fields = {
                "managedBy": managed_by,
                "authentication": {"symmetricKey": keys_from(body)},
            }
            record = self._with_identity(rec, fields)
            saved = self._stage(ident, record)
        await _stored(saved)
        return ident.rest_identity(record)

    async def delete_module(self, device_id: str, module_id: str, if_match: str | None) -> None:
        ident = self._writable(device_id, module_id)
        if not etag_matches(if_match, twin.identity_etag(ident.latest["identityEtag"])):
            raise HubError("PreconditionFailed", "The module's etag does not match If-Match")

        def deleted():
            device = self.devices.get(device_id)
            if device is not None and device.modules.get(module_id) is ident:
                if ident.connection is not None:
                    ident.connection.close("module deleted")
                del device.modules[module_id]

        await _stored(self._stage_member(ident.key, None, deleted))

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
        ident = self._writable(device_id, module_id)
        owner = self._writable(device_id) if module_id else None  # whose status it shows
        if not isinstance(body, dict):
            raise bad_request("the twin must be a JSON object")
        rec = ident.latest
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
        record = {
            **rec,
            "tags": new_tags,
            "desired": new_desired,
            "twinVersion": rec["twinVersion"] + 1,
            "twinEtag": self._next_etag(rec["twinEtag"]),
        }

        def notify():
            if notification is not None and ident.connection is not None:
                ident.connection.desired_changed(notification)

        await _stored(self._stage(ident, record, notify))
        return ident.rest_twin(owner, record)

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
        ident.stamp(connectionStateUpdatedTime=now, lastActivityTime=now)
        self._touched.add(ident)

    def detach(self, ident: Identity, connection) -> None:
        if ident.connection is connection:
            ident.connection = None
            ident.stamp(connectionStateUpdatedTime=twin.utcnow())
            self._touched.add(ident)

    def touch(self, ident: Identity) -> None:
        ident.stamp(lastActivityTime=twin.utcnow())
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

    def _still_there(self, ident: Identity) -> None:
        """Refuse a device's write to an identity whose deletion is queued: staged after
        it, the write would bring the identity back."""
        if self._latest(ident.device_id, ident.module_id) is not ident:
            raise HubError("DeviceNotFound", f"{ident.label} is being deleted")

    def patch_reported(self, ident: Identity, patch) -> tuple[int, asyncio.Future]:
        """Queue a reported patch: (the ``$version`` it makes, a future that resolves once
        it is on disk, when the twin shows it)."""
        self._still_there(ident)
        if not isinstance(patch, dict):
            raise bad_request("reported properties must be a JSON object")
        problems = twin_rules.check_patch("reported", patch)
        if problems:
            raise bad_request(str(twin_rules.TwinRuleError(problems)))
        rec = ident.latest
        reported = twin.patch_section(rec["reported"], patch, twin.utcnow(), desired=False)
        problems = twin_rules.check_size("reported", reported)
        if problems:
            raise bad_request(str(twin_rules.TwinRuleError(problems)))
        record = {
            **rec,
            "reported": reported,
            "twinVersion": rec["twinVersion"] + 1,
            "twinEtag": self._next_etag(rec["twinEtag"]),
            "lastActivityTime": reported["$metadata"]["$lastUpdated"],
        }
        return reported["$version"], self._stage(ident, record)

    def save_session(self, ident: Identity, filters: list[str]) -> asyncio.Future:
        self._still_there(ident)
        return self._stage(ident, {**ident.latest, "session": filters})

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
