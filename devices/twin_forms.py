"""The twin editors' forms: tags and desired as JSON, and desired properties one row per key.

Both check every twin rule with localhub's own validator before anything is sent, and both
remember what the operator loaded (hidden ``base`` fields and the etag), so what is sent is
exactly what they changed, guarded by If-Match.
"""

import contextlib
import json
import math

from django import forms

from localhub import json_input, twin_rules

from . import twins

PATCH, REPLACE = "patch", "replace"


def parse_json(text: str):
    """JSON text to a value; errors name the line and column, as an editor would."""
    # A hidden field posted 800 levels deep would raise RecursionError in the walks after
    # parsing (rules, merge, diff), after seconds of work: counted first, without recursion.
    if json_input.nesting(text) > json_input.MAX_DEPTH:
        raise forms.ValidationError(
            f"Not valid JSON for a twin: nested deeper than {json_input.MAX_DEPTH} levels.",
            code="json",
        )
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise forms.ValidationError(
            f"Not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.", code="json"
        ) from e
    except RecursionError as e:
        raise forms.ValidationError("Not valid JSON: nested far too deeply.", code="json") from e
    except ValueError as e:  # a duplicate key, or an integer of more than 4300 digits
        raise forms.ValidationError(f"Not valid JSON: {e}", code="json") from e


def _no_duplicate_keys(pairs):
    doc = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f'the key "{key}" appears twice in one object.')
        doc[key] = value
    return doc


class JsonObjectField(forms.CharField):
    """A JSON object typed in a textarea; blank means {}."""

    widget = forms.Textarea(attrs={"rows": 12, "spellcheck": "false", "class": "mono"})

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def to_python(self, value):
        text = super().to_python(value)
        if not text.strip():
            return {}
        doc = parse_json(text)
        if not isinstance(doc, dict):
            raise forms.ValidationError(
                f"Must be a JSON object ({{ ... }}), not {twins.json_type(doc)}.", code="json"
            )
        return doc

    def prepare_value(self, value):
        if isinstance(value, dict):
            return twins.pretty(value) if not self.widget.is_hidden else twins.compact(value)
        return value


def rule_errors(section: str, doc: dict, *, allow_null: bool) -> list[str]:
    """Every twin rule ``doc`` breaks as ``section``, one message per key path, and its size."""
    problems = twin_rules.check_patch(section, doc, allow_null=allow_null)
    if not problems:
        problems = twin_rules.check_size(section, twins.without_nulls(doc))
    return [f"{p.path}: {p.message}" for p in problems]


class TwinEdit:
    """What both editors give the view: the etag seen, and what to send."""

    replace = False

    def sections(self) -> dict:
        """{"tags": ..., "desired": ...}: each the patch (or, for a replace, the document)
        to send, or None when that section is not sent."""
        raise NotImplementedError

    def bases(self) -> dict:
        """The sections as the operator loaded them."""
        raise NotImplementedError

    def write_args(self) -> dict:
        return {**self.sections(), "replace": self.replace}

    def sent(self) -> dict:
        """What goes over the wire, in the hub's shape (for the audit log)."""
        sections = self.sections()
        doc = {}
        if sections.get("tags") is not None:
            doc["tags"] = sections["tags"]
        if sections.get("desired") is not None:
            doc["properties"] = {"desired": sections["desired"]}
        return doc

    @property
    def etag(self) -> str:
        return self.cleaned_data["etag"]


