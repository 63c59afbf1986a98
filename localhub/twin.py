"""Twin sections as IoT Hub keeps them: values, ``$metadata`` and ``$version``.

A desired or reported section is stored in the shape the REST API returns it, so reading
a twin is a copy. Every object node of ``$metadata`` carries ``$lastUpdated`` (desired
also ``$lastUpdatedVersion``), mirroring the values tree key by key.
"""

import base64
import copy
from datetime import UTC, datetime

META, VERSION = "$metadata", "$version"
NEVER = "0001-01-01T00:00:00Z"


def utcnow() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def new_section(now: str, *, desired: bool) -> dict:
    meta = {"$lastUpdated": now}
    if desired:
        meta["$lastUpdatedVersion"] = 1
    return {META: meta, VERSION: 1}


def values(section: dict) -> dict:
    """The section without its ``$`` bookkeeping (what a device or a form works with)."""
    return {k: v for k, v in section.items() if k not in (META, VERSION)}


def strip_readonly(patch: dict) -> dict:
    """Drop ``$metadata``/``$version``, which a twin read back and sent again carries."""
    return {k: v for k, v in patch.items() if k not in (META, VERSION)}


def _stamp(meta: dict, now: str, version: int | None) -> dict:
    meta["$lastUpdated"] = now
    if version is not None:
        meta["$lastUpdatedVersion"] = version
    return meta


def _merge(target: dict, meta: dict, patch: dict, now: str, version: int | None) -> None:
    for key, new in patch.items():
        if new is None:
            target.pop(key, None)
            meta.pop(key, None)
        elif isinstance(new, dict):
            node = target.get(key)
            node_meta = meta.get(key)
            if not isinstance(node, dict):
                node = target[key] = {}
                node_meta = None
            if node_meta is None:
                node_meta = meta[key] = {}
            _merge(node, node_meta, new, now, version)
            _stamp(node_meta, now, version)
        else:
            target[key] = copy.deepcopy(new) if isinstance(new, list) else new
            meta[key] = _stamp({}, now, version)


def patch_section(section: dict, patch: dict, now: str, *, desired: bool) -> int:
    """Merge ``patch`` into ``section`` (null deletes); return the new ``$version``."""
    version = section[VERSION] + 1
    section[VERSION] = version
    meta = section[META]
    _merge(section, meta, patch, now, version if desired else None)
    _stamp(meta, now, version if desired else None)
    return version


def replace_section(section: dict, new_values: dict, now: str, *, desired: bool) -> int:
    version = section[VERSION] + 1
    section.clear()
    section[VERSION] = version
    section[META] = _stamp({}, now, version if desired else None)
    _merge(section, section[META], new_values, now, version if desired else None)
    return version


def merge_tags(tags: dict, patch: dict) -> None:
    for key, new in patch.items():
        if new is None:
            tags.pop(key, None)
        elif isinstance(new, dict) and isinstance(tags.get(key), dict):
            merge_tags(tags[key], new)
        else:
            tags[key] = _without_nulls(new)


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return copy.deepcopy(value)
    return value


def replace_tags(new_tags: dict) -> dict:
    return _without_nulls(new_tags)


def etag_of_counter(counter: int) -> str:
    """Twin etags look like base64 of a big-endian int64 on the real hub."""
    return base64.b64encode(counter.to_bytes(8, "big")).decode()


def identity_etag(counter: int) -> str:
    """Identity etags look like base64 of a decimal string on the real hub."""
    return base64.b64encode(str(counter).encode()).decode()
