"""Same-origin websockets: a page's socket is accepted only from a page of this site.

Browsers send cookies with any websocket, whoever's page opens it, so the Origin header is
what tells this site's pages from others'. Channels' AllowedHostsOriginValidator compares
the host only (``http://localhost:9999`` passed for ``http://localhost:8000``); this
compares scheme, host and port with the site's own origin, as CsrfViewMiddleware does for
form posts: the request's Host (itself in ALLOWED_HOSTS) with http or https, or one of
CSRF_TRUSTED_ORIGINS (the public origins behind a proxy).
"""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalized(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin such as ``https://example.com:8443``; None if it is
    not an http(s) one."""
    try:
        parts = urlsplit(origin)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port


def site_origin(scope) -> str | None:
    """The origin of this site's pages, as a page served on this socket's Host sees it."""
    headers = dict(scope.get("headers", ()))
    host = headers.get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    secure = scope.get("scheme") == "wss"
    if settings.SECURE_PROXY_SSL_HEADER:  # as request.is_secure() reads it
        name, value = settings.SECURE_PROXY_SSL_HEADER
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        secure = headers.get(header, b"").decode("latin-1").split(",")[0].strip() == value
    return f"{'https' if secure else 'http'}://{host}"


def same_origin(scope) -> bool:
    origin = dict(scope.get("headers", ())).get(b"origin", b"").decode("latin-1")
    theirs = normalized(origin)
    if theirs is None:  # no Origin (not a browser page) or "null" (a sandboxed one)
        return False
    own = site_origin(scope)
    if own and normalized(own) == theirs:
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if normalized(trusted) == theirs:
            return True
        parts = urlsplit(trusted)  # "https://*.example.com": any subdomain, as CSRF allows
        wildcard = parts.scheme == theirs[0] and parts.netloc.startswith("*")
        if wildcard and is_same_domain(urlsplit(origin).netloc, parts.netloc.lstrip("*")):
            return True
    return False


class SameOriginValidator:
    """ASGI middleware: refuses (403) a websocket whose Origin is not this site's."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if not same_origin(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