# -- tags and desired as JSON --------------------------------------------------------------
class TwinJsonForm(TwinEdit, forms.Form):
    """The operator edits the whole tags and desired documents. A patch sends what they
    changed against what they loaded; a replace sends both documents as they are."""

    tags = JsonObjectField(label="Tags")
    desired = JsonObjectField(label="Desired properties")
    mode = forms.ChoiceField(
        choices=[
            (PATCH, "Patch: send only what I changed (a key I removed is sent as null)"),
            (REPLACE, "Replace: tags and desired become exactly these documents"),
        ],
        initial=PATCH,
        widget=forms.RadioSelect,
    )
    etag = forms.CharField(widget=forms.HiddenInput)
    base_tags = JsonObjectField(widget=forms.HiddenInput)
    base_desired = JsonObjectField(widget=forms.HiddenInput)

    @classmethod
    def for_twin(cls, twin: dict):
        summary = twins.TwinSummary(twin)
        docs = {"tags": summary.tags, "desired": summary.desired}
        return cls(
            initial={
                **docs,
                "base_tags": docs["tags"],
                "base_desired": docs["desired"],
                "etag": summary.etag,
                "mode": PATCH,
            }
        )

    def clean(self):
        data = super().clean()
        self.replace = data.get("mode") == REPLACE
        for section in ("tags", "desired"):
            if section in data:
                for message in rule_errors(section, data[section], allow_null=not self.replace):
                    self.add_error(section, message)
        if not self.errors and not any(v is not None for v in self.sections().values()):
            raise forms.ValidationError(
                "You changed nothing, so nothing was sent.", code="unchanged"
            )
        return data

    def bases(self) -> dict:
        data = self.cleaned_data
        return {"tags": data["base_tags"], "desired": data["base_desired"]}

    def sections(self) -> dict:
        data = self.cleaned_data
        if self.replace:
            return {"tags": data["tags"], "desired": data["desired"]}
        bases = self.bases()
        return {name: twins.diff(bases[name], data[name]) or None for name in ("tags", "desired")}


# -- desired properties, one row per key ---------------------------------------------------
AUTO, STRING, NUMBER, BOOLEAN, JSON = "auto", "string", "number", "boolean", "json"
TYPES = [
    (AUTO, "auto"),
    (STRING, "string"),
    (NUMBER, "number"),
    (BOOLEAN, "boolean"),
    (JSON, "JSON"),
]


def guess_type(text: str) -> str:
    """For a new row left on "auto": 122 is a number, true a boolean, {...} JSON; an
    operator who types 122 means the number, not the string "122"."""
    try:
        value = json.loads(text)
    except ValueError:
        return STRING
    return STRING if value is None else type_of(value)


def type_of(value) -> str:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int | float):
        return NUMBER
    if isinstance(value, str):
        return STRING
    return JSON


def text_of(value) -> str:
    return value if isinstance(value, str) else twins.compact(value)


def parse_typed(kind: str, text: str):
    """The value of a row, read as its type says."""
    if kind == AUTO:
        kind = guess_type(text)
    if kind == STRING:
        return text
    if kind == BOOLEAN:
        word = text.strip().lower()
        if word not in ("true", "false"):
            raise forms.ValidationError("A boolean is true or false.", code="boolean")
        return word == "true"
    if kind == NUMBER:
        try:
            value = json.loads(text.strip())
        except ValueError:
            value = None
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            raise forms.ValidationError(
                f"{text.strip()!r} is not a number (write it like 122, -3 or 0.5).", code="number"
            )
        return value
    value = parse_json(text)
    if value is None:
        raise forms.ValidationError("null would delete the key: tick Remove instead.", code="null")
    return value


