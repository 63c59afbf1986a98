import json
import math

import pytest
from support import doc_of_size, nested

from localhub.twin_rules import (
    MAX_DEPTH,
    MAX_INT,
    MAX_KEY_BYTES,
    MAX_STRING_BYTES,
    MIN_INT,
    SECTION_LIMITS,
    TwinRuleError,
    Violation,
    check_patch,
    check_size,
    section_size,
    validate,
)


def test_valid_patch_has_no_violations():
    patch = {
        "telemetryConfig": {"sendFrequency": "5m", "enabled": True, "ratio": 0.5},
        "batteryLevel": 55,
        "removed": None,
        "ünïcödé-Key_1": "ok",
    }
    assert check_patch("desired", patch) == []
    validate("desired", patch)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("a.b", "key contains '.'"),
        ("$version", "key contains '$'"),
        ("cost$", "key contains '$'"),
        ("a b", "key contains a space"),
        ("bell\x07", "key contains control character U+0007"),
        ("del\x7f", "key contains control character U+007F"),
        ("c1\x85", "key contains control character U+0085"),
    ],
)
def test_key_with_forbidden_character_is_rejected(key, message):
    assert check_patch("tags", {"outer": {key: 1}}) == [Violation(f"outer.{key}", message)]


def test_key_with_several_problems_reports_each():
    messages = [v.message for v in check_patch("tags", {"$a. b\x00": 1})]
    assert messages == [
        "key contains '.'",
        "key contains '$'",
        "key contains a space",
        "key contains control character U+0000",
    ]


def test_empty_key_is_rejected():
    assert check_patch("reported", {"a": {"": 1}}) == [Violation('a.""', "key is empty")]
    assert check_patch("reported", {"": 1}) == [Violation('""', "key is empty")]


def test_key_of_1024_bytes_is_accepted():
    assert check_patch("desired", {"k" * MAX_KEY_BYTES: 1}) == []
    # 256 four-byte characters are 1024 bytes too.
    assert check_patch("desired", {"😀" * 256: 1}) == []


def test_key_over_1024_bytes_is_rejected():
    key = "é" * 513  # 1026 bytes in 513 characters
    assert check_patch("desired", {key: 1}) == [
        Violation(key, "key is 1026 bytes; the limit is 1024")
    ]
    assert check_patch("desired", {"k" * 1025: 1})[0].message == (
        "key is 1025 bytes; the limit is 1024"
    )


def test_case_and_other_punctuation_are_allowed_in_keys():
    assert check_patch("tags", {"Key": 1, "key": 2, "a-b_c:d@e#f": 3, "数字": 4}) == []


def test_non_string_key_is_rejected():
    assert check_patch("tags", {1: "x"}) == [Violation("1", "key must be a string, not int")]


@pytest.mark.parametrize("value", [MIN_INT, MAX_INT, 0, -1])
def test_integers_within_bounds_are_accepted(value):
    assert MIN_INT == -4503599627370496
    assert MAX_INT == 4503599627370495
    assert check_patch("reported", {"n": value}) == []


@pytest.mark.parametrize("value", [MIN_INT - 1, MAX_INT + 1, 2**60])
def test_integers_outside_bounds_are_rejected(value):
    assert check_patch("reported", {"n": value}) == [
        Violation("n", f"integer {value} is outside [-4503599627370496, 4503599627370495]")
    ]


def test_huge_integer_message_does_not_fail():
    (violation,) = check_patch("reported", {"n": 10**5000})
    assert violation.message.startswith("integer of ")


def test_bool_is_not_treated_as_integer():
    assert check_patch("reported", {"t": True, "f": False}) == []
    assert section_size({"t": True}) == 1 + 4


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_float_is_rejected(value):
    (violation,) = check_patch("desired", {"x": value})
    assert violation.path == "x"
    assert violation.message.endswith("is not finite")


def test_large_finite_float_is_accepted():
    assert check_patch("desired", {"x": 1e300, "y": -2.5e-300}) == []


def test_string_of_4096_bytes_is_accepted():
    assert check_patch("desired", {"s": "x" * MAX_STRING_BYTES}) == []
    assert check_patch("desired", {"s": "€" * 1365 + "x"}) == []  # 4095 + 1 bytes


def test_string_over_4096_bytes_is_rejected():
    assert check_patch("desired", {"s": "x" * 4097}) == [
        Violation("s", "string is 4097 bytes; the limit is 4096")
    ]
    # 1366 characters, but 4098 bytes of UTF-8.
    assert check_patch("desired", {"s": "€" * 1366})[0].message == (
        "string is 4098 bytes; the limit is 4096"
    )


def test_depth_of_10_nested_objects_is_accepted():
    # The docs' own valid example: "one" ... "ten" each hold an object, with a leaf in "ten".
    assert MAX_DEPTH == 10
    assert check_patch("tags", nested(10)) == []


def test_depth_of_11_nested_objects_is_rejected():
    path = ".".join(f"k{i}" for i in range(1, 12))
    assert check_patch("tags", nested(11)) == [
        Violation(path, "object is nested deeper than 10 levels")
    ]


def test_array_counts_as_a_level_of_depth():
    path = ".".join(f"k{i}" for i in range(1, 11)) + ".property"
    assert check_patch("tags", nested(10, leaf=[1])) == [
        Violation(path, "array is nested deeper than 10 levels")
    ]
    assert check_patch("tags", nested(9, leaf=[1])) == []
    # An object inside an array is one level below the array.
    assert check_patch("tags", nested(8, leaf=[{"a": 1}])) == []
    assert check_patch("tags", nested(9, leaf=[{"a": 1}]))[0].message == (
        "object is nested deeper than 10 levels"
    )


