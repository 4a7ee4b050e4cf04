"""skills.checker: one test per matching rule (docs/ARCHITECTURE.md, "Judging a call")."""

from __future__ import annotations

import pytest

from skills.checker import CheckResult, check_calls, value_matches

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["C", "F"]},
            "hours": {"type": "array", "items": {"type": "integer"}},
            "prefs": {"type": "object"},
        },
        "required": ["city"],
    },
}
SEARCH = {
    "name": "search",
    "description": "Search",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
}
TOOLS = [WEATHER, SEARCH]


def call(name, **arguments):
    return {"name": name, "arguments": arguments}


def check(generated, expected):
    return check_calls(generated, expected, TOOLS)


def test_exact_match_is_correct():
    result = check([call("get_weather", city="Berlin")], [call("get_weather", city=["Berlin"])])
    assert result == CheckResult(True, "")
    assert bool(result) is True


def test_wrong_function_name():
    result = check([call("search", q="Berlin")], [call("get_weather", city=["Berlin"])])
    assert result == CheckResult(False, "called 'search', expected 'get_weather'")


def test_wrong_number_of_calls():
    result = check([], [call("get_weather", city=["Berlin"])])
    assert result == CheckResult(False, "made 0 call(s), expected 1")
    two = [call("get_weather", city="Berlin"), call("get_weather", city="Berlin")]
    assert not check(two, [call("get_weather", city=["Berlin"])]).correct


def test_several_calls_match_in_any_order():
    expected = [call("get_weather", city=["Berlin"]), call("search", q=["news"])]
    generated = [call("search", q="news"), call("get_weather", city="Berlin")]
    assert check(generated, expected).correct


def test_several_calls_need_a_one_to_one_assignment_not_first_fit():
    # first-fit would give generated[0] (days=1) to expected[0] and strand generated[1]
    expected = [call("get_weather", city=["Rome"], days=[1, 2]), call("get_weather", city=["Rome"], days=[1])]
    generated = [call("get_weather", city="Rome", days=1), call("get_weather", city="Rome", days=2)]
    assert check(generated, expected).correct


def test_several_calls_same_call_twice_cannot_cover_two_expected():
    expected = [call("get_weather", city=["Rome"]), call("get_weather", city=["Oslo"])]
    generated = [call("get_weather", city="Rome"), call("get_weather", city="Rome")]
    result = check(generated, expected)
    assert not result.correct
    assert result.reason.startswith("no call matches expected call 1 (get_weather): call 0: ")


def test_required_argument_missing_is_wrong():
    result = check([call("get_weather", days=2)], [call("get_weather", city=["", "Berlin"], days=[2])])
    assert result == CheckResult(False, "get_weather: required argument 'city' is missing")


def test_argument_outside_schema_is_wrong():
    result = check([call("get_weather", city="Berlin", country="DE")], [call("get_weather", city=["Berlin"])])
    assert result == CheckResult(False, "get_weather: 'country' is not a parameter of the tool")


def test_argument_in_schema_but_not_expected_is_wrong():
    result = check([call("get_weather", city="Berlin", days=3)], [call("get_weather", city=["Berlin"])])
    assert result == CheckResult(False, "get_weather: argument 'days' was not expected")


def test_value_must_be_among_acceptable():
    result = check([call("get_weather", city="Paris")], [call("get_weather", city=["Berlin", "Berlin, DE"])])
    assert result == CheckResult(False, "get_weather: city='Paris' is not one of ['Berlin', 'Berlin, DE']")
    assert check([call("get_weather", city="Berlin, DE")], [call("get_weather", city=["Berlin", "Berlin, DE"])])


def test_strings_compare_after_trim_and_casefold_only():
    expected = [call("get_weather", city=["Straße Berlin"])]
    assert check([call("get_weather", city="  STRASSE berlin ")], expected).correct  # casefold: ß -> ss
    assert not check([call("get_weather", city="Strasse-Berlin")], expected).correct  # punctuation counts


def test_numbers_compare_by_value_but_bool_is_not_a_number():
    assert value_matches(3, 3.0) and value_matches(3.0, 3)
    assert not value_matches(True, 1)
    assert not value_matches(1, True)
    assert not value_matches(0, False)
    assert not value_matches("3", 3)
    assert not value_matches(3, "3")
    assert value_matches(False, False) and not value_matches(False, True)
    assert check([call("get_weather", city="X", days=2.0)], [call("get_weather", city=["x"], days=[2])]).correct


def test_none_matches_only_none():
    assert value_matches(None, None)
    assert not value_matches("", None)
    assert not value_matches(None, "")


def test_lists_compare_elementwise_in_order():
    assert value_matches([" A", "b"], ["a", "B"])
    assert value_matches([1, 2.0], [1.0, 2])
    assert not value_matches([2, 1], [1, 2])
    assert not value_matches([1, 2], [1, 2, 3])
    assert not value_matches([True], [1])
    assert not value_matches("a", ["a"])
    expected = [call("get_weather", city=["x"], hours=[[9, 12], [9, 12, 15]])]
    assert check([call("get_weather", city="x", hours=[9, 12, 15])], expected).correct
    assert not check([call("get_weather", city="x", hours=[12, 9])], expected).correct


def test_dicts_use_the_possible_answer_form_recursively():
    acceptable = {"size": ["large", "L"], "milk": ["", "oat"], "shots": [2]}
    assert value_matches({"size": " Large", "shots": 2.0}, acceptable)  # milk may be omitted
    assert value_matches({"size": "l", "milk": "OAT", "shots": 2}, acceptable)
    assert not value_matches({"size": "large"}, acceptable)  # shots missing
    assert not value_matches({"size": "large", "shots": 2, "sugar": 1}, acceptable)  # unexpected key
    assert not value_matches({"size": "small", "shots": 2}, acceptable)
    assert not value_matches("large", acceptable)
    # a list of objects (BFCL's list-of-dict answers): element-wise, each in possible-answer form
    assert value_matches([{"a": 1}, {"a": 2}], [{"a": [1]}, {"a": [2, 3]}])
    assert not value_matches([{"a": 2}, {"a": 1}], [{"a": [1]}, {"a": [2, 3]}])
    expected = [call("get_weather", city=["x"], prefs=[{"wind": ["", True]}])]
    assert check([call("get_weather", city="x", prefs={})], expected).correct
    assert not check([call("get_weather", city="x", prefs={"wind": False})], expected).correct


def test_empty_string_means_the_argument_may_be_omitted():
    expected = [call("get_weather", city=["Berlin"], unit=["", "C"])]
    assert check([call("get_weather", city="Berlin")], expected).correct
    assert check([call("get_weather", city="Berlin", unit="c")], expected).correct
    assert not check([call("get_weather", city="Berlin", unit="F")], expected).correct


def test_expected_argument_without_empty_string_must_be_given():
    result = check([call("get_weather", city="Berlin")], [call("get_weather", city=["Berlin"], unit=["C"])])
    assert result == CheckResult(False, "get_weather: argument 'unit' is missing")


def test_arguments_must_be_an_object():
    result = check([{"name": "get_weather", "arguments": '{"city": "Berlin"}'}], [call("get_weather", city=["Berlin"])])
    assert result == CheckResult(False, "get_weather: arguments must be an object, got str")
    assert not check(["get_weather"], [call("get_weather", city=["Berlin"])]).correct


def test_expected_tool_must_be_among_tools():
    with pytest.raises(ValueError, match="'nowhere', which is not among the tools"):
        check([call("nowhere")], [call("nowhere")])


def test_no_calls_expected_and_none_made():
    assert check([], []).correct
    assert not check([call("search", q="x")], []).correct
