"""The IoT Hub query language, evaluated over twin documents.

``POST /devices/query`` parses the query text once with :func:`parse_query`, then calls
:meth:`Query.matches` and :meth:`Query.project` for every twin in the collection. A page
can scan tens of thousands of twins, so parsing does the work up front: the WHERE clause
becomes nested closures and every property path a getter with its segments already split.

What localhub understands (keywords are case-insensitive)::

    SELECT [TOP n] * | path [AS alias] [, path [AS alias] ...]
    FROM devices | devices.modules
    [WHERE condition]

A condition is a comparison (``= != <> < > <= >=``), ``path IN [...]`` or ``path NIN [...]``
(round brackets work too), ``is_defined(path)``, or conditions joined with NOT, AND, OR and
parentheses; NOT binds tighter than AND, and AND tighter than OR, and parentheses and NOTs
nest at most MAX_NESTING deep. GROUP BY and aggregates such as COUNT() are rejected as
unsupported.

Semantics, from Microsoft's query-twins.md and iot-hub-devguide-query-language.md and the
Cosmos DB rules the language borrows:

- Only primitive values compare (string, number, boolean, null), and only with a value of
  the same type. Anything else, including an undefined path, is false, for ``!=`` as well.
  Booleans are not numbers; ints and floats compare numerically.
- NIN is true for a primitive value that is not in the list, and false when the path is
  undefined or holds an object or array.
- NOT is plain negation: ``NOT tags.x = 1`` matches twins without ``tags.x``.
- ``is_defined`` is true for any value, ``null`` included.
- Top-level twin fields match case-insensitively (``DeviceId`` finds ``deviceId``); keys
  below them, under tags and properties, are case-sensitive like the twin JSON itself.
"""

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

MAX_QUERY_LENGTH = 8192  # query-twins.md: "a maximum length of 8192 characters"
# Parentheses and NOTs inside one another. IoT Hub documents no such limit; localhub's keeps
# the recursive parser and the nested closures it builds far from the recursion limit.
MAX_NESTING = 100
COLLECTIONS = ("devices", "devices.modules")

# Top-level fields of a twin (the Twin model of azure-iot-hub, plus modelId, which the real
# hub also returns). Query names for these are mapped to this spelling when parsed, so that
# looking one up costs a single dict access even when the twin lacks it.
TWIN_FIELDS = {
    name.lower(): name
    for name in (
        "deviceId",
        "moduleId",
        "etag",
        "deviceEtag",
        "version",
        "status",
        "statusReason",
        "statusUpdateTime",
        "connectionState",
        "lastActivityTime",
        "cloudToDeviceMessageCount",
        "authenticationType",
        "x509Thumbprint",
        "capabilities",
        "deviceScope",
        "parentScopes",
        "modelId",
        "tags",
        "properties",
    )
}

Twin = dict[str, Any]
Test = Callable[[Twin], bool]
Getter = Callable[[Twin], Any]


class QueryError(ValueError):
    """A query localhub cannot run. The message is shown to the API user as is."""


def _always(twin: Twin) -> bool:
    return True


def _never(twin: Twin) -> bool:
    return False


@dataclass(frozen=True)
class Query:
    """A parsed query, ready to run against any number of twins."""

    collection: str  # "devices" or "devices.modules"
    top: int | None = None
    # (result key, getter) pairs in SELECT order; None stands for SELECT *.
    columns: tuple[tuple[str, Getter], ...] | None = field(default=None, repr=False)
    condition: Test = field(default=_always, repr=False)

    @property
    def select_all(self) -> bool:
        return self.columns is None

    def matches(self, twin: Twin) -> bool:
        return self.condition(twin)

    def project(self, twin: Twin) -> Twin:
        """The row for ``twin``: the twin itself for SELECT *, else a new dict.

        Projected objects (``SELECT tags``) are shared with the twin, not copied.
        """
        if self.columns is None:
            return twin
        row = {}
        for key, get in self.columns:
            value = get(twin)
            if value is not _MISSING:
                row[key] = value
        return row


def parse_query(text: str) -> Query:
    """Parse and compile ``text``, or raise QueryError saying what is wrong and where."""
    if not isinstance(text, str):
        raise QueryError("the query must be a string")
    if len(text) > MAX_QUERY_LENGTH:
        raise QueryError(
            f"the query is {len(text)} characters long; IoT Hub allows at most {MAX_QUERY_LENGTH}"
        )
    if not text.strip():
        raise QueryError("the query is empty")
    return _Parser(text).parse_query()


# --- Evaluation -------------------------------------------------------------------------

_MISSING = object()  # what a getter returns for an undefined path

