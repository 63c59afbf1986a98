"""Twin document rules: key names, value types, depth and section sizes.

The rules come from Microsoft's IoT Hub developer guide, "Understand and use device twins",
sections "Tags and properties format" and "Device twin size"
(articles/iot-hub/iot-hub-devguide-device-twins.md), as summarised in section 5 ("Limits")
of the project's iothub-protocol.md notes. The older module-twin page (depth 5, 512-byte
strings, no arrays) is superseded and not followed.

- Keys: UTF-8, case-sensitive, at most 1 KB; no C0/C1 control characters, `.`, `$` or space.
- Values: boolean, number, string, object; arrays are also supported. Integers lie in
  [-4503599627370496, 4503599627370495]; strings are at most 4 KB of UTF-8.
- Keys and strings must be valid Unicode, so UTF-8 can hold them: a lone surrogate (JSON
  allows the escape "\ud800" on its own) is refused, as it cannot be stored or sent on.
- Depth: at most 10 (see MAX_DEPTH for how it is counted).
- Size: tags at most 8 KB, desired and reported at most 32 KB each, without `$version` and
  `$metadata` (see section_size).

Where the docs are silent, this module decides (and says so where it does): null is only
a property value in a patch (it deletes the key), never an array element; floats must be
finite, because JSON has no NaN or Infinity.

The module is pure and has no side effects on import; localhub calls it on every twin write
and the dashboard's twin form can call it to report every violation, per key, before sending.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_KEY_BYTES",
    "MAX_STRING_BYTES",
    "MIN_INT",
    "SECTION_LIMITS",
    "TwinRuleError",
    "Violation",
    "check_patch",
    "check_size",
    "section_size",
    "validate",
]

SECTION_LIMITS = {"tags": 8192, "desired": 32768, "reported": 32768}

# Depth counts nested containers below the section root, which is level 0. The docs call
# this "the maximum depth of JSON objects" and show, as valid, keys "one" ... "ten" each
# holding an object, with "property": "value" inside "ten". So ten nested objects are
# allowed, and the keys of the tenth may still hold strings, numbers or booleans (an
# eleventh key level); an eleventh nested object is rejected. The docs say nothing about
# arrays; like a generic JSON depth count, an array is a container and takes a level, so
# an object inside an array is one level deeper than the array.
MAX_DEPTH = 10
MAX_KEY_BYTES = 1024
MAX_STRING_BYTES = 4096
MIN_INT = -4503599627370496  # -(2**52)
MAX_INT = 4503599627370495  # 2**52 - 1

# Read-only entries at a section's root, not counted in its size.
_READ_ONLY = frozenset({"$metadata", "$version"})

_CONTROL = frozenset(chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)))
_KEY_FORBIDDEN = _CONTROL | {".", "$", " "}
# A key of at most this many characters cannot exceed MAX_KEY_BYTES (4 bytes per character).
_SHORT_KEY = MAX_KEY_BYTES // 4
_SHORT_STRING = MAX_STRING_BYTES // 4

# A str holds one of these only as a lone surrogate (a JSON decoder pairs valid ones).
_SURROGATE = re.compile("[\ud800-\udfff]")
_LONE_SURROGATE = "contains a lone surrogate (U+{:04X}), which is not valid Unicode"

_EMPTY_KEY = '""'  # how an empty key appears in a path
_NULL_IN_ARRAY = "null is not allowed inside arrays"
_NULL_NOT_ALLOWED = "null is not allowed here (null only deletes a key in a partial update)"


@dataclass(frozen=True)
class Violation:
    """One broken rule. `path` is "a.b" or "a[2].b"; section-wide problems use the section."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TwinRuleError(ValueError):
    """A twin update broke one or more rules; `violations` lists all of them."""

    def __init__(self, violations: list[Violation]):
        self.violations = list(violations)
        super().__init__("; ".join(str(v) for v in self.violations))


def check_patch(section: str, patch: object, *, allow_null: bool = True) -> list[Violation]:
    """Every rule `patch` breaks as an update of `section`, in document order.

    `allow_null` lets null stand as a property value (it deletes the key in a PATCH); pass
    False for a full replacement. Read-only `$version`/`$metadata` must be stripped by the
    caller: any key containing `$` is a violation here. Sizes are checked separately on the
    merged document (check_size).
    """
    if section not in SECTION_LIMITS:
        raise ValueError(f"unknown twin section {section!r}")
    if not isinstance(patch, dict):
        return [Violation(section, f"must be a JSON object, not {_json_type(patch)}")]
    out: list[Violation] = []
    _walk_object(patch, "", 0, None if allow_null else _NULL_NOT_ALLOWED, out)
    return out


def validate(section: str, patch: object, *, allow_null: bool = True) -> None:
    """Raise TwinRuleError listing every violation check_patch finds."""
    violations = check_patch(section, patch, allow_null=allow_null)
    if violations:
        raise TwinRuleError(violations)


def section_size(doc: dict) -> int:
    """Size of a section as IoT Hub counts it against SECTION_LIMITS.

    The sum, over every property, of its key's length plus its value's: strings (keys too)
    count their UTF-8 bytes without C0/C1 control characters, numbers 8, booleans 4, null 0;
    objects and arrays count what they contain. `$metadata` and `$version` at the root are
    left out.
    """
    total = 0
    for key, value in doc.items():
        if key not in _READ_ONLY:
            total += _string_size(key) + _value_size(value)
    return total


