import pytest

from localhub.query import MAX_QUERY_LENGTH, QueryError, parse_query


def make_twin(device_id="d1", **fields):
    twin = {
        "deviceId": device_id,
        "etag": "AAAAAAAAAAE=",
        "deviceEtag": "NjgzMzQ1MzQ1",
        "status": "enabled",
        "statusUpdateTime": "0001-01-01T00:00:00Z",
        "connectionState": "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00Z",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": "sas",
        "version": 3,
        "tags": {"location": {"building": "b1"}, "n": 5, "name": "lab", "flag": True},
        "properties": {
            "desired": {"telemetryInterval": 122, "$metadata": {}, "$version": 2},
            "reported": {"x": {"y": True}, "temp": 21.5, "nothing": None, "$version": 1},
        },
    }
    twin.update(fields)
    return twin


def where(condition, twin=None):
    """Whether ``twin`` (a default one if None) matches ``... WHERE condition``."""
    query = parse_query(f"SELECT * FROM devices WHERE {condition}")
    return query.matches(make_twin() if twin is None else twin)


def error_for(text):
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    return str(caught.value)


# SELECT *, FROM, TOP


def test_select_star_returns_the_twin_itself():
    query = parse_query("SELECT * FROM devices")
    twin = make_twin()

    assert query.select_all
    assert query.collection == "devices"
    assert query.top is None
    assert query.matches(twin)
    assert query.project(twin) is twin


def test_modules_collection_is_recognised():
    query = parse_query("SELECT * FROM devices.modules WHERE moduleId = 'm1'")

    assert query.collection == "devices.modules"
    assert query.matches(make_twin(moduleId="m1"))
    assert not query.matches(make_twin(moduleId="m2"))


def test_keywords_and_collection_names_are_case_insensitive():
    query = parse_query("select top 3 * from DEVICES.Modules where tags.n = 5 and not false = true")

    assert query.collection == "devices.modules"
    assert query.top == 3
    assert query.matches(make_twin())


def test_top_is_read_from_select_top():
    assert parse_query("SELECT TOP 10 * FROM devices").top == 10
    assert parse_query("SELECT TOP 0 deviceId FROM devices").top == 0


def test_query_may_span_lines():
    query = parse_query(
        "SELECT *\n  FROM devices\n  WHERE tags.n = 5\n    AND status = 'enabled'\n"
    )

    assert query.matches(make_twin())


# Comparisons


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("tags.n = 5", True),
        ("tags.n = 6", False),
        ("tags.n != 6", True),
        ("tags.n != 5", False),
        ("tags.n <> 6", True),
        ("tags.n <> 5", False),
        ("tags.n < 6", True),
        ("tags.n < 5", False),
        ("tags.n > 4", True),
        ("tags.n > 5", False),
        ("tags.n <= 5", True),
        ("tags.n <= 4", False),
        ("tags.n >= 5", True),
        ("tags.n >= 6", False),
    ],
)
def test_comparison_operators_on_numbers(condition, expected):
    assert where(condition) is expected


def test_ints_and_floats_compare_numerically():
    assert where("tags.n = 5.0")
    assert where("properties.reported.temp > 21")
    assert where("properties.reported.temp < 22")
    assert where("properties.reported.temp = 21.5")


def test_number_literals_can_be_negative_float_exponent_or_hex():
    twin = make_twin(tags={"a": -3, "b": -0.5, "c": 1500, "d": 255})

    assert where("tags.a = -3 AND tags.b = -0.5 AND tags.c = 1.5e3 AND tags.d = 0xFF", twin)
    assert where("tags.a<-2", twin)


def test_strings_compare_lexicographically():
    assert where("tags.name = 'lab'")
    assert where("tags.name < 'lac'")
    assert where("tags.name > 'la'")
    assert where("tags.name >= 'lab' AND tags.name <= 'lab'")
    assert not where("tags.name < 'Lab'")  # upper case sorts first


def test_booleans_compare_with_true_and_false():
    assert where("tags.flag = true")
    assert where("tags.flag != false")
    assert where("properties.reported.x.y = TRUE")


def test_null_equals_only_null():
    assert where("properties.reported.nothing = null")
    assert not where("properties.reported.nothing != null")
    assert not where("tags.name = null")
    assert not where("tags.missing = null")


