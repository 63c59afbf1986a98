"""Twin sections as IoT Hub keeps them: values, ``$metadata`` and ``$version``.

A desired or reported section is stored in the shape the REST API returns it, so reading
a twin is a copy. Every object node of ``$metadata`` carries ``$lastUpdated`` (desired
also ``$lastUpdatedVersion``), mirroring the values tree key by key.
"""

import base64
import copy
import time

META, VERSION = "$metadata", "$version"
NEVER = "0001-01-01T00:00:00Z"


_second_cache = (0, "")


def utcnow() -> str:
    """UTC now as IoT Hub writes it in metadata: ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    global _second_cache
    now = time.time()
    second = int(now)
    if _second_cache[0] != second:  # formatting is the costly part; reuse it per second
        _second_cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_cache[1]}.{int((now - second) * 1000):03d}Z"


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


def _merged(target: dict, meta: dict, patch: dict, now: str, version: int | None):
    """Copy-on-write merge: returns new (values, metadata) dicts along the patched paths
    and leaves the originals untouched, so a patch that fails a later check costs nothing
    to abandon and a stored section is never changed in place."""
    target, meta = dict(target), dict(meta)
    for key, new in patch.items():
        if new is None:
            target.pop(key, None)
            meta.pop(key, None)
        elif isinstance(new, dict):
            node, node_meta = target.get(key), meta.get(key)
            if not isinstance(node, dict):
                node, node_meta = {}, {}
            elif not isinstance(node_meta, dict):
                node_meta = {}
            target[key], node_meta = _merged(node, node_meta, new, now, version)
            meta[key] = _stamp(node_meta, now, version)
        else:
            target[key] = copy.deepcopy(new) if isinstance(new, list) else new
            meta[key] = _stamp({}, now, version)
    return target, meta


def patch_section(section: dict, patch: dict, now: str, *, desired: bool) -> dict:
    """A new section: ``patch`` merged into ``section`` (null deletes), ``$version`` + 1."""
    version = section[VERSION] + 1
    stamp_version = version if desired else None
    merged, meta = _merged(section, section[META], patch, now, stamp_version)
    merged[META] = _stamp(meta, now, stamp_version)
    merged[VERSION] = version
    return merged


def replace_section(section: dict, new_values: dict, now: str, *, desired: bool) -> dict:
    """A new section holding exactly ``new_values``, ``$version`` + 1."""
    version = section[VERSION] + 1
    stamp_version = version if desired else None
    merged, meta = _merged({}, {}, new_values, now, stamp_version)
    merged[META] = _stamp(meta, now, stamp_version)
    merged[VERSION] = version
    return merged


def merge_values(doc: dict, patch: dict) -> dict:
    """A new dict: ``patch`` applied to ``doc`` as IoT Hub applies a PATCH (null deletes,
    objects merge), originals untouched. Tags are kept this way; the dashboard uses it to
    show what a patch will make of a twin."""
    doc = dict(doc)
    for key, new in patch.items():
        if new is None:
            doc.pop(key, None)
        elif isinstance(new, dict) and isinstance(doc.get(key), dict):
            doc[key] = merge_values(doc[key], new)
        else:
            doc[key] = without_nulls(new)
    return doc


def without_nulls(value):
    """What a document written with nulls in it holds once the hub has applied it."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return copy.deepcopy(value)
    return value


EPOCH_SHIFT = 32


def next_etag(previous: int, epoch: int) -> int:
    """The etag number a write after ``previous`` gets while the hub runs in ``epoch``
    (one per start, see Hub). The start's number is in the high bits, so a number a write
    got but never committed before a crash is not given to other content after it; the
    first start is epoch 0, whose numbers are the real hub's 1, 2, 3..."""
    return max(previous + 1, (epoch << EPOCH_SHIFT) + 1)


def etag_of_counter(counter: int) -> str:
    """Twin etags look like base64 of a big-endian int64 on the real hub."""
    return base64.b64encode(counter.to_bytes(8, "big")).decode()


def identity_etag(counter: int) -> str:
    """Identity etags look like base64 of a decimal string on the real hub."""
    return base64.b64encode(str(counter).encode()).decode()