def test_deep_patch_is_reported_once_without_recursing_to_the_bottom():
    assert len(check_patch("desired", nested(5000))) == 1


def test_arrays_of_values_and_objects_are_allowed():
    patch = {"list": [1, 2.5, "three", True, {"four": 4}, [5, [6]]], "empty": []}
    assert check_patch("reported", patch) == []


def test_array_items_are_checked_with_indexed_paths():
    patch = {"a": [1, {"ok": 1, "b.c": 2}, 2**60]}
    assert check_patch("reported", patch) == [
        Violation("a[1].b.c", "key contains '.'"),
        Violation("a[2]", f"integer {2**60} is outside [{MIN_INT}, {MAX_INT}]"),
    ]


def test_null_deletes_in_a_patch_but_not_in_a_replacement():
    patch = {"gone": None, "nested": {"gone": None}}
    assert check_patch("desired", patch) == []
    assert [v.path for v in check_patch("desired", patch, allow_null=False)] == [
        "gone",
        "nested.gone",
    ]


def test_null_inside_arrays_is_rejected():
    assert check_patch("desired", {"a": [1, None, {"b": None}]}) == [
        Violation("a[1]", "null is not allowed inside arrays"),
        Violation("a[2].b", "null is not allowed inside arrays"),
    ]


def test_lone_surrogates_in_keys_and_strings_are_rejected_at_any_depth():
    # What json.loads makes of "\ud800" escapes; orjson and UTF-8 cannot hold them.
    patch = json.loads(
        '{"a": "\\ud800", "k\\udfff": 1, "n": {"list": ["ok", {"deep": "x\\udc00"}]}}'
    )
    lone = "contains a lone surrogate (U+{:04X}), which is not valid Unicode"
    assert check_patch("reported", patch) == [
        Violation("a", "string " + lone.format(0xD800)),
        Violation("k\\udfff", "key " + lone.format(0xDFFF)),  # the path is printable
        Violation("n.list[1].deep", "string " + lone.format(0xDC00)),
    ]


def test_paired_surrogates_and_other_unicode_are_accepted():
    patch = json.loads('{"emoji": "\\ud83d\\ude00", "\\u00e9t\\u00e9": "caf\\u00e9"}')
    assert check_patch("desired", patch) == []


def test_unsupported_python_types_are_rejected():
    (violation,) = check_patch("tags", {"t": (1, 2)})
    assert violation == Violation(
        "t", "unsupported value type tuple; use boolean, number, string, object or array"
    )


@pytest.mark.parametrize(
    ("patch", "kind"),
    [([1], "array"), ("x", "string"), (None, "null"), (3, "number"), (True, "boolean")],
)
def test_non_object_patch_is_rejected(patch, kind):
    assert check_patch("desired", patch) == [
        Violation("desired", f"must be a JSON object, not {kind}")
    ]


def test_unknown_section_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown twin section"):
        check_patch("properties", {})


def test_all_violations_are_reported_with_paths_in_document_order():
    patch = {
        "good": 1,
        "bad key": 1,
        "nested": {"$meta": {"x": math.inf, "ok": "fine"}, "s": "x" * 4097},
        "n": MAX_INT + 1,
    }
    assert [(v.path, v.message) for v in check_patch("reported", patch)] == [
        ("bad key", "key contains a space"),
        ("nested.$meta", "key contains '$'"),
        ("nested.$meta.x", "number inf is not finite"),
        ("nested.s", "string is 4097 bytes; the limit is 4096"),
        ("n", f"integer {MAX_INT + 1} is outside [{MIN_INT}, {MAX_INT}]"),
    ]


def test_validate_raises_with_every_violation():
    with pytest.raises(TwinRuleError) as caught:
        validate("tags", {"a.b": 1, "c": {"d e": 2}})
    assert caught.value.violations == [
        Violation("a.b", "key contains '.'"),
        Violation("c.d e", "key contains a space"),
    ]
    assert str(caught.value) == "a.b: key contains '.'; c.d e: key contains a space"
    assert isinstance(caught.value, ValueError)


def test_section_size_counts_keys_and_values_as_documented():
    doc = {
        "a": "hé",  # 1 + 3
        "b": 1,  # 1 + 8
        "c": 2.5,  # 1 + 8
        "d": True,  # 1 + 4
        "e": None,  # 1 + 0
        "f": {"g": [1, "xy", False]},  # 1 + 1 + (8 + 2 + 4)
        "$version": 7,
        "$metadata": {"$lastUpdated": "2024-01-01T00:00:00.000Z"},
    }
    assert section_size(doc) == 4 + 9 + 9 + 5 + 1 + 16


def test_section_size_leaves_out_control_characters_in_strings():
    assert section_size({"a": "x\ny\x85"}) == 1 + 2


@pytest.mark.parametrize("section", sorted(SECTION_LIMITS))
def test_section_at_or_just_under_its_limit_is_accepted(section):
    limit = SECTION_LIMITS[section]
    for size in (limit - 1, limit):
        doc = doc_of_size(size)
        assert section_size(doc) == size
        assert check_size(section, doc) == []
        assert check_patch(section, doc) == []


@pytest.mark.parametrize("section", sorted(SECTION_LIMITS))
def test_section_just_over_its_limit_is_rejected(section):
    limit = SECTION_LIMITS[section]
    doc = doc_of_size(limit + 1)
    assert check_size(section, doc) == [
        Violation(section, f"{section} is {limit + 1} bytes; the limit is {limit}")
    ]


def test_section_limits_match_the_docs():
    assert SECTION_LIMITS == {"tags": 8192, "desired": 32768, "reported": 32768}