def test_booleans_are_not_numbers():
    assert not where("tags.flag = 1")
    assert not where("tags.flag > 0")
    assert not where("tags.n = true")


def test_comparing_different_types_is_false_for_every_operator():
    for op in ("=", "!=", "<>", "<", ">", "<=", ">="):
        assert not where(f"tags.name {op} 5")
        assert not where(f"tags.n {op} '5'")


def test_comparing_an_undefined_path_is_false_even_for_not_equal():
    assert not where("tags.missing = 1")
    assert not where("tags.missing != 1")
    assert not where("tags.name.deeper != 'x'")  # a path through a string
    assert not where("nosuchfield <> 'x'")


def test_objects_do_not_compare():
    assert not where("tags.location = 'b1'")
    assert not where("tags.location != 'b1'")


def test_literal_on_the_left_is_mirrored():
    assert where("6 > tags.n")
    assert where("5 <= tags.n")
    assert not where("5 < tags.n")


def test_two_paths_compare_by_value():
    twin = make_twin(tags={"a": 1, "b": 1, "c": 2, "s": "1"})

    assert where("tags.a = tags.b", twin)
    assert where("tags.a < tags.c", twin)
    assert not where("tags.a = tags.s", twin)
    assert not where("tags.a = tags.missing", twin)


def test_two_literals_compare_once():
    assert where("1 = 1")
    assert not where("1 = '1'")


# Strings


def test_single_quoted_strings_escape_a_quote_by_doubling_it():
    assert where("tags.name = 'it''s'", make_twin(tags={"name": "it's"}))


def test_double_quoted_strings_are_accepted():
    assert where('tags.name = "lab"')
    assert where('tags.name = "say ""hi"""', make_twin(tags={"name": 'say "hi"'}))


def test_strings_accept_backslash_escapes_from_the_query_reference():
    twin = make_twin(tags={"name": 'it\'s "q" \\ é'})

    assert where(r"tags.name = 'it\'s \"q\" \\ \u00e9'", twin)


# Logic and precedence


def test_and_or_not():
    assert where("tags.n = 5 AND tags.name = 'lab'")
    assert not where("tags.n = 5 AND tags.name = 'x'")
    assert where("tags.n = 1 OR tags.name = 'lab'")
    assert not where("tags.n = 1 OR tags.name = 'x'")
    assert where("NOT tags.n = 1")
    assert not where("NOT tags.n = 5")
    assert where("NOT NOT tags.n = 5")


def test_and_binds_tighter_than_or():
    # true OR (false AND false) is true; (true OR false) AND false would be false.
    assert where("tags.n = 5 OR tags.n = 1 AND tags.n = 2")
    assert not where("(tags.n = 5 OR tags.n = 1) AND tags.n = 2")


def test_not_binds_tighter_than_and():
    # (NOT true) AND false is false; NOT (true AND false) would be true.
    assert not where("NOT tags.n = 5 AND tags.n = 1")
    assert where("NOT (tags.n = 5 AND tags.n = 1)")


def test_not_negates_a_comparison_on_an_undefined_path():
    assert where("NOT tags.missing = 1")


def test_parentheses_nest():
    assert where("((tags.n = 5) AND (status = 'enabled' OR (status = 'disabled')))")


# IN and NIN


def test_in_matches_any_listed_value():
    assert where("tags.name IN ['x', 'lab']")
    assert where("tags.name IN ('x', 'lab')")
    assert not where("tags.name IN ['x', 'y']")
    assert where("deviceId IN ['d1', 'd2']")


def test_in_uses_the_same_type_rules_as_equality():
    assert where("tags.n IN [5.0]")
    assert not where("tags.n IN ['5']")
    assert not where("tags.flag IN [1]")
    assert where("tags.flag IN [true]")
    assert not where("tags.n IN [true]", make_twin(tags={"n": 1}))
    assert where("properties.reported.nothing IN [null, 1]")


def test_in_with_an_empty_list_matches_nothing():
    assert not where("tags.name IN []")


