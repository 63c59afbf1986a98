"""Pure helpers for twin documents: comparing, diffing, merging, and the desired/reported delta.

Nothing here talks to the hub or to Django; the twin views, forms and templates build on it.
"""

import json
from dataclasses import dataclass, field

from localhub import twin

READ_ONLY = ("$metadata", "$version")
MISSING = object()


def values(section: dict | None) -> dict:
    """A desired or reported section without ``$metadata``/``$version``."""
    return {k: v for k, v in (section or {}).items() if k not in READ_ONLY}


def pretty(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def compact(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def same(a, b) -> bool:
    """Equal as JSON values: 1 equals 1.0, but true is not 1, and key order does not count."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def diff(old: dict, new: dict) -> dict:
    """The merge patch that turns ``old`` into ``new``: removed keys become null, changed
    values are sent whole, and objects present in both are compared key by key."""
    patch = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key, MISSING)
        if isinstance(before, dict) and isinstance(value, dict):
            inner = diff(before, value)
            if inner:
                patch[key] = inner
        elif before is MISSING or not same(before, value):
            patch[key] = value
    return patch


# Shared with localhub: the dashboard previews a patch exactly as the hub applies it.
merge = twin.merge_values
without_nulls = twin.without_nulls


def touched(patch: dict, prefix: str = "") -> list[str]:
    """The paths a patch writes or deletes ("a", "b.c")."""
    paths = []
    for key, value in patch.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value:
            paths += touched(value, path)
        else:
            paths.append(path)
    return paths


def overlap(patch: dict, base: dict, current: dict) -> list[str]:
    """Paths the operator's patch writes that someone else changed since ``base`` was read."""
    theirs = touched(diff(base, current))
    return [
        mine
        for mine in touched(patch)
        if any(t == mine or t.startswith(mine + ".") or mine.startswith(t + ".") for t in theirs)
    ]


# -- the delta between desired and reported -----------------------------------------------
def is_acknowledgement(reported) -> bool:
    """IoT Plug and Play acknowledges a writable property as {"value", "ac", "av"[, "ad"]}."""
    return isinstance(reported, dict) and "value" in reported and "ac" in reported


@dataclass(frozen=True)
class Difference:
    """A desired property the device has not (yet) reported with the same value."""

    path: str
    desired: object
    reported: object = MISSING
    ack: dict | None = None  # the Plug and Play acknowledgement, when the device sent one

    @property
    def missing(self) -> bool:
        return self.reported is MISSING

    @property
    def desired_json(self) -> str:
        return compact(self.desired)

    @property
    def reported_json(self) -> str:
        return "" if self.missing else compact(self.reported)


def delta(desired: dict, reported: dict, prefix: str = "") -> list[Difference]:
    """Desired properties whose reported value differs or is missing.

    A Plug and Play acknowledgement counts by its "value"; objects are compared key by key,
    so a reported object may carry more than was desired.
    """
    out = []
    for key, want in desired.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in reported:
            out.append(Difference(path, want))
            continue
        have = reported[key]
        ack = None
        if is_acknowledgement(have) and not is_acknowledgement(want):
            ack = {k: v for k, v in have.items() if k != "value"}
            have = have["value"]
        if same(want, have):
            continue
        if isinstance(want, dict) and isinstance(have, dict):
            out += delta(want, have, path)
        else:
            out.append(Difference(path, want, have, ack))
    return out


# -- what the twin partial shows ----------------------------------------------------------
@dataclass(frozen=True)
class Row:
    key: str
    desired: object = MISSING
    reported: object = MISSING
    differs: bool = False

    @property
    def desired_json(self) -> str:
        return "" if self.desired is MISSING else compact(self.desired)

    @property
    def reported_json(self) -> str:
        return "" if self.reported is MISSING else compact(self.reported)

    @property
    def in_desired(self) -> bool:
        return self.desired is not MISSING

    @property
    def in_reported(self) -> bool:
        return self.reported is not MISSING


@dataclass
class TwinSummary:
    """A hub twin document, read for display: sections, versions, delta, rows."""

    doc: dict
    tags: dict = field(init=False)
    desired: dict = field(init=False)
    reported: dict = field(init=False)
    delta: list[Difference] = field(init=False)

    def __post_init__(self):
        properties = self.doc.get("properties") or {}
        self.tags = self.doc.get("tags") or {}
        self.desired = values(properties.get("desired"))
        self.reported = values(properties.get("reported"))
        self.delta = delta(self.desired, self.reported)

    @property
    def properties(self) -> dict:
        return self.doc.get("properties") or {}

    @property
    def desired_version(self):
        return (self.properties.get("desired") or {}).get("$version")

    @property
    def reported_version(self):
        return (self.properties.get("reported") or {}).get("$version")

    @property
    def version(self):
        return self.doc.get("version")

    @property
    def etag(self) -> str:
        return self.doc.get("etag") or ""

    @property
    def rows(self) -> list[Row]:
        """Top-level keys, desired first, then the reported-only ones; delta rows flagged."""
        differing = {d.path.split(".", 1)[0] for d in self.delta}
        rows = [
            Row(key, value, self.reported.get(key, MISSING), key in differing)
            for key, value in self.desired.items()
        ]
        rows += [Row(k, reported=v) for k, v in self.reported.items() if k not in self.desired]
        return rows

    @property
    def whole_json(self) -> str:
        return pretty(self.doc)

    @property
    def tags_json(self) -> str:
        return pretty(self.tags)

    @property
    def desired_json(self) -> str:
        return pretty(self.desired)

    @property
    def reported_json(self) -> str:
        return pretty(self.reported)


# -- a write refused because the twin changed (412) ----------------------------------------
@dataclass
class SectionConflict:
    """One section the operator wanted to write, after someone else changed the twin."""

    name: str
    base: dict  # as the operator loaded it
    current: dict  # as the hub holds it now
    sent: dict  # what their edit sends: a patch, or for a replace the whole document
    replace: bool

    @property
    def mine(self) -> dict:
        """Their changes, as a patch against what they loaded."""
        return diff(self.base, self.sent) if self.replace else self.sent

    @property
    def result(self) -> dict:
        """The section if their edit is applied again now."""
        return without_nulls(self.sent) if self.replace else merge(self.current, self.sent)

    @property
    def others(self) -> list[str]:
        """Paths someone else changed since the operator loaded the twin."""
        return touched(diff(self.base, self.current))

    @property
    def both(self) -> list[str]:
        return overlap(self.mine, self.base, self.current)

    @property
    def lost(self) -> list[str]:
        """For a replace: paths someone else changed that re-applying would undo."""
        return [p for p in self.others if p not in self.both] if self.replace else []

    @property
    def mine_json(self) -> str:
        return pretty(self.mine)

    @property
    def current_json(self) -> str:
        return pretty(self.current)

    @property
    def result_json(self) -> str:
        return pretty(self.result)


def editable(twin_doc: dict) -> dict:
    """The sections an operator edits, as values: {"tags": ..., "desired": ...}."""
    summary = TwinSummary(twin_doc)
    return {"tags": summary.tags, "desired": summary.desired}


def still_based_on(bases: dict, current: dict) -> bool:
    """Whether the hub's twin ``current`` still holds every section an edit is based on, as
    the operator loaded it. The etag changes on every write, reported properties included,
    so a 412 alone does not mean that anything the operator edits changed."""
    now = editable(current)
    return all(same(base, now[name]) for name, base in bases.items())


def conflicts(bases: dict, sections: dict, current: dict, *, replace: bool) -> list:
    """A SectionConflict per section sent; ``current`` is the hub's twin document now."""
    now = editable(current)
    return [
        SectionConflict(name, bases[name], now[name], sent, replace)
        for name, sent in sections.items()
        if sent is not None
    ]
