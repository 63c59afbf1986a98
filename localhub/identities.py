"""Device and module identities: their persisted record and their REST shapes."""

import base64
import binascii
import os
import re
import secrets

from . import twin
from .errors import bad_request

# IoT Hub identity rules: up to 128 ASCII characters from this set (the REST reference
# also allows ':' and ';'). An id of dots only cannot be addressed: URL clients (urllib3,
# browsers) collapse "." and ".." path segments, so "devices/D/modules/.." reaches device D.
ID_CHARS = r"A-Za-z0-9\-.+%_#*?!(),=@$':;"
ID_PATTERN = re.compile(rf"(?!\.+$)[{ID_CHARS}]{{1,128}}")
MAX_MODULES_PER_DEVICE = 50
MAX_STATUS_REASON = 128


def check_id(kind: str, value) -> str:
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise bad_request(
            f"{kind} {value!r} is invalid: use 1 to 128 ASCII letters, digits or "
            "- . + % _ # * ? ! ( ) , = @ $ ' : ; (not dots only)"
        )
    return value


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def check_key(value) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError) as e:
        raise bad_request("symmetric keys must be base64") from e
    if not 16 <= len(raw) <= 64:
        raise bad_request("symmetric keys must decode to between 16 and 64 bytes")
    return value


def keys_from(body: dict) -> dict:
    """The symmetricKey block for a create or update: supplied keys are validated,
    empty ones are generated (so an update with one key empty regenerates that key)."""
    auth = body.get("authentication") or {}
    if not isinstance(auth, dict):
        raise bad_request("authentication must be an object")
    kind = auth.get("type") or "sas"
    if kind != "sas":
        raise bad_request(f"authentication type {kind!r} is not supported by localhub; use 'sas'")
    supplied = auth.get("symmetricKey") or {}
    if not isinstance(supplied, dict):
        raise bad_request("authentication.symmetricKey must be an object")
    keys = {}
    for name in ("primaryKey", "secondaryKey"):
        value = supplied.get(name)
        keys[name] = check_key(value) if value else new_key()
    if keys["primaryKey"] == keys["secondaryKey"] and supplied.get("primaryKey"):
        raise bad_request("primary and secondary keys must differ")
    return keys


def generation_id() -> str:
    return str(secrets.randbelow(10**18 - 10**17) + 10**17)


class Identity:
    """One device or module: its persisted ``record`` plus live connection state.

    ``record`` is the committed state, the only one readers, answers and the device see;
    ``staged`` is the newest record queued for commit (built on ``record``), which later
    writes build on. A record is never changed in place once made, except for the
    connection times (``stamp``), so a committed and a staged record may share parts.
    """

    __slots__ = ("connection", "device_id", "module_id", "modules", "record", "staged")

    def __init__(self, device_id: str, module_id: str, record: dict):
        self.device_id = device_id
        self.module_id = module_id  # '' for a device
        self.record = record
        self.staged: dict | None = None
        self.connection = None  # the MQTT connection that owns this identity, if any
        self.modules: dict[str, Identity] = {}  # only for devices (committed ones)

    @property
    def latest(self) -> dict:
        """The record writes build on: the staged one if any, else the committed one."""
        return self.record if self.staged is None else self.staged

    def stamp(self, **times: str) -> None:
        """Set connection times, which are not acknowledged writes: on the committed
        record and on the staged one, so the commit of the latter does not undo them."""
        self.record.update(times)
        if self.staged is not None:
            self.staged.update(times)

    @property
    def key(self) -> tuple[str, str]:
        return (self.device_id, self.module_id)

    @property
    def label(self) -> str:
        return f"{self.device_id}/{self.module_id}" if self.module_id else self.device_id

    @property
    def keys(self) -> tuple[str, str]:
        sym = self.record["identity"]["authentication"]["symmetricKey"]
        return sym["primaryKey"], sym["secondaryKey"]

    @property
    def connected(self) -> bool:
        return self.connection is not None

    @classmethod
    def new(cls, device_id: str, module_id: str, fields: dict, now: str) -> "Identity":
        record = {
            "identity": fields,
            "identityEtag": 1,
            "generationId": generation_id(),
            "tags": {},
            "desired": twin.new_section(now, desired=True),
            "reported": twin.new_section(now, desired=False),
            "twinVersion": 1,
            "twinEtag": 1,
            "connectionStateUpdatedTime": twin.NEVER,
            "lastActivityTime": twin.NEVER,
            "session": [],
        }
        return cls(device_id, module_id, record)

    # -- REST shapes -------------------------------------------------------------------
    def _connection_fields(self) -> dict:
        rec = self.record  # live fields: as of now, whatever record an answer shows
        return {
            "connectionState": "Connected" if self.connected else "Disconnected",
            "connectionStateUpdatedTime": rec["connectionStateUpdatedTime"],
            "lastActivityTime": rec["lastActivityTime"],
            "cloudToDeviceMessageCount": 0,
        }

    @staticmethod
    def _authentication(rec: dict) -> dict:
        sym = rec["identity"]["authentication"]["symmetricKey"]
        primary, secondary = sym["primaryKey"], sym["secondaryKey"]
        return {
            "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary},
            "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
            "type": "sas",
        }

    def rest_identity(self, rec: dict | None = None) -> dict:
        """The identity as the REST API shows it: committed, or as of ``rec``, the record
        a write committed (the answer to that write)."""
        rec = self.record if rec is None else rec
        fields = rec["identity"]
        doc = {"deviceId": self.device_id}
        if self.module_id:
            doc["moduleId"] = self.module_id
            doc["managedBy"] = fields.get("managedBy")
        doc["generationId"] = rec["generationId"]
        doc["etag"] = twin.identity_etag(rec["identityEtag"])
        doc.update(self._connection_fields())
        if not self.module_id:
            doc["status"] = fields["status"]
            doc["statusReason"] = fields.get("statusReason")
            doc["statusUpdatedTime"] = fields["statusUpdatedTime"]
            doc["capabilities"] = {"iotEdge": fields.get("iotEdge", False)}
            doc["deviceScope"] = fields.get("deviceScope")
            doc["parentScopes"] = fields.get("parentScopes") or []
        doc["authentication"] = self._authentication(rec)
        return doc

    def rest_twin(self, device: "Identity | None" = None, rec: dict | None = None) -> dict:
        """The twin as the service API returns it (committed, or as of ``rec``, see
        rest_identity). Modules take status from their device."""
        rec = self.record if rec is None else rec
        owner = device.record["identity"] if device is not None else rec["identity"]
        doc = {"deviceId": self.device_id}
        if self.module_id:
            doc["moduleId"] = self.module_id
        doc["etag"] = twin.etag_of_counter(rec["twinEtag"])
        doc["deviceEtag"] = twin.identity_etag(rec["identityEtag"])
        doc["status"] = owner["status"]
        if owner.get("statusReason"):
            doc["statusReason"] = owner["statusReason"]
        doc["statusUpdateTime"] = owner["statusUpdatedTime"]
        conn = self._connection_fields()
        del conn["connectionStateUpdatedTime"]  # the twin leaves this one out
        doc.update(conn)
        doc["authenticationType"] = "sas"
        doc["x509Thumbprint"] = {"primaryThumbprint": None, "secondaryThumbprint": None}
        doc["modelId"] = ""
        doc["version"] = rec["twinVersion"]
        if not self.module_id:
            doc["capabilities"] = {"iotEdge": owner.get("iotEdge", False)}
        doc["tags"] = rec["tags"]
        doc["properties"] = {"desired": rec["desired"], "reported": rec["reported"]}
        return doc
