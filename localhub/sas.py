"""Shared access signatures, as both SDKs build them and IoT Hub checks them.

A token is ``SharedAccessSignature sr=..&sig=..&se=..[&skn=..]``. The signature is an
HMAC-SHA256 over ``sr`` exactly as sent, a newline and the expiry; neither SDK lowercases
``sr``, so we sign the raw value rather than a normalised one.
"""

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

PREFIX = "SharedAccessSignature "
# IoT Hub's parser (as in Microsoft's C# SDKs) reads se into a .NET DateTime, which ends at
# 9999-12-31T23:59:59Z; a later expiry cannot be represented, so the token is refused. Checked
# before any arithmetic: se=10**309 overflows a float.
MAX_EXPIRY = 253402300799


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Token:
    sr_raw: str
    resource: str  # unquoted sr: "host[:port][/devices/d[/modules/m]]"
    signature: bytes
    expiry: int
    policy: str | None

    @property
    def host(self) -> str:
        return self.resource.split("/", 1)[0]

    @property
    def path(self) -> str:
        _host, sep, rest = self.resource.partition("/")
        return sep + rest


def parse(text: str) -> Token:
    if not text or not text.startswith(PREFIX):
        raise TokenError("not a SharedAccessSignature")
    fields = {}
    for pair in text[len(PREFIX) :].split("&"):
        name, sep, value = pair.partition("=")
        if not sep or name in fields:
            raise TokenError("malformed SharedAccessSignature")
        fields[name] = value
    try:
        sr, sig, se = fields["sr"], fields["sig"], fields["se"]
        expiry = int(se)
        signature = base64.b64decode(unquote(sig), validate=True)
    except (KeyError, ValueError) as e:
        raise TokenError("SharedAccessSignature needs sr, sig and a numeric se") from e
    if expiry > MAX_EXPIRY:
        raise TokenError("SharedAccessSignature se is after the year 9999")
    skn = fields.get("skn")
    return Token(sr, unquote(sr), signature, expiry, unquote(skn) if skn else None)


def signature(key_b64: str, sr_raw: str, expiry: int) -> bytes:
    message = f"{sr_raw}\n{expiry}".encode()
    return hmac.digest(base64.b64decode(key_b64), message, hashlib.sha256)


def signed_by(token: Token, keys) -> bool:
    """True when one of the base64 keys made this signature (constant-time compare)."""
    for key in keys:
        if key and hmac.compare_digest(signature(key, token.sr_raw, token.expiry), token.signature):
            return True
    return False


def expired(token: Token, now: float | None = None) -> bool:
    return token.expiry <= (time.time() if now is None else now)


def host_matches(token: Token, host: str, port: int | None = None) -> bool:
    got = token.host.lower()
    return got == host.lower() or (port is not None and got == f"{host}:{port}".lower())


def generate(
    resource: str,
    key_b64: str,
    policy: str | None = None,
    ttl: int = 3600,
    expiry: int | None = None,
) -> str:
    """A token as the device SDK makes one (everything quoted); used by tools and benches.

    It expires ``ttl`` seconds from now, or at ``expiry`` (seconds since the epoch) if given.
    """
    sr = quote(resource, safe="")
    expiry = int(time.time() + ttl) if expiry is None else expiry
    sig = quote(base64.b64encode(signature(key_b64, sr, expiry)).decode(), safe="")
    token = f"{PREFIX}sr={sr}&sig={sig}&se={expiry}"
    return f"{token}&skn={quote(policy, safe='')}" if policy else token