# The query language's primitive types, by Python type. Anything else (dict, list,
# _MISSING) has no kind and so never compares.
_KIND = {str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
_TYPES_OF_KIND = {
    kind: frozenset(t for t, k in _KIND.items() if k == kind) for kind in set(_KIND.values())
}

_OPERATORS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<>": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}
# The operator that keeps the meaning when the two operands swap sides.
_MIRRORED = {"=": "=", "!=": "!=", "<>": "<>", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
# null only ever meets null, so null compared with null holds for the operators that allow
# equality.
_NULL_TRUE = frozenset(("=", "<=", ">="))


@dataclass(frozen=True)
class _Literal:
    value: Any


def _path_getter(first: str, rest: tuple[str, ...]) -> Getter:
    """A getter for the path ``first.rest...``; ``first`` is already canonical if known."""
    if TWIN_FIELDS.get(first.lower()) == first:
        return lambda twin: _walk(twin.get(first, _MISSING), rest)
    # A top-level field localhub does not know about: try the spelling given, then scan
    # for it in any case. The scan is slow, which is why known fields are canonicalized.
    folded = first.lower()

    def get(twin: Twin) -> Any:
        value = twin.get(first, _MISSING)
        if value is _MISSING:
            for key, candidate in twin.items():
                if len(key) == len(folded) and key.lower() == folded:
                    return _walk(candidate, rest)
        return _walk(value, rest)

    return get


def _walk(value: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(value, dict):
            return _MISSING
        value = value.get(key, _MISSING)
    return value


def _compare(op: str, left: Any, right: Any) -> bool:
    kind = _KIND.get(type(left))
    if kind is None or kind != _KIND.get(type(right)):
        return False
    if kind == "null":
        return op in _NULL_TRUE
    return _OPERATORS[op](left, right)


def _comparison(left: Getter | _Literal, op: str, right: Getter | _Literal) -> Test:
    if isinstance(left, _Literal) and not isinstance(right, _Literal):
        left, op, right = right, _MIRRORED[op], left
    if isinstance(left, _Literal):
        result = _compare(op, left.value, right.value)
        return _always if result else _never
    if isinstance(right, _Literal):
        return _compare_to_literal(left, op, right.value)
    return lambda twin: _compare(op, left(twin), right(twin))


def _compare_to_literal(get: Getter, op: str, value: Any) -> Test:
    # The common case, so the literal's type is settled here rather than per twin.
    kind = _KIND[type(value)]
    if kind == "null":
        return (lambda twin: get(twin) is None) if op in _NULL_TRUE else _never
    types = _TYPES_OF_KIND[kind]
    compare = _OPERATORS[op]

    def test(twin: Twin) -> bool:
        found = get(twin)
        return type(found) in types and compare(found, value)

    return test


def _membership(get: Getter, values: list[Any], negate: bool) -> Test:
    # One set per Python type, so that 1 finds 1.0 but True never finds 1.
    members: dict[type, set[Any]] = {t: set() for t in _KIND}
    for value in values:
        for t in _TYPES_OF_KIND[_KIND[type(value)]]:
            members[t].add(value)

    if negate:

        def test(twin: Twin) -> bool:
            found = get(twin)
            same_type = members.get(type(found))
            return same_type is not None and found not in same_type

    else:

        def test(twin: Twin) -> bool:
            found = get(twin)
            same_type = members.get(type(found))
            return same_type is not None and found in same_type

    return test


# A chain of ANDs or ORs becomes one flat test, not closures nested as deep as it is long.


def _all_of(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda twin: first(twin) and second(twin)
    return lambda twin: all(test(twin) for test in tests)


def _any_of(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda twin: first(twin) or second(twin)
    return lambda twin: any(test(twin) for test in tests)


def _negation(test: Test) -> Test:
    return lambda twin: not test(twin)


# --- Tokens -----------------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "name", "string", "number", "op", "punct" or "end"
    value: Any
    start: int
    end: int


_NAME_START = r"(?:[^\W\d]|\$)"  # a letter, "_" or "$" (as in $version)
_TOKEN = re.compile(
    rf"""
    (?P<space>\s+)
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?))
  | (?P<name>{_NAME_START}[\w$]*(?:\.{_NAME_START}[\w$]*)*)
  | (?P<op><=|>=|<>|!=|=|<|>)
  | (?P<punct>[()\[\],*])
    """,
    re.VERBOSE,
)
# Backslash escapes from the query language reference; '' inside '...' also works.
_ESCAPES = {"'": "'", '"': '"', "\\": "\\"}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")

_KEYWORDS = frozenset(
    ("select", "top", "from", "where", "and", "or", "not", "in", "nin", "as", "group", "by")
)
_CONSTANTS = {"true": True, "false": False, "null": None}


def _at(text: str, pos: int) -> str:
    """Where ``pos`` is, for an error message: 1-based, with a line once there are lines."""
    if "\n" not in text:
        return f"column {pos + 1}"
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return f"line {line}, column {column}"


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        if text[pos] in "'\"":
            value, end = _read_string(text, pos)
            tokens.append(_Token("string", value, pos, end))
            pos = end
            continue
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QueryError(f"unexpected character {text[pos]!r} at {_at(text, pos)}")
        kind, raw = match.lastgroup, match.group()
        if kind == "number":
            tokens.append(_Token(kind, _number(raw), pos, match.end()))
        elif kind != "space":
            tokens.append(_Token(kind, raw, pos, match.end()))
        pos = match.end()
    tokens.append(_Token("end", None, len(text), len(text)))
    return tokens


def _number(raw: str) -> int | float:
    if "x" in raw or "X" in raw:
        return int(raw, 16)
    if any(c in raw for c in ".eE"):
        return float(raw)
    try:
        return int(raw)
    except ValueError as e:  # over Python's 4300-digit limit for int()
        raise QueryError(f"the number {raw[:20]}... has too many digits") from e


def _read_string(text: str, start: int) -> tuple[str, int]:
    """The string literal opening at ``start``, and the position just after it."""
    quote = text[start]
    chars = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == quote:
            if not text.startswith(quote, pos + 1):
                return "".join(chars), pos + 1
            chars.append(quote)  # a doubled quote stands for one
            pos += 2
        elif char == "\\":
            escaped = text[pos + 1 : pos + 2]
            if escaped in _ESCAPES:
                chars.append(_ESCAPES[escaped])
                pos += 2
            elif escaped == "u" and _HEX4.fullmatch(text, pos + 2, pos + 6):
                chars.append(chr(int(text[pos + 2 : pos + 6], 16)))
                pos += 6
            else:
                raise QueryError(
                    f"invalid escape sequence at {_at(text, pos)}; "
                    "strings accept \\', \\\", \\\\ and \\uXXXX"
                )
        else:
            chars.append(char)
            pos += 1
    raise QueryError(f"unterminated string starting at {_at(text, start)}")


# --- Parser -----------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the token list, building a Query as it goes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.nesting = 0  # parentheses and NOTs open around the current token

    # Token helpers

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        if token.kind != "end":
            self.pos += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind == "name" and token.value.lower() in words

    def accept_keyword(self, word: str) -> bool:
        if self.at_keyword(word):
            self.pos += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.accept_keyword(word):
            raise self.unexpected(word.upper())

    def at_punct(self, char: str) -> bool:
        token = self.peek()
        return token.kind == "punct" and token.value == char

    def accept_punct(self, char: str) -> bool:
        if self.at_punct(char):
            self.pos += 1
            return True
        return False

    def expect_punct(self, char: str) -> None:
        if not self.accept_punct(char):
            raise self.unexpected(f"'{char}'")

    def at_path(self) -> bool:
        token = self.peek()
        return (
            token.kind == "name"
            and token.value.lower() not in _KEYWORDS
            and token.value.lower() not in _CONSTANTS
        )

    def at_call(self) -> bool:
        following = self.peek(1)
        return self.peek().kind == "name" and following.kind == "punct" and following.value == "("

    def where(self, token: _Token) -> str:
        return _at(self.text, token.start)

    def unexpected(self, expected: str) -> QueryError:
        token = self.peek()
        if token.kind == "end":
            found = "end of query"
        else:
            raw = self.text[token.start : token.end]
            found = repr(raw if len(raw) <= 40 else raw[:37] + "...")
        return QueryError(f"unexpected {found} at {self.where(token)}; expected {expected}")

    # Clauses

    def parse_query(self) -> Query:
        self.expect_keyword("select")
        top = self.parse_top()
        columns = self.parse_select_list()
        self.expect_keyword("from")
        collection = self.parse_collection()
        condition = self.parse_or() if self.accept_keyword("where") else _always
        if self.at_keyword("group"):
            raise QueryError(
                f"GROUP BY is not supported by localhub (at {self.where(self.peek())})"
            )
        if self.peek().kind != "end":
            raise self.unexpected("the end of the query")
        return Query(collection, top, columns, condition)

    def parse_top(self) -> int | None:
        if not self.accept_keyword("top"):
            return None
        token = self.peek()
        if token.kind != "number" or type(token.value) is not int or token.value < 0:
            raise self.unexpected("a whole number of 0 or more after TOP")
        self.pos += 1
        return token.value

    def parse_select_list(self) -> tuple[tuple[str, Getter], ...] | None:
        if self.accept_punct("*"):
            return None
        columns: list[tuple[str, Getter]] = []
        while True:
            start = self.peek()
            key, get = self.parse_column()
            if any(key == existing for existing, _ in columns):
                raise QueryError(
                    f"two columns are named {key!r} in SELECT (at {self.where(start)}); "
                    "rename one with AS"
                )
            columns.append((key, get))
            if not self.accept_punct(","):
                return tuple(columns)

    def parse_column(self) -> tuple[str, Getter]:
        token = self.peek()
        if self.at_call():
            raise QueryError(
                f"{token.value}() is not supported by localhub (at {self.where(token)}); "
                "SELECT takes * or property paths"
            )
        if not self.at_path():
            raise self.unexpected("* or a property path")
        self.pos += 1
        first, rest = self.split_path(token.value)
        get = _path_getter(first, rest)
        if not self.accept_keyword("as"):
            # Like Cosmos DB, an unaliased path is named after its last segment:
            # "SELECT p.metadata.sku" gives {"sku": ...} in the Cosmos DB docs.
            return (rest[-1] if rest else first), get
        alias = self.peek()
        if not self.at_path() or "." in alias.value:
            raise self.unexpected("a name without dots after AS")
        self.pos += 1
        return alias.value, get

    def parse_collection(self) -> str:
        token = self.peek()
        if token.kind != "name":
            raise self.unexpected("devices or devices.modules")
        if token.value.lower() not in COLLECTIONS:
            raise QueryError(
                f"unknown collection {token.value!r} at {self.where(token)}; "
                "localhub supports FROM devices and FROM devices.modules"
            )
        self.pos += 1
        return token.value.lower()

    # Conditions, loosest binding first

    def parse_or(self) -> Test:
        tests = [self.parse_and()]
        while self.accept_keyword("or"):
            tests.append(self.parse_and())
        return _any_of(tests)

    def parse_and(self) -> Test:
        tests = [self.parse_not()]
        while self.accept_keyword("and"):
            tests.append(self.parse_not())
        return _all_of(tests)

    def parse_not(self) -> Test:
        if self.accept_keyword("not"):
            self.nest_deeper()
            test = _negation(self.parse_not())
            self.nesting -= 1
            return test
        return self.parse_primary()

    def parse_primary(self) -> Test:
        if self.accept_punct("("):
            self.nest_deeper()
            test = self.parse_or()
            self.expect_punct(")")
            self.nesting -= 1
            return test
        token = self.peek()
        if self.at_call():
            return self.parse_function()
        left = self.parse_operand()
        if self.at_keyword("in", "nin"):
            negate = self.advance().value.lower() == "nin"
            if isinstance(left, _Literal):
                raise QueryError(
                    f"IN and NIN need a property path on the left (at {self.where(token)})"
                )
            return _membership(left, self.parse_list(), negate)
        op = self.peek()
        if op.kind != "op":
            raise self.unexpected("a comparison (= != <> < > <= >=), IN or NIN")
        self.pos += 1
        return _comparison(left, op.value, self.parse_operand())

    def nest_deeper(self) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise QueryError(
                f"the condition is nested more than {MAX_NESTING} levels deep "
                f"(parentheses and NOT, at {self.where(self.tokens[self.pos - 1])}); "
                "simplify it"
            )

    def parse_function(self) -> Test:
        token = self.advance()
        if token.value.lower() != "is_defined":
            raise QueryError(
                f"function {token.value}() is not supported by localhub (at {self.where(token)}); "
                "only is_defined() is"
            )
        self.expect_punct("(")
        get = self.parse_path()
        self.expect_punct(")")
        return lambda twin: get(twin) is not _MISSING

    def parse_operand(self) -> Getter | _Literal:
        if self.at_path():
            return self.parse_path()
        return _Literal(self.parse_literal("a property path or a value"))

    def parse_path(self) -> Getter:
        token = self.peek()
        if not self.at_path():
            raise self.unexpected("a property path")
        self.pos += 1
        return _path_getter(*self.split_path(token.value))

    def parse_literal(self, expected: str = "a value") -> Any:
        token = self.peek()
        if token.kind in ("string", "number"):
            self.pos += 1
            return token.value
        if token.kind == "name" and token.value.lower() in _CONSTANTS:
            self.pos += 1
            return _CONSTANTS[token.value.lower()]
        raise self.unexpected(expected)

    def parse_list(self) -> list[Any]:
        if self.accept_punct("["):
            close = "]"
        elif self.accept_punct("("):
            close = ")"
        else:
            raise self.unexpected("a list such as ['a', 'b']")
        values: list[Any] = []
        if self.accept_punct(close):
            return values
        while True:
            values.append(self.parse_literal())
            if self.accept_punct(close):
                return values
            if not self.accept_punct(","):
                raise self.unexpected(f"',' or '{close}'")

    @staticmethod
    def split_path(path: str) -> tuple[str, tuple[str, ...]]:
        """The path's first segment, in its canonical spelling if known, and the rest."""
        first, *rest = path.split(".")
        return TWIN_FIELDS.get(first.lower(), first), tuple(rest)
