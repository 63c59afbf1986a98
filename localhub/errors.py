"""Errors as IoT Hub reports them: HTTP status, reason phrase and numeric error code.

The real hub nests its error JSON inside a ``Message`` string; the SDKs ignore the body,
but people reading logs and the dashboard do not, so we keep the hub's shape.
"""

import json
import uuid
from datetime import UTC, datetime

# name: (HTTP status, numeric IoT Hub error code)
CODES = {
    "ArgumentInvalid": (400, 400004),
    "IotHubUnauthorizedAccess": (401, 401002),
    "DeviceNotFound": (404, 404001),
    "ModuleNotFound": (404, 404010),
    "DeviceNotOnline": (404, 404103),
    "MethodNotAllowed": (405, 405001),
    "DeviceAlreadyExists": (409, 409001),
    "ModuleAlreadyExistsOnDevice": (409, 409301),
    "PreconditionFailed": (412, 412001),
    "RequestEntityTooLarge": (413, 413002),
    "TooManyModulesOnDevice": (413, 413003),
    "ServerError": (500, 500001),
    "GatewayTimeout": (504, 504101),
}


class HubError(Exception):
    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name
        self.message = message
        self.status, self.code = CODES[name]

    def detail(self) -> dict:
        return {
            "errorCode": self.code,
            "trackingId": uuid.uuid4().hex,
            "message": self.message,
            "info": {},
            "timestampUtc": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }

    def rest_body(self) -> bytes:
        return json.dumps({"Message": json.dumps(self.detail()), "ExceptionMessage": ""}).encode()

    def mqtt_body(self) -> bytes:
        return json.dumps(self.detail()).encode()


def bad_request(message: str) -> HubError:
    return HubError("ArgumentInvalid", message)
