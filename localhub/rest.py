"""The service side: IoT Hub's HTTPS REST API (api-version 2021-04-12).

Routing is done on the raw path because ids arrive fully percent-encoded (a device id may
hold '/', '#' or '?'), and one SAS check guards every request.
"""

import json
import logging
from urllib.parse import unquote

from aiohttp import web

from . import json_input, sas
from .admission import Admission
from .errors import HubError, bad_request
from .hub import (
    POLICY_PERMISSIONS,
    REGISTRY_READ,
    REGISTRY_WRITE,
    SERVICE_CONNECT,
    Hub,
)

log = logging.getLogger("localhub.rest")

API_VERSION = "2021-04-12"
MAX_BODY = 1024 * 1024


def _json(data, status: int = 200, headers=None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _authorize(hub: Hub, request: web.Request, needed: tuple[str, ...]) -> None:
    header = request.headers.get("Authorization", "")
    try:
        token = sas.parse(header)
    except sas.TokenError as e:
        raise HubError("IotHubUnauthorizedAccess", f"Unauthorized: {e}") from e
    if token.policy is None or token.policy not in hub.policies:
        raise HubError("IotHubUnauthorizedAccess", "Unauthorized: unknown shared access policy")
    if not sas.host_matches(token, hub.host, hub.https_port) or token.path not in ("", "/"):
        raise HubError("IotHubUnauthorizedAccess", "Unauthorized: the token is for another hub")
    if sas.expired(token):
        raise HubError("IotHubUnauthorizedAccess", "Unauthorized: the token has expired")
    if not sas.signed_by(token, hub.policies[token.policy]):
        raise HubError("IotHubUnauthorizedAccess", "Unauthorized: the signature does not match")
    granted = POLICY_PERMISSIONS.get(token.policy, set())
    if not granted.intersection(needed):
        raise HubError(
            "IotHubUnauthorizedAccess",
            f"Unauthorized: policy {token.policy!r} lacks {' or '.join(needed)} permission",
        )


async def _body(request: web.Request):
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        raise HubError("RequestEntityTooLarge", f"request bodies are limited to {MAX_BODY}") from e
    if not raw:
        return None
    try:
        return json_input.loads(raw)
    except ValueError as e:
        raise bad_request(f"The request body is not valid JSON: {e}") from e


def _route(method: str, parts: list[str]):
    """(permissions, handler name, ids) for a request, or None."""
    n = len(parts)
    head = parts[0] if parts else ""
    if head == "devices":
        if n == 1 and method == "GET":
            return (REGISTRY_READ,), "list_devices", ()
        if n == 2 and parts[1] == "query" and method == "POST":
            return (REGISTRY_READ, SERVICE_CONNECT), "query", ()
        if n == 2:
            need = REGISTRY_READ if method == "GET" else REGISTRY_WRITE
            return (need,), f"{method.lower()}_device", (parts[1],)
        if n == 3 and parts[2] == "modules" and method == "GET":
            return (REGISTRY_READ,), "list_modules", (parts[1],)
        if n == 4 and parts[2] == "modules":
            need = REGISTRY_READ if method == "GET" else REGISTRY_WRITE
            return (need,), f"{method.lower()}_module", (parts[1], parts[3])
    elif head == "twins":
        if n == 2:
            return (SERVICE_CONNECT,), f"{method.lower()}_twin", (parts[1], "")
        if n == 3 and parts[2] == "methods" and method == "POST":
            return (SERVICE_CONNECT,), "method", (parts[1], "")
        if n == 4 and parts[2] == "modules":
            return (SERVICE_CONNECT,), f"{method.lower()}_twin", (parts[1], parts[3])
        if n == 5 and parts[2] == "modules" and parts[4] == "methods" and method == "POST":
            return (SERVICE_CONNECT,), "method", (parts[1], parts[3])
    elif head == "statistics" and n == 2 and method == "GET":
        if parts[1] == "devices":
            return (REGISTRY_READ,), "registry_statistics", ()
        if parts[1] == "service":
            return (SERVICE_CONNECT,), "service_statistics", ()
    return None


class RestApi:
    def __init__(self, hub: Hub, admission: Admission | None = None):
        self.hub = hub
        self.admission = admission  # counts a connection until its first authorized request

    async def handle(self, request: web.Request) -> web.Response:
        path = request.raw_path.split("?", 1)[0]
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        try:
            route = _route(request.method, parts)
            if route is None:
                raise HubError("MethodNotAllowed", f"{request.method} {path} is not an IoT Hub API")
            needed, name, ids = route
            _authorize(self.hub, request, needed)
            if self.admission is not None:
                self.admission.release(request.protocol)
            handler = getattr(self, name, None)
            if handler is None:
                raise HubError("MethodNotAllowed", f"{request.method} is not allowed on {path}")
            return await handler(request, *ids)
        except HubError as e:
            return self._error(e)
        except Exception:
            # A bug of ours must not become aiohttp's bare text page: answer as IoT Hub does.
            log.exception("error handling %s %s", request.method, path)
            return self._error(HubError("ServerError", "localhub failed on this request"))

    @staticmethod
    def _error(e: HubError) -> web.Response:
        return web.Response(
            body=e.rest_body(),
            status=e.status,
            content_type="application/json",
            charset="utf-8",
            headers={"iothub-errorcode": e.name},
        )

    # -- identities -----------------------------------------------------------------------
    async def list_devices(self, request):
        top = request.query.get("top")
        try:
            top = int(top) if top else None
            if top is not None and top < 0:
                raise ValueError
        except ValueError as e:
            raise bad_request("top must be a non-negative integer") from e
        return _json(self.hub.list_devices(top))

    async def get_device(self, request, device_id):
        return _json(self.hub.device(device_id).rest_identity())

    async def put_device(self, request, device_id):
        body = await _body(request)
        doc = await self.hub.put_device(device_id, body, request.headers.get("If-Match"))
        return _json(doc, headers={"ETag": f'"{doc["etag"]}"'})

    async def delete_device(self, request, device_id):
        await self.hub.delete_device(device_id, request.headers.get("If-Match"))
        return web.Response(status=204)

    async def list_modules(self, request, device_id):
        device = self.hub.device(device_id)
        return _json([m.rest_identity() for m in device.modules.values()])

    async def get_module(self, request, device_id, module_id):
        return _json(self.hub.identity(device_id, module_id).rest_identity())

    async def put_module(self, request, device_id, module_id):
        body = await _body(request)
        if_match = request.headers.get("If-Match")
        doc = await self.hub.put_module(device_id, module_id, body, if_match)
        return _json(doc, headers={"ETag": f'"{doc["etag"]}"'})

    async def delete_module(self, request, device_id, module_id):
        await self.hub.delete_module(device_id, module_id, request.headers.get("If-Match"))
        return web.Response(status=204)

    # -- twins ------------------------------------------------------------------------------
    async def get_twin(self, request, device_id, module_id):
        doc = self.hub.get_twin(device_id, module_id)
        return _json(doc, headers={"ETag": f'"{doc["etag"]}"'})

    async def _write_twin(self, request, device_id, module_id, *, replace):
        body = await _body(request)
        if_match = request.headers.get("If-Match")
        doc = await self.hub.write_twin(device_id, module_id, body, if_match, replace=replace)
        return _json(doc, headers={"ETag": f'"{doc["etag"]}"'})

    async def patch_twin(self, request, device_id, module_id):
        return await self._write_twin(request, device_id, module_id, replace=False)

    async def put_twin(self, request, device_id, module_id):
        return await self._write_twin(request, device_id, module_id, replace=True)

    # -- query, statistics, methods ------------------------------------------------------------
    async def query(self, request):
        body = await _body(request)
        text = body.get("query") if isinstance(body, dict) else None
        items, token, item_type = self.hub.query(
            text,
            request.headers.get("x-ms-continuation"),
            request.headers.get("x-ms-max-item-count"),
        )
        headers = {"x-ms-item-type": item_type}
        if token:
            headers["x-ms-continuation"] = token
        return _json(items, headers=headers)

    async def registry_statistics(self, request):
        return _json(self.hub.registry_statistics())

    async def service_statistics(self, request):
        return _json(self.hub.service_statistics())

    async def method(self, request, device_id, module_id):
        body = await _body(request)
        return _json(await self.hub.invoke_method(device_id, module_id, body))


def make_app(hub: Hub, admission: Admission | None = None) -> web.Application:
    api = RestApi(hub, admission)
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", api.handle)
    return app