class DesiredRowForm(forms.Form):
    key = forms.CharField(required=False, max_length=2048)
    type = forms.ChoiceField(choices=TYPES, initial=AUTO, required=False)
    value = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(
            attrs={"rows": 1, "cols": 40, "spellcheck": "false", "aria-label": "Value"}
        ),
    )
    remove = forms.BooleanField(required=False)

    def __init__(self, *args, base=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.base = base or {}
        key = self.data.get(self.add_prefix("key")) if self.is_bound else self.initial.get("key")
        # A row loaded from the hub shows its key fixed: it can be removed, never renamed.
        self.existing = not self.empty_permitted and bool(key) and key in self.base

    def clean(self):
        data = super().clean()
        key, text = data.get("key") or "", data.get("value") or ""
        if not key:
            if text.strip() and not data.get("remove"):
                self.add_error("key", "Give this value a key.")
            return data
        if data.get("remove"):
            return data
        try:
            data["parsed"] = parse_typed(data.get("type") or AUTO, text)
        except forms.ValidationError as e:
            self.add_error("value", e)
            return data
        for problem in twin_rules.check_patch("desired", {key: data["parsed"]}):
            field = "key" if problem.path == key and problem.message.startswith("key") else "value"
            self.add_error(field, f"{problem.path}: {problem.message}")
        return data


class BaseDesiredRows(forms.BaseFormSet):
    def __init__(self, *args, base=None, **kwargs):
        self.base = base or {}
        super().__init__(*args, form_kwargs={"base": self.base}, **kwargs)

    def total_form_count(self) -> int:
        """As many rows as were posted, plus the one "Add a row" asks for: a 150-byte post
        claiming rows-TOTAL_FORMS=999999999 must not render thousands of empty rows."""
        total = super().total_form_count()
        if not self.is_bound:
            return total
        prefix = f"{self.prefix}-"
        indexes = [
            int(index)
            for name in self.data
            if name.startswith(prefix)
            and (index := name[len(prefix) :].partition("-")[0]).isdigit()
        ]
        return min(total, max(indexes, default=-1) + 2)

    def clean(self):
        """The patch: changed and new keys with their values, removed keys as null."""
        self.patch = {}
        seen = set()
        for form in self.forms:
            key = getattr(form, "cleaned_data", {}).get("key")
            if key and key in seen:
                form.add_error("key", f'"{key}" appears in two rows.')
            seen.add(key)
        if any(self.errors):
            return
        for form in self.forms:
            key = form.cleaned_data.get("key")
            if not key:
                continue
            if form.cleaned_data.get("remove"):
                if form.existing:
                    self.patch[key] = None
                continue
            value = form.cleaned_data["parsed"]
            if key not in self.base or not twins.same(self.base[key], value):
                self.patch[key] = value
        problems = twin_rules.check_size("desired", twins.merge(self.base, self.patch))
        if problems:
            raise forms.ValidationError([str(p) for p in problems])


DesiredRows = forms.formset_factory(
    DesiredRowForm, formset=BaseDesiredRows, extra=1, max_num=5000, absolute_max=5000
)


class DesiredForm(TwinEdit, forms.Form):
    """Desired properties as rows; only changed keys are sent, as a patch."""

    etag = forms.CharField(widget=forms.HiddenInput)
    base = JsonObjectField(widget=forms.HiddenInput)

    def __init__(self, data=None, *, twin=None):
        initial = None
        if twin is not None:
            summary = twins.TwinSummary(twin)
            initial = {"etag": summary.etag, "base": summary.desired}
        super().__init__(data, initial=initial)
        base = initial["base"] if initial else self._posted_base()
        rows = [{"key": k, "type": type_of(v), "value": text_of(v)} for k, v in base.items()]
        initial_rows = rows if data is None else None
        self.rows = DesiredRows(data, initial=initial_rows, base=base, prefix="rows")

    def _posted_base(self) -> dict:
        try:
            return self.fields["base"].clean(self.data.get("base"))
        except forms.ValidationError:
            return {}

    @staticmethod
    def with_extra_row(data):
        """The posted form again, with one more empty row (the "Add a row" button)."""
        data = data.copy()
        with contextlib.suppress(ValueError):
            data["rows-TOTAL_FORMS"] = str(int(data.get("rows-TOTAL_FORMS", "0")) + 1)
        return data

    def is_valid(self) -> bool:
        valid = super().is_valid()
        valid = self.rows.is_valid() and valid
        if valid and not self.rows.patch:
            self.add_error(None, "You changed nothing, so nothing was sent.")
            return False
        return valid

    def bases(self) -> dict:
        return {"desired": self.cleaned_data["base"]}

    def sections(self) -> dict:
        return {"tags": None, "desired": self.rows.patch}
