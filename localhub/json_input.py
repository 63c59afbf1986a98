"""JSON from clients, decoded only when it nests no deeper than MAX_DEPTH.

Python's json module recurses once per level (in C) and raises RecursionError at about a
thousand, which would escape every handler that expects ValueError; and what it does
decode, the hub walks recursively again (twin rules, merges, dumps). So nesting is
counted first, without recursion: strings removed, then brackets summed.
"""

import json
import re
from itertools import accumulate

# Far above IoT Hub's own twin limit (10 levels, checked by twin_rules) and far below the
# interpreter's recursion limit.
MAX_DEPTH = 128

# A string literal, or an unterminated one up to the end of the text: the closing quote
# is optional so that a match never fails and scanning stays linear on any input.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class TooDeep(ValueError):
    pass


def nesting(text: str) -> int:
    """How deep ``[`` and ``{`` nest in ``text`` outside strings (for valid JSON, exact)."""
    brackets = _BRACKET.findall(_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def loads(data: bytes | bytearray | str):
    """``json.loads``, raising TooDeep (a ValueError) for input nested over MAX_DEPTH."""
    if isinstance(data, bytes | bytearray):
        text = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads does
    else:
        text = data
    # Most documents have fewer brackets in all than the limit: nothing to count.
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting(text) > MAX_DEPTH:
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    return json.loads(text)