def check_size(section: str, doc: dict) -> list[Violation]:
    """A violation if the section `doc` (after merging an update) is over its limit."""
    limit = SECTION_LIMITS[section]
    size = section_size(doc)
    if size <= limit:
        return []
    return [Violation(section, f"{section} is {size} bytes; the limit is {limit}")]


def _walk_object(
    obj: dict, prefix: str, depth: int, null_rule: str | None, out: list[Violation]
) -> None:
    """Check the keys and values of `obj`, which sits at `depth` (the root is 0)."""
    for key, value in obj.items():
        if isinstance(key, str):
            surrogate = not key.isascii() and _SURROGATE.search(key)
            # A path is shown to people (and encoded as UTF-8): escape what UTF-8 cannot hold.
            name = key.encode("utf-8", "backslashreplace").decode() if surrogate else key
            name = name or _EMPTY_KEY
            path = f"{prefix}.{name}" if prefix else name
            if surrogate or not (0 < len(key) <= _SHORT_KEY and _KEY_FORBIDDEN.isdisjoint(key)):
                _check_key(key, path, out)
        else:
            path = f"{prefix}.{key!r}" if prefix else repr(key)
            out.append(Violation(path, f"key must be a string, not {type(key).__name__}"))
        _check_value(value, path, depth, null_rule, out)


def _walk_array(arr: list, path: str, depth: int, out: list[Violation]) -> None:
    for i, item in enumerate(arr):
        _check_value(item, f"{path}[{i}]", depth, _NULL_IN_ARRAY, out)


def _check_value(
    value: object, path: str, depth: int, null_rule: str | None, out: list[Violation]
) -> None:
    """Check `value`, held by a container at `depth`."""
    if isinstance(value, str):
        if not value.isascii() and (surrogate := _SURROGATE.search(value)):
            out.append(Violation(path, f"string {_LONE_SURROGATE.format(ord(surrogate[0]))}"))
        if len(value) > _SHORT_STRING:
            size = _utf8_len(value)
            if size > MAX_STRING_BYTES:
                out.append(
                    Violation(path, f"string is {size} bytes; the limit is {MAX_STRING_BYTES}")
                )
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            out.append(
                Violation(path, f"integer {_int_text(value)} is outside [{MIN_INT}, {MAX_INT}]")
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            out.append(Violation(path, f"number {value} is not finite"))
    elif isinstance(value, dict | list):
        if depth >= MAX_DEPTH:
            kind = "object" if isinstance(value, dict) else "array"
            out.append(Violation(path, f"{kind} is nested deeper than {MAX_DEPTH} levels"))
        elif isinstance(value, dict):
            # Below an array null_rule stays _NULL_IN_ARRAY: nothing merges inside arrays.
            _walk_object(value, path, depth + 1, null_rule, out)
        else:
            _walk_array(value, path, depth + 1, out)
    elif value is None:
        if null_rule is not None:
            out.append(Violation(path, null_rule))
    else:
        out.append(
            Violation(
                path,
                f"unsupported value type {type(value).__name__}; "
                "use boolean, number, string, object or array",
            )
        )


def _check_key(key: str, path: str, out: list[Violation]) -> None:
    """Slow path for a key that is empty, long, or holds a character worth a closer look."""
    if not key:
        out.append(Violation(path, "key is empty"))
        return
    if "." in key:
        out.append(Violation(path, "key contains '.'"))
    if "$" in key:
        out.append(Violation(path, "key contains '$'"))
    if " " in key:
        out.append(Violation(path, "key contains a space"))
    controls = _CONTROL.intersection(key)
    if controls:
        codes = ", ".join(f"U+{ord(c):04X}" for c in sorted(controls))
        noun = "character" if len(controls) == 1 else "characters"
        out.append(Violation(path, f"key contains control {noun} {codes}"))
    if surrogate := _SURROGATE.search(key):
        out.append(Violation(path, f"key {_LONE_SURROGATE.format(ord(surrogate[0]))}"))
    if len(key) > _SHORT_KEY:
        size = _utf8_len(key)
        if size > MAX_KEY_BYTES:
            out.append(Violation(path, f"key is {size} bytes; the limit is {MAX_KEY_BYTES}"))


def _value_size(value: object) -> int:
    if isinstance(value, str):
        return _string_size(value)
    if isinstance(value, bool):
        return 4
    if isinstance(value, int | float):
        return 8
    if isinstance(value, dict):
        return sum(_string_size(k) + _value_size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_value_size(v) for v in value)
    return 0  # null


def _string_size(s: str) -> int:
    """UTF-8 bytes of `s`, leaving out C0/C1 control characters (as the size rule says)."""
    if s.isascii() and s.isprintable():
        return len(s)
    size = _utf8_len(s)
    if not s.isprintable():
        # C0 and U+007F take one byte in UTF-8, the C1 range U+0080-U+009F two.
        size -= sum(1 if c < "\x80" else 2 for c in s if c in _CONTROL)
    return size


def _utf8_len(s: str) -> int:
    # surrogatepass: a lone surrogate (json.loads accepts "\ud800") counts 3 bytes, no crash.
    return len(s.encode("utf-8", "surrogatepass"))


def _int_text(value: int) -> str:
    # str() refuses ints above 4300 digits; an operator needs the order of magnitude only.
    return str(value) if value.bit_length() <= 256 else f"of {value.bit_length()} bits"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return type(value).__name__
