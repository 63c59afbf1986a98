"""URL converters: ids from a URL are IoT Hub ids before any view sees them.

An id that breaks the hub's rules (its character set, 1 to 128 characters, not dots only)
matches no route, so it is a 404 page and never reaches a hub URL: there, urllib3 would
collapse a ".." segment and "module .." would be the device itself.
"""

from django.urls import NoReverseMatch, reverse

from localhub.identities import ID_CHARS, ID_PATTERN


class HubIdConverter:
    # Every route puts a "/" after an id, which the lookahead relies on.
    regex = rf"(?!\.+/)[{ID_CHARS}]{{1,128}}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


def identity_url(device_id, module_id="") -> str:
    """The page of an identity, or "" for an id no page can have (a hub query may return
    anything: a projection can put a number or an object where an id would be)."""
    ids = [device_id, module_id] if module_id else [device_id]
    if not all(isinstance(i, str) and ID_PATTERN.fullmatch(i) for i in ids):
        return ""
    try:
        return reverse("devices:module-detail" if module_id else "devices:device-detail", args=ids)
    except NoReverseMatch:
        return ""