def test_nin_matches_a_primitive_value_not_listed():
    assert where("tags.name NIN ['x', 'y']")
    assert not where("tags.name NIN ['x', 'lab']")
    assert where("tags.n NIN ['5']")  # a number is never equal to a string
    assert where("tags.name nin ()")


def test_nin_is_false_for_an_undefined_path_or_an_object():
    assert not where("tags.missing NIN ['x']")
    assert not where("tags.location NIN ['x']")


# is_defined


def test_is_defined():
    assert where("is_defined(tags.name)")
    assert where("IS_DEFINED(tags.location.building)")
    assert not where("is_defined(tags.missing)")
    assert not where("is_defined(tags.name.deeper)")


def test_is_defined_is_true_for_null():
    assert where("is_defined(properties.reported.nothing)")


def test_not_is_defined():
    assert where("NOT is_defined(tags.missing)")
    assert not where("NOT is_defined(tags.name) OR tags.n = 1")


# Paths


def test_top_level_names_match_case_insensitively():
    assert where("DeviceId = 'd1'")
    assert where("STATUS = 'enabled' AND ConnectionState = 'Disconnected'")
    assert where("Tags.n = 5 AND PROPERTIES.desired.telemetryInterval = 122")


def test_unknown_top_level_names_also_match_case_insensitively():
    assert where("customfield = 1", make_twin(customField=1))
    assert where("customField = 1", make_twin(customField=1))


def test_keys_under_tags_and_properties_are_case_sensitive():
    assert not where("tags.Name = 'lab'")
    assert not where("properties.Desired.telemetryInterval = 122")


def test_dollar_keys_are_addressable():
    assert where("properties.desired.$version = 2")
    assert where("properties.reported.$version < properties.desired.$version")


def test_any_top_level_twin_field_can_be_filtered():
    assert where("version >= 3 AND etag = 'AAAAAAAAAAE=' AND cloudToDeviceMessageCount = 0")
    assert where("authenticationType = 'sas'")


# Projections


def test_projection_names_columns_after_the_last_path_segment():
    query = parse_query(
        "SELECT deviceId, tags.location.building, properties.desired.$version FROM devices"
    )

    assert not query.select_all
    assert query.project(make_twin()) == {"deviceId": "d1", "building": "b1", "$version": 2}


def test_projection_alias_names_the_column():
    query = parse_query("SELECT properties.reported.temp AS t, deviceId AS id FROM devices")

    assert query.project(make_twin()) == {"t": 21.5, "id": "d1"}


def test_projection_of_a_top_level_field_uses_the_twin_spelling():
    query = parse_query("SELECT DeviceId, LastActivityTime FROM devices")

    assert query.project(make_twin()) == {
        "deviceId": "d1",
        "lastActivityTime": "0001-01-01T00:00:00Z",
    }


def test_projection_omits_missing_fields():
    query = parse_query("SELECT deviceId, moduleId, tags.missing, tags.name.deeper FROM devices")

    assert query.project(make_twin()) == {"deviceId": "d1"}


def test_projection_keeps_objects_and_null():
    query = parse_query("SELECT tags.location, properties.reported.nothing FROM devices")

    assert query.project(make_twin()) == {"location": {"building": "b1"}, "nothing": None}


def test_projection_returns_a_new_dict():
    twin = make_twin()
    row = parse_query("SELECT deviceId FROM devices").project(twin)

    row["extra"] = 1
    assert "extra" not in twin


def test_projection_with_where_and_top_on_modules():
    query = parse_query(
        "SELECT TOP 2 deviceId, moduleId FROM devices.modules WHERE properties.reported.temp > 20"
    )
    twin = make_twin(moduleId="m1")

    assert query.top == 2
    assert query.matches(twin)
    assert query.project(twin) == {"deviceId": "d1", "moduleId": "m1"}


# Errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the query is empty"),
        ("   \n ", "the query is empty"),
        ("SELECT", "unexpected end of query at column 7; expected * or a property path"),
        ("SELECT * devices", "unexpected 'devices' at column 10; expected FROM"),
        ("FROM devices", "unexpected 'FROM' at column 1; expected SELECT"),
        ("SELECT * FROM", "unexpected end of query at column 14; expected devices or"),
        ("SELECT * FROM jobs", "unknown collection 'jobs' at column 15; localhub supports"),
        ("SELECT * FROM devices.jobs", "unknown collection 'devices.jobs' at column 15"),
        ("SELECT * FROM devices WHERE", "unexpected end of query at column 28"),
        ("SELECT * FROM devices x", "unexpected 'x' at column 23; expected the end of the query"),
        ("SELECT * FROM devices WHERE tags.a = 1 )", "unexpected ')' at column 40"),
        ("SELECT * FROM devices WHERE tags.a = 'x", "unterminated string starting at column 38"),
        ("SELECT * FROM devices WHERE tags.a = \"x'", "unterminated string starting at column 38"),
        ("SELECT * FROM devices WHERE tags.a = 'C:\\temp'", "invalid escape sequence at column 41"),
        ("SELECT * FROM devices WHERE tags.a # 1", "unexpected character '#' at column 36"),
        (
            "SELECT * FROM devices WHERE tags.a",
            "unexpected end of query at column 35; expected a co",
        ),
        ("SELECT * FROM devices WHERE tags.a == 1", "unexpected '=' at column 37"),
        (
            "SELECT * FROM devices WHERE (tags.a = 1",
            "unexpected end of query at column 40; expected ')'",
        ),
        ("SELECT * FROM devices WHERE tags.a = 1 AND", "unexpected end of query at column 43"),
        ("SELECT * FROM devices WHERE tags.a IN 'x'", "expected a list such as ['a', 'b']"),
        ("SELECT * FROM devices WHERE tags.a IN ['x'", "unexpected end of query at column 43; exp"),
        ("SELECT * FROM devices WHERE tags.a IN [tags.b]", "unexpected 'tags.b' at column 40"),
        ("SELECT * FROM devices WHERE 'x' IN ['x']", "IN and NIN need a property path on the left"),
        ("SELECT * FROM devices WHERE upper(tags.a) = 'X'", "function upper() is not supported"),
        ("SELECT * FROM devices WHERE is_defined('x')", "unexpected \"'x'\" at column 40"),
        ("SELECT COUNT() FROM devices", "COUNT() is not supported by localhub (at column 8)"),
        ("SELECT * FROM devices GROUP BY status", "GROUP BY is not supported by localhub"),
        ("SELECT TOP * FROM devices", "unexpected '*' at column 12; expected a whole number"),
        ("SELECT TOP -1 * FROM devices", "unexpected '-1' at column 12"),
        ("SELECT TOP 1.5 * FROM devices", "unexpected '1.5' at column 12"),
        ("SELECT *, deviceId FROM devices", "unexpected ',' at column 9; expected FROM"),
        ("SELECT deviceId, FROM devices", "unexpected 'FROM' at column 18"),
        ("SELECT tags.a AS FROM devices", "expected a name without dots after AS"),
        ("SELECT tags.a AS b.c FROM devices", "expected a name without dots after AS"),
        ("SELECT tags.x, properties.reported.x FROM devices", "two columns are named 'x'"),
        ("SELECT deviceId, DeviceId FROM devices", "two columns are named 'deviceId'"),
    ],
)
def test_bad_queries_raise_query_error_saying_what_and_where(text, message):
    assert message in error_for(text)


def test_error_position_gives_line_and_column_for_multiline_queries():
    message = error_for("SELECT *\nFROM devices\nWHERE tags.a ! 1")

    assert "at line 3, column 14" in message


def test_long_tokens_are_shortened_in_error_messages():
    message = error_for("SELECT * FROM devices WHERE tags.a = 1 " + "x" * 500)

    assert len(message) < 200


def test_queries_up_to_the_length_limit_are_accepted():
    text = "SELECT * FROM devices WHERE tags.a = ''"
    parse_query(text[:-1] + "x" * (MAX_QUERY_LENGTH - len(text)) + "'")


def test_queries_over_the_length_limit_are_rejected():
    text = "SELECT * FROM devices WHERE tags.a = ''"
    text = text[:-1] + "x" * (MAX_QUERY_LENGTH + 1 - len(text)) + "'"

    assert "8193 characters long" in error_for(text)


def test_non_string_query_is_rejected():
    assert "must be a string" in error_for(["SELECT * FROM devices"])
