"""The twin editors: tags and desired as JSON, desired properties in a form; etag conflicts."""

import json
import threading
import time

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from support import create_identities, desired, nested, primary_key

from devices.models import AuditEntry, Device, Module

DEVICE = "dev-1"
MODULE = "mod-1"


@pytest.fixture(params=["", MODULE], ids=["device", "module"])
def target(request, dashboard_hub, registry):
    """A device with a module on the hub; the twin under test is the device's or the module's."""
    create_identities(registry, DEVICE, MODULE)
    return request.param


# Most behaviour is shared; tests that need not run twice pick one of the two.
device_only = pytest.mark.parametrize("target", [""], ids=["device"], indirect=True)
module_only = pytest.mark.parametrize("target", [MODULE], ids=["module"], indirect=True)


def url(name, module_id=""):
    if module_id:
        return reverse(f"devices:module-{name}", args=[DEVICE, module_id])
    return reverse(f"devices:device-{name}", args=[DEVICE])


def hub_twin(registry, module_id=""):
    twin = registry.get_module_twin(DEVICE, module_id) if module_id else registry.get_twin(DEVICE)
    return twin.as_dict()


def hub_desired(registry, module_id=""):
    section = hub_twin(registry, module_id)["properties"]["desired"]
    return {k: v for k, v in section.items() if not k.startswith("$")}


def set_desired(registry, module_id, values):
    twin = desired(values)
    if module_id:
        registry.update_module_twin(DEVICE, module_id, twin)
    else:
        registry.update_twin(DEVICE, twin)


def posted(form) -> dict:
    """What the browser would send back for a form as the page shows it."""
    data = {}
    forms = [form, *getattr(form, "rows", [])]
    if hasattr(form, "rows"):
        forms.append(form.rows.management_form)
    for each in forms:
        for field in each:
            value = field.value()
            if value is False or value is None:
                continue
            data[field.html_name] = "on" if value is True else value
    return data


def text(response) -> str:
    return response.content.decode()


def notices(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# -- JSON editor ---------------------------------------------------------------------------
def test_json_patch_sets_desired_and_the_desired_version_goes_up(
    target, registry, operator, client_as
):
    client = client_as(operator)
    before = hub_twin(registry, target)["properties"]["desired"]["$version"]
    page = client.get(url("twin-json", target))
    assert page.status_code == 200
    assert before == page.context["twin"]["properties"]["desired"]["$version"]
    data = posted(page.context["form"])
    data["desired"] = json.dumps({"telemetryInterval": 122})

    response = client.post(url("twin-json", target), data)

    assert response.status_code == 302 and response.url == url("detail", target)
    twin = hub_twin(registry, target)
    assert twin["properties"]["desired"]["telemetryInterval"] == 122
    after = twin["properties"]["desired"]["$version"]
    assert after == before + 1
    assert f"desired $version is now {after}" in notices(response)[0]
    entry = AuditEntry.objects.get()
    assert entry.action == AuditEntry.Action.TWIN_UPDATED
    assert (entry.device_id, entry.module_id, entry.username) == (DEVICE, target, "operator-user")
    assert entry.detail == {
        "patch": {"properties": {"desired": {"telemetryInterval": 122}}},
        "desired_version": after,
        "twin_version": twin["version"],
    }
    row = Module.objects.get(module_id=target) if target else Device.objects.get(device_id=DEVICE)
    assert row.twin_desired["telemetryInterval"] == 122 and row.twin_desired_version == after


def test_json_patch_sends_only_what_changed_and_removed_keys_as_null(
    target, registry, operator, client_as
):
    set_desired(registry, target, {"keep": 1, "gone": "x", "nested": {"a": 1, "b": 2}})
    client = client_as(operator)
    data = posted(client.get(url("twin-json", target)).context["form"])
    data["desired"] = json.dumps({"keep": 1, "nested": {"a": 1, "b": 3}, "new": True})
    data["tags"] = json.dumps({"location": "lab"})

    response = client.post(url("twin-json", target), data)

    assert response.status_code == 302
    assert hub_desired(registry, target) == {"keep": 1, "nested": {"a": 1, "b": 3}, "new": True}
    assert hub_twin(registry, target)["tags"] == {"location": "lab"}
    sent = AuditEntry.objects.get().detail["patch"]
    assert sent == {
        "tags": {"location": "lab"},
        "properties": {"desired": {"gone": None, "nested": {"b": 3}, "new": True}},
    }


def test_json_replace_makes_tags_and_desired_exactly_the_documents(
    target, registry, operator, client_as
):
    set_desired(registry, target, {"old": 1, "nested": {"a": 1}})
    client = client_as(operator)
    data = posted(client.get(url("twin-json", target)).context["form"])
    data.update(
        mode="replace", desired=json.dumps({"nested": {"b": 2}}), tags=json.dumps({"t": "x"})
    )

    response = client.post(url("twin-json", target), data)

    assert response.status_code == 302
    assert hub_desired(registry, target) == {"nested": {"b": 2}}
    assert hub_twin(registry, target)["tags"] == {"t": "x"}
    entry = AuditEntry.objects.get()
    assert entry.action == AuditEntry.Action.TWIN_REPLACED
    assert entry.detail["patch"] == {
        "tags": {"t": "x"},
        "properties": {"desired": {"nested": {"b": 2}}},
    }
    assert "replaced" in notices(response)[0]


@module_only
def test_a_syntax_error_names_line_and_column_and_nothing_is_sent(
    target, registry, operator, client_as
):
    client = client_as(operator)
    etag = hub_twin(registry, target)["etag"]
    data = posted(client.get(url("twin-json", target)).context["form"])
    typed = '{\n  "telemetryInterval": 122,\n  "mode": eco\n}'
    data["desired"] = typed

    response = client.post(url("twin-json", target), data)

    assert response.status_code == 200
    assert "Not valid JSON: Expecting value at line 3, column 11." in text(response)
    assert response.context["form"]["desired"].value() == typed  # what they typed is kept
    assert hub_twin(registry, target)["etag"] == etag
    assert not AuditEntry.objects.exists()


@device_only
def test_twin_rule_violations_are_reported_per_key_before_anything_is_sent(
    target, registry, operator, client_as
):
    client = client_as(operator)
    etag = hub_twin(registry, target)["etag"]
    data = posted(client.get(url("twin-json", target)).context["form"])
    data["desired"] = json.dumps(
        {"ok": 1, "bad$key": 1, **nested(11), "big": 2**53, "list": [1, None]}
    )
    data["tags"] = json.dumps({"a b": 1})

    response = client.post(url("twin-json", target), data)

    page = text(response)
    assert response.status_code == 200
    assert "bad$key: key contains &#x27;$&#x27;" in page
    assert "k1.k2.k3.k4.k5.k6.k7.k8.k9.k10.k11: object is nested deeper than 10" in page
    assert "big: integer 9007199254740992 is outside" in page
    assert "list[1]: null is not allowed inside arrays" in page
    assert "a b: key contains a space" in page
    assert hub_twin(registry, target)["etag"] == etag
    assert not AuditEntry.objects.exists()


def test_lone_surrogates_are_refused_by_both_editors_and_the_page_still_opens(
    target, registry, operator, client_as
):
    """JSON lets "\\ud800" stand alone; UTF-8 cannot hold it, so neither can the twin."""
    client = client_as(operator)
    etag = hub_twin(registry, target)["etag"]
    data = posted(client.get(url("twin-json", target)).context["form"])
    data["desired"] = '{"ok": "\\ud800", "\\udc00key": 1}'
    rows = posted(client.get(url("twin-form", target)).context["form"])
    rows.update({"rows-0-key": "x", "rows-0-type": "json", "rows-0-value": '"a\\ud800"'})

    as_json = text(client.post(url("twin-json", target), data))
    as_rows = text(client.post(url("twin-form", target), rows))

    assert "ok: string contains a lone surrogate (U+D800)" in as_json
    assert "key contains a lone surrogate (U+DC00)" in as_json
    assert "string contains a lone surrogate (U+D800)" in as_rows
    assert hub_twin(registry, target)["etag"] == etag
    assert client.get(url("detail", target)).status_code == 200


@module_only
def test_replace_refuses_null_per_key(target, registry, operator, client_as):
    client = client_as(operator)
    data = posted(client.get(url("twin-json", target)).context["form"])
    data.update(mode="replace", desired=json.dumps({"x": None}))

    response = client.post(url("twin-json", target), data)

    assert "x: null is not allowed here" in text(response)
    assert not AuditEntry.objects.exists()


@device_only
def test_an_unchanged_document_sends_nothing(target, registry, operator, client_as):
    client = client_as(operator)
    etag = hub_twin(registry, target)["etag"]
    data = posted(client.get(url("twin-json", target)).context["form"])

    response = client.post(url("twin-json", target), data)

    assert "You changed nothing, so nothing was sent." in text(response)
    assert hub_twin(registry, target)["etag"] == etag


def test_a_conflict_shows_the_current_twin_beside_the_edit_and_reapplies(
    target, registry, operator, client_as
):
    set_desired(registry, target, {"a": 1, "b": 1})
    client = client_as(operator)
    data = posted(client.get(url("twin-json", target)).context["form"])
    seen_etag = data["etag"]
    set_desired(registry, target, {"b": 2, "other": "theirs"})  # someone else, meanwhile
    typed = json.dumps({"a": 5, "b": 1}, indent=4)
    data["desired"] = typed

    response = client.post(url("twin-json", target), data)

    page = text(response)
    assert response.status_code == 409
    assert "The twin changed since you loaded it: nothing was written" in page
    assert hub_desired(registry, target) == {"a": 1, "b": 2, "other": "theirs"}
    current = hub_twin(registry, target)["etag"]
    assert seen_etag in page and current in page
    assert "&quot;other&quot;: &quot;theirs&quot;" in page  # the hub's twin as it is now
    form = response.context["form"]
    assert form["desired"].value() == typed  # their text, kept
    assert form["etag"].value() == current
    assert "Re-apply my changes on top of the current twin" in page
    conflict = {s.name: s for s in response.context["conflict"]}["desired"]
    assert conflict.mine == {"a": 5} and sorted(conflict.others) == ["b", "other"]
    assert not AuditEntry.objects.exists()

    again = client.post(url("twin-json", target), posted(form))

    assert again.status_code == 302
    # Their change on top of the current twin; the other writer's changes survive.
    assert hub_desired(registry, target) == {"a": 5, "b": 2, "other": "theirs"}
    assert AuditEntry.objects.get().detail["patch"] == {"properties": {"desired": {"a": 5}}}


@pytest.mark.parametrize("editor", ["twin-json", "twin-form"])
@module_only
def test_a_reported_patch_alone_is_no_conflict_and_the_edit_is_written(
    target, registry, operator, client_as, client_for, editor
):
    # The device reporting moves the twin's etag, but changes nothing the edit is based on.
    client = client_as(operator)
    data = posted(client.get(url(editor, target)).context["form"])
    device = client_for(DEVICE, primary_key(registry.get_module(DEVICE, MODULE)), target)
    device.connect()
    device.patch_twin_reported_properties({"temperature": 21})
    assert hub_twin(registry, target)["etag"] != data["etag"]
    if editor == "twin-json":
        data["desired"] = json.dumps({"telemetryInterval": 5})
    else:
        data.update(
            {"rows-0-key": "telemetryInterval", "rows-0-type": "number", "rows-0-value": "5"}
        )

    response = client.post(url(editor, target), data)

    assert response.status_code == 302 and response.url == url("detail", target)
    twin = hub_twin(registry, target)
    assert hub_desired(registry, target) == {"telemetryInterval": 5}
    assert twin["properties"]["reported"]["temperature"] == 21
    entry = AuditEntry.objects.get()
    assert entry.detail["patch"] == {"properties": {"desired": {"telemetryInterval": 5}}}
    assert f"desired $version is now {entry.detail['desired_version']}" in notices(response)[0]


@module_only
def test_edits_land_while_the_module_reports_every_20_ms(
    target, registry, operator, client_as, client_for
):
    """Each edit is loaded, then posted while the module keeps reporting: every one is
    written, none shows a conflict (with 3 tries, 163 of ~725 writes did)."""
    client = client_as(operator)
    device = client_for(DEVICE, primary_key(registry.get_module(DEVICE, MODULE)), target)
    device.connect()
    stop = threading.Event()

    def report():
        n = 0
        while not stop.is_set():
            n += 1
            device.patch_twin_reported_properties({"counter": n})
            time.sleep(0.02)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        answers = []
        for value in range(20):
            data = posted(client.get(url("twin-form", target)).context["form"])
            time.sleep(0.05)  # the module reports meanwhile: the loaded etag is stale
            data.update(
                {"rows-0-key": "telemetryInterval", "rows-0-type": "number"},
                **{"rows-0-value": str(value)},
            )
            answers.append(client.post(url("twin-form", target), data).status_code)
    finally:
        stop.set()
        reporter.join(10)

    assert answers == [302] * 20
    assert hub_desired(registry, target) == {"telemetryInterval": 19}
    assert hub_twin(registry, target)["properties"]["reported"]["counter"] > 20


@module_only
def test_a_desired_change_meanwhile_still_conflicts_though_the_device_reported_too(
    target, registry, operator, client_as, client_for
):
    client = client_as(operator)
    data = posted(client.get(url("twin-form", target)).context["form"])
    device = client_for(DEVICE, primary_key(registry.get_module(DEVICE, MODULE)), target)
    device.connect()
    device.patch_twin_reported_properties({"temperature": 21})
    set_desired(registry, target, {"telemetryInterval": 60})  # someone else, meanwhile
    data.update({"rows-0-key": "telemetryInterval", "rows-0-type": "number", "rows-0-value": "5"})

    response = client.post(url("twin-form", target), data)

    assert response.status_code == 409
    assert "The twin changed since you loaded it: nothing was written" in text(response)
    assert hub_desired(registry, target) == {"telemetryInterval": 60}
    assert not AuditEntry.objects.exists()


@device_only
def test_a_replace_conflict_warns_which_changes_it_would_undo(
    target, registry, operator, client_as
):
    client = client_as(operator)
    data = posted(client.get(url("twin-json", target)).context["form"])
    set_desired(registry, target, {"theirs": 1})
    data.update(mode="replace", desired=json.dumps({"mine": 1}))

    response = client.post(url("twin-json", target), data)

    assert response.status_code == 409
    assert "Replacing again undoes their change to <code>theirs</code>" in text(response)


@module_only
def test_the_hub_refusing_a_write_shows_its_message_and_keeps_the_text(
    target, registry, operator, client_as
):
    # The form's hidden copy of what was loaded claims an empty twin, so the size check
    # passes here; the hub, holding 30 KB already, refuses (400).
    set_desired(registry, target, {f"k{i}": "x" * 3000 for i in range(10)})
    client = client_as(operator)
    data = posted(client.get(url("twin-json", target)).context["form"])
    data["base_desired"] = "{}"
    typed = json.dumps({"more": "y" * 4000})
    data["desired"] = typed

    response = client.post(url("twin-json", target), data)

    assert response.status_code == 400
    assert "desired is" in text(response) and "the limit is 32768" in text(response)
    assert response.context["form"]["desired"].value() == typed
    assert not AuditEntry.objects.exists()


@device_only
def test_hub_down_says_so_and_keeps_the_text(target, localhub, operator, client_as):
    client = client_as(operator)
    data = posted(client.get(url("twin-json", target)).context["form"])
    typed = json.dumps({"telemetryInterval": 122})
    data["desired"] = typed
    localhub.stop()

    response = client.post(url("twin-json", target), data)

    assert response.status_code == 503
    assert "cannot be reached. Is it running?" in text(response)
    assert response.context["form"]["desired"].value() == typed
    assert client.get(url("twin-json", target)).status_code == 503


def test_an_unknown_device_or_module_is_a_404_page(dashboard_hub, registry, operator, client_as):
    create_identities(registry, DEVICE)
    client = client_as(operator)

    assert client.get(reverse("devices:device-twin-json", args=["nope"])).status_code == 404
    missing = client.get(url("twin-form", "nope"))
    assert missing.status_code == 404 and "Not found on the hub" in text(missing)


def test_viewers_get_403_on_both_editors(target, registry, viewer, client_as):
    client = client_as(viewer)
    etag = hub_twin(registry, target)["etag"]

    for name in ("twin-json", "twin-form"):
        assert client.get(url(name, target)).status_code == 403
        refused = client.post(url(name, target), {"etag": etag, "desired": '{"x": 1}'})
        assert refused.status_code == 403
        assert "viewers can only read them" in text(refused)
    assert hub_twin(registry, target)["etag"] == etag


# -- desired properties form ---------------------------------------------------------------
def rows_of(data) -> dict:
    """{key: row index} of the rows in posted form data."""
    return {
        value: int(name.split("-")[1])
        for name, value in data.items()
        if name.startswith("rows-") and name.endswith("-key")
    }


@device_only
def test_the_form_shows_one_row_per_key_with_its_type(target, registry, operator, client_as):
    set_desired(registry, target, {"s": "x", "n": 1.5, "b": True, "o": {"a": [1]}})

    page = client_as(operator).get(url("twin-form", target))

    rows = [
        (r["key"].value(), r["type"].value(), r["value"].value()) for r in page.context["form"].rows
    ]
    assert rows == [
        ("s", "string", "x"),
        ("n", "number", "1.5"),
        ("b", "boolean", "true"),
        ("o", "json", '{"a": [1]}'),
        (None, "auto", None),  # the empty row for a new key
    ]
    assert '<code>s</code><input type="hidden" name="rows-0-key" value="s">' in text(page)


def test_the_form_sends_only_changed_keys_with_new_and_removed_rows(
    target, registry, operator, client_as
):
    set_desired(registry, target, {"telemetryInterval": 60, "mode": "eco", "old": True})
    client = client_as(operator)
    before = hub_twin(registry, target)["properties"]["desired"]["$version"]
    data = posted(client.get(url("twin-form", target)).context["form"])
    rows = rows_of(data)
    data[f"rows-{rows['telemetryInterval']}-value"] = "122"
    data[f"rows-{rows['old']}-remove"] = "on"
    data.update({"rows-3-key": "threshold", "rows-3-type": "json", "rows-3-value": '{"hi": 3}'})

    response = client.post(url("twin-form", target), data)

    assert response.status_code == 302
    assert hub_desired(registry, target) == {
        "telemetryInterval": 122,
        "mode": "eco",
        "threshold": {"hi": 3},
    }
    after = hub_twin(registry, target)["properties"]["desired"]["$version"]
    assert after == before + 1
    entry = AuditEntry.objects.get()
    assert entry.detail["patch"] == {
        "properties": {"desired": {"telemetryInterval": 122, "old": None, "threshold": {"hi": 3}}}
    }
    assert entry.detail["desired_version"] == after
    assert f"desired $version is now {after}" in notices(response)[0]


@pytest.mark.parametrize(
    ("typed", "sent"),
    [("122", 122), ("0.5", 0.5), ("true", True), ('{"hi": 3}', {"hi": 3}), ("eco", "eco")],
)
@device_only
def test_a_new_row_left_on_auto_sends_what_the_value_looks_like(
    target, registry, operator, client_as, typed, sent
):
    client = client_as(operator)
    data = posted(client.get(url("twin-form", target)).context["form"])
    data.update({"rows-0-key": "telemetryInterval", "rows-0-value": typed})

    assert client.post(url("twin-form", target), data).status_code == 302
    assert hub_desired(registry, target)["telemetryInterval"] == sent


@module_only
def test_add_a_row_keeps_what_was_typed_and_sends_nothing(target, registry, operator, client_as):
    set_desired(registry, target, {"a": 1})
    client = client_as(operator)
    etag = hub_twin(registry, target)["etag"]
    data = posted(client.get(url("twin-form", target)).context["form"])
    data.update(
        {
            "rows-0-value": "7",
            "rows-1-key": "b",
            "rows-1-type": "boolean",
            "rows-1-value": "false",
            "add_row": "",
        }
    )

    response = client.post(url("twin-form", target), data)

    assert response.status_code == 200
    form = response.context["form"]
    assert [(r["key"].value(), r["value"].value()) for r in form.rows] == [
        ("a", "7"),
        ("b", "false"),
        (None, None),
    ]
    assert hub_twin(registry, target)["etag"] == etag

    assert client.post(url("twin-form", target), posted(form)).status_code == 302
    assert hub_desired(registry, target) == {"a": 7, "b": False}


@pytest.mark.parametrize(
    ("kind", "typed", "message"),
    [
        ("number", "abc", "&#x27;abc&#x27; is not a number"),
        ("number", "1e999", "is not a number"),
        ("boolean", "maybe", "A boolean is true or false."),
        (
            "json",
            '{"a":\n 1,}',
            "Not valid JSON: Expecting property name enclosed in double "
            "quotes at line 2, column 4.",
        ),
        ("json", "null", "null would delete the key: tick Remove instead."),
        ("number", str(2**53), "integer 9007199254740992 is outside"),
    ],
)
def test_the_form_checks_values_by_type(
    dashboard_hub, registry, operator, client_as, kind, typed, message
):
    create_identities(registry, DEVICE)
    client = client_as(operator)
    etag = hub_twin(registry)["etag"]
    data = posted(client.get(url("twin-form")).context["form"])
    data.update({"rows-0-key": "x", "rows-0-type": kind, "rows-0-value": typed})

    response = client.post(url("twin-form"), data)

    assert response.status_code == 200
    assert message in text(response)
    assert response.context["form"].rows[0]["value"].value() == typed
    assert hub_twin(registry)["etag"] == etag


@module_only
def test_the_form_reports_bad_and_duplicate_keys_per_row(target, registry, operator, client_as):
    set_desired(registry, target, {"a": 1})
    client = client_as(operator)
    data = posted(client.get(url("twin-form", target)).context["form"])
    data.update(
        {
            "rows-1-key": "a",
            "rows-1-value": "2",
            "rows-TOTAL_FORMS": "4",
            "rows-2-key": "my key",
            "rows-2-value": "v",
            "rows-3-key": "",
            "rows-3-value": "orphan",
        }
    )

    response = client.post(url("twin-form", target), data)

    page = text(response)
    assert "&quot;a&quot; appears in two rows." in page
    assert "my key: key contains a space" in page
    assert "Give this value a key." in page
    assert not AuditEntry.objects.exists()


def test_the_form_conflict_keeps_the_rows_and_reapplies(target, registry, operator, client_as):
    set_desired(registry, target, {"a": 1})
    client = client_as(operator)
    data = posted(client.get(url("twin-form", target)).context["form"])
    set_desired(registry, target, {"b": 2})
    data["rows-0-value"] = "3"

    response = client.post(url("twin-form", target), data)

    assert response.status_code == 409
    assert "The twin changed since you loaded it" in text(response)
    form = response.context["form"]
    assert form.rows[0]["value"].value() == "3"
    assert form["etag"].value() == hub_twin(registry, target)["etag"]
    assert hub_desired(registry, target) == {"a": 1, "b": 2}

    assert client.post(url("twin-form", target), posted(form)).status_code == 302
    assert hub_desired(registry, target) == {"a": 3, "b": 2}
    assert AuditEntry.objects.get().detail["patch"] == {"properties": {"desired": {"a": 3}}}


@module_only
def test_the_form_with_the_hub_down_keeps_the_rows(target, localhub, operator, client_as):
    client = client_as(operator)
    data = posted(client.get(url("twin-form", target)).context["form"])
    data.update({"rows-0-key": "telemetryInterval", "rows-0-type": "number", "rows-0-value": "122"})
    localhub.stop()

    response = client.post(url("twin-form", target), data)

    assert response.status_code == 503
    assert "cannot be reached" in text(response)
    assert response.context["form"].rows[0]["value"].value() == "122"
