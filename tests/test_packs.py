"""skills.pack validation rule by rule, the bundled packs, their tools, and install_pack."""

from __future__ import annotations

import copy
import json

import pytest

from skills.checker import check_calls
from skills.install import install_pack
from skills.pack import (
    PackError,
    SkillPack,
    bundled_pack,
    bundled_packs,
    first_choice,
    validate_pack,
)
from skills.packs import build_packs
from skills.tools import catalog, date_math, implementation, unit_convert

TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["C", "F"]},
            "prefs": {"type": "object", "properties": {"wind": {"type": "boolean"}}},
        },
        "required": ["city"],
    },
}


def user(text):
    return [{"role": "user", "content": text}]


def good_pack() -> dict:
    return {
        "name": "weather",
        "description": "Weather lookups",
        "tools": [copy.deepcopy(TOOL)],
        "demonstrations": [
            {"messages": user("weather in Berlin?"), "tool_calls": [{"name": "get_weather", "arguments": {"city": "Berlin"}}]},
            {"messages": user("Oslo in F"), "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "F"}}]},
        ],
        "eval": [
            {"messages": user("how warm is Rome"), "expected": [{"name": "get_weather", "arguments": {"city": ["Rome"], "unit": ["", "C"]}}]},
        ],
    }


def errors_of(d) -> list[str]:
    with pytest.raises(PackError) as info:
        SkillPack.from_dict(d)
    assert info.value.errors == validate_pack(d)
    return info.value.errors


# ---------------------------------------------------------------- loading and saving


def test_valid_pack_loads_and_round_trips(tmp_path):
    pack = SkillPack.from_dict(good_pack())
    assert (pack.name, len(pack.tools), len(pack.demonstrations), len(pack.eval)) == ("weather", 1, 2, 1)
    path = pack.save(tmp_path / "weather.json")
    assert [p.name for p in tmp_path.iterdir()] == ["weather.json"]  # no temporary file left behind
    assert path.read_text(encoding="utf-8") == pack.dumps()
    assert SkillPack.load(path) == pack
    assert pack.to_dict() == good_pack()


def test_openai_wrapped_tool_is_flattened():
    d = good_pack()
    d["tools"] = [{"type": "function", "function": copy.deepcopy(TOOL)}]
    assert SkillPack.from_dict(d).tools == [TOOL]


def test_from_dict_copies_its_input():
    d = good_pack()
    pack = SkillPack.from_dict(d)
    d["demonstrations"][0]["messages"][0]["content"] = "changed"
    assert pack.demonstrations[0]["messages"][0]["content"] == "weather in Berlin?"


def test_save_refuses_an_invalid_pack_and_keeps_the_old_file(tmp_path):
    pack = SkillPack.from_dict(good_pack())
    path = pack.save(tmp_path / "weather.json")
    before = path.read_text()
    pack.demonstrations.append({"messages": user("x"), "tool_calls": [{"name": "nope", "arguments": {}}]})
    with pytest.raises(PackError):
        pack.save(path)
    assert path.read_text() == before


def test_load_reports_bad_json_with_the_path(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(PackError) as info:
        SkillPack.load(path)
    assert info.value.errors[0].startswith("not valid JSON: ")
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- validation rules


def test_pack_must_be_an_object():
    assert errors_of([1]) == ["pack: expected an object, got list"]


def test_unknown_top_level_field():
    d = good_pack()
    d["demonstration"] = []
    assert errors_of(d) == ["demonstration: unknown field (known: name, description, tools, demonstrations, eval)"]


def test_name_and_description():
    d = good_pack()
    d["name"] = "my skill"
    del d["description"]
    assert errors_of(d) == [
        "name: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ (got 'my skill')",
        "description: a string is required",
    ]


def test_tools_must_be_a_non_empty_list():
    d = good_pack()
    d["tools"] = []
    d["demonstrations"] = d["eval"] = []
    assert errors_of(d) == ["tools: a non-empty list is required"]


def test_tool_schema_must_be_json_schema_and_its_calls_are_not_rechecked():
    d = good_pack()
    d["tools"][0]["parameters"]["type"] = "dict"
    errors = errors_of(d)
    assert errors == [
        "tools[0].parameters: must be a JSON Schema with \"type\": \"object\" (got 'dict'); "
        "BFCL's \"dict\" must be normalised to \"object\""
    ]


def test_duplicate_tool_names():
    d = good_pack()
    d["tools"].append(copy.deepcopy(TOOL))
    assert errors_of(d) == ["tools[1].name: the tool name 'get_weather' appears more than once"]


def test_demonstration_missing_required_argument():
    d = good_pack()
    d["demonstrations"][1]["tool_calls"][0]["arguments"] = {"unit": "F"}
    assert errors_of(d) == ["demonstrations[1].tool_calls[0].arguments.city: required argument is missing"]


def test_demonstration_argument_outside_schema_and_bad_value():
    d = good_pack()
    d["demonstrations"][0]["tool_calls"][0]["arguments"] = {"city": "Berlin", "unit": "K", "country": "DE"}
    assert errors_of(d) == [
        "demonstrations[0].tool_calls[0].arguments.country: not a parameter of 'get_weather' (known: city, prefs, unit)",
        "demonstrations[0].tool_calls[0].arguments.unit: 'K' is not one of ['C', 'F']",
    ]


def test_demonstration_calls_a_tool_outside_the_pack():
    d = good_pack()
    d["demonstrations"][0]["tool_calls"][0]["name"] = "get_news"
    assert errors_of(d) == [
        "demonstrations[0].tool_calls[0].name: 'get_news' is not a tool of skill 'weather' (its tools: get_weather)"
    ]


def test_demonstration_shape():
    d = good_pack()
    d["demonstrations"][0] = {"messages": [{"role": "assistant", "content": "hi"}], "tool_calls": [], "extra": 1}
    assert errors_of(d) == [
        "demonstrations[0].messages[0].role: the messages end just before the assistant turn to learn, so the "
        "last one must be 'user' or 'tool' (got 'assistant'); move that assistant turn into tool_calls/content",
        "demonstrations[0]: the assistant turn to learn is empty; give tool_calls or content",
        "demonstrations[0].extra: unknown field (known: messages, tool_calls, content)",
    ]


def test_demonstration_with_content_only_is_valid():
    d = good_pack()
    d["demonstrations"].append({"messages": user("thanks!"), "content": "You're welcome."})
    assert validate_pack(d) == []


def test_eval_expected_must_be_a_non_empty_list():
    d = good_pack()
    d["eval"][0]["expected"] = []
    assert errors_of(d) == ["eval[0].expected: a non-empty list of calls is required"]


def test_eval_messages_must_end_with_user():
    d = good_pack()
    d["eval"][0]["messages"].append({"role": "assistant", "content": "ok"})
    assert errors_of(d) == [
        "eval[0].messages[1].role: must be 'user' or 'tool', the turn the assistant answers (got 'assistant')"
    ]


def test_eval_expected_names_a_tool_of_the_pack():
    d = good_pack()
    d["eval"][0]["expected"][0]["name"] = "get_news"
    assert errors_of(d) == ["eval[0].expected[0].name: 'get_news' is not a tool of skill 'weather' (its tools: get_weather)"]


def test_eval_expected_arguments_are_params_with_lists_of_values():
    d = good_pack()
    d["eval"][0]["expected"][0]["arguments"] = {"city": "Rome", "country": ["IT"]}
    assert errors_of(d) == [
        "eval[0].expected[0].arguments.city: must be a non-empty list of acceptable values (BFCL convention), got str",
        "eval[0].expected[0].arguments.country: not a parameter of 'get_weather' (known: city, prefs, unit)",
    ]


def test_eval_expected_required_argument_rules():
    d = good_pack()
    d["eval"][0]["expected"][0]["arguments"] = {"unit": ["C"]}
    assert errors_of(d) == ["eval[0].expected[0].arguments.city: required argument has no acceptable values"]
    d["eval"][0]["expected"][0]["arguments"] = {"city": ["", "Rome"]}
    assert errors_of(d) == [
        'eval[0].expected[0].arguments.city: "" (may be omitted) is not allowed for a required argument'
    ]


def test_eval_expected_values_must_fit_the_schema():
    d = good_pack()
    d["eval"][0]["expected"][0]["arguments"] = {"city": ["Rome", 7], "unit": ["", "c"]}
    assert errors_of(d) == [
        "eval[0].expected[0].arguments.city[1]: 7 is not of type 'string'",
        "eval[0].expected[0].arguments.unit[1]: 'c' is not one of ['C', 'F']",
    ]


def test_eval_expected_only_empty_string():
    d = good_pack()
    d["eval"][0]["expected"][0]["arguments"]["unit"] = [""]
    assert errors_of(d) == ['eval[0].expected[0].arguments.unit: lists only ""; leave the argument out of expected instead']


def test_eval_expected_nested_objects_use_lists_per_key():
    d = good_pack()
    d["eval"][0]["expected"][0]["arguments"]["prefs"] = [{"wind": True}]
    assert errors_of(d) == [
        "eval[0].expected[0].arguments.prefs[0].wind: nested objects list acceptable values per key (a non-empty list)"
    ]
    d["eval"][0]["expected"][0]["arguments"]["prefs"] = [{"wind": ["yes"]}]
    assert errors_of(d) == ["eval[0].expected[0].arguments.prefs[0].wind: 'yes' is not of type 'boolean'"]
    d["eval"][0]["expected"][0]["arguments"]["prefs"] = [{"wind": ["", True]}]
    assert validate_pack(d) == []


def test_eval_case_must_not_repeat_a_demonstration():
    d = good_pack()
    d["eval"][0]["messages"] = user("  Weather in   BERLIN? ")
    assert errors_of(d) == [
        "eval[0].messages: same conversation as demonstrations[0] (held-out cases must not be demonstrations)"
    ]


def test_all_errors_are_reported_at_once():
    d = good_pack()
    d["name"] = ""
    d["demonstrations"][1]["tool_calls"][0]["arguments"] = {}
    d["eval"][0]["expected"][0]["arguments"]["unit"] = ["K"]
    with pytest.raises(PackError) as info:
        SkillPack.from_dict(d, source="w.json")
    assert info.value.errors == [
        "name: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ (got '')",
        "demonstrations[1].tool_calls[0].arguments.city: required argument is missing",
        "eval[0].expected[0].arguments.unit[0]: 'K' is not one of ['C', 'F']",
    ]
    assert str(info.value).startswith("invalid skill pack w.json (3 error(s)):\n  - name: ")
    assert isinstance(info.value, ValueError)


def test_first_choice_turns_possible_answers_into_a_call():
    options = {"city": ["Rome", "Roma"], "unit": ["", "C"], "prefs": [{"wind": [True], "rain": ["", False]}]}
    assert first_choice(options) == {"city": "Rome", "prefs": {"wind": True}}


# ---------------------------------------------------------------- bundled packs

PACK_NAMES = ["catalog", "date_math", "unit_convert"]


def test_bundled_packs_are_listed_and_found():
    assert [p.stem for p in bundled_packs()] == PACK_NAMES
    assert bundled_pack("date_math").name == "date_math.json"
    with pytest.raises(LookupError, match=r"no bundled skill pack 'dates' \(known: catalog, date_math, unit_convert\)"):
        bundled_pack("dates")


@pytest.fixture(scope="module", params=PACK_NAMES)
def pack(request) -> SkillPack:
    return SkillPack.load(bundled_pack(request.param))


def test_bundled_pack_is_valid_and_big_enough(pack):
    assert pack.name == bundled_pack(pack.name).stem
    assert len(pack.demonstrations) >= 30 and len(pack.eval) >= 30
    demo_texts = {d["messages"][-1]["content"].strip().casefold() for d in pack.demonstrations}
    eval_texts = {c["messages"][-1]["content"].strip().casefold() for c in pack.eval}
    assert len(demo_texts) == len(pack.demonstrations) and len(eval_texts) == len(pack.eval)
    assert not demo_texts & eval_texts
    for d in pack.demonstrations:  # single user message -> one call
        assert [m["role"] for m in d["messages"]] == ["user"] and len(d["tool_calls"]) == 1


def test_bundled_pack_covers_every_tool_in_demos_and_eval(pack):
    names = {t["name"] for t in pack.tools}
    assert {d["tool_calls"][0]["name"] for d in pack.demonstrations} == names
    assert {c["expected"][0]["name"] for c in pack.eval} == names


def test_bundled_pack_tools_fit_a_small_context(pack):
    # ~4 characters a token: the tools stay well under the ~400-token prompt budget
    assert len(json.dumps(pack.tools)) < 1200


def test_every_demonstration_runs_through_the_implementation(pack):
    tools = implementation(pack.name)
    for d in pack.demonstrations:
        for c in d["tool_calls"]:
            result = tools[c["name"]](**c["arguments"])
            json.dumps(result)
            if c["name"] == "search_products":
                assert result["products"], d


def test_every_eval_answer_runs_and_passes_the_checker(pack):
    tools = implementation(pack.name)
    for case in pack.eval:
        calls = [{"name": e["name"], "arguments": first_choice(e["arguments"])} for e in case["expected"]]
        assert check_calls(calls, case["expected"], pack.tools).correct
        for c in calls:
            json.dumps(tools[c["name"]](**c["arguments"]))


def test_generator_reproduces_the_files_byte_for_byte():
    built = build_packs.build_all()
    assert [p.name for p in built] == ["unit_convert", "date_math", "catalog"]
    for p in built:
        assert bundled_pack(p.name).read_text(encoding="utf-8") == p.dumps()


# ---------------------------------------------------------------- tool implementations


def test_unit_convert():
    f = unit_convert.convert_units
    assert f(100, "celsius", "fahrenheit") == {"value": 212.0, "unit": "fahrenheit"}
    assert f(300, "kelvin", "celsius") == {"value": 26.85, "unit": "celsius"}
    assert f(1, "mile", "kilometer") == {"value": 1.609344, "unit": "kilometer"}
    assert f(1, "pound", "ounce") == {"value": 16.0, "unit": "ounce"}
    assert f(2, "liter", "milliliter") == {"value": 2000.0, "unit": "milliliter"}
    with pytest.raises(ValueError, match=r"cannot convert mass \(gram\) to length \(meter\)"):
        f(1, "gram", "meter")
    with pytest.raises(ValueError, match="unknown unit 'parsec'"):
        f(1, "parsec", "meter")


def test_date_math():
    assert date_math.add_days("2024-02-28", 1) == {"date": "2024-02-29"}
    assert date_math.add_days("2024-03-01", -1) == {"date": "2024-02-29"}
    assert date_math.days_between("2024-01-01", "2025-01-01") == {"days": 366}
    assert date_math.days_between("2025-01-02", "2025-01-01") == {"days": -1}
    assert date_math.weekday_of("2026-01-01") == {"weekday": "Thursday"}
    with pytest.raises(ValueError, match="not a date in YYYY-MM-DD form: '01/02/2026'"):
        date_math.weekday_of("01/02/2026")


def test_catalog():
    skus = [p["sku"] for p in catalog.search_products("headphones", max_price=60)["products"]]
    assert skus == ["HP-303", "HP-304"]
    skus = [p["sku"] for p in catalog.search_products("headphones", max_price=60, in_stock=True)["products"]]
    assert skus == ["HP-303"]
    assert catalog.get_product("lp101")["sku"] == "LP-101"
    assert catalog.get_product(" lp-104 ") == {
        "sku": "LP-104", "name": "Studio 16 Max", "category": "laptop", "price": 2199.0, "in_stock": True,
    }
    with pytest.raises(ValueError, match="no product with SKU 'ZZ-999'"):
        catalog.get_product("ZZ-999")
    with pytest.raises(ValueError, match="unknown category 'tablet'"):
        catalog.search_products("tablet")


def test_implementation_lookup():
    assert implementation("date_math") is date_math.TOOLS
    assert implementation("no_such_pack") is None
    assert implementation("version_api.VersionApi.get_version") is None


# ---------------------------------------------------------------- install_pack


class FakeMemory:
    """The memory.store.Memory interface install_pack relies on; duplicates by messages."""

    def __init__(self):
        self.log: list[tuple] = []
        self.seen: set[str] = set()

    def add_skill(self, name, description, tools):
        self.log.append(("skill", name, description, len(tools)))

    def add_demonstration(self, skill, messages, tool_calls, content, *, source, provenance):
        key = json.dumps([messages, tool_calls, content])
        created = key not in self.seen
        self.seen.add(key)
        self.log.append(("demo", skill, tool_calls[0]["name"] if tool_calls else None, content, source, provenance))
        return len(self.log), created

    def add_eval_case(self, skill, messages, expected):
        self.log.append(("eval", skill, messages[-1]["content"], expected[0]["name"]))


def test_install_pack_writes_skill_then_demos_then_eval_and_counts_duplicates():
    d = good_pack()
    d["demonstrations"].append(copy.deepcopy(d["demonstrations"][0]))
    mem = FakeMemory()
    counts = install_pack(mem, SkillPack.from_dict(d))
    assert counts == {"demonstrations_added": 2, "duplicates": 1, "eval_cases": 1}
    assert mem.log == [
        ("skill", "weather", "Weather lookups", 1),
        ("demo", "weather", "get_weather", None, "imported", {"pack": "weather", "index": 0}),
        ("demo", "weather", "get_weather", None, "imported", {"pack": "weather", "index": 1}),
        ("demo", "weather", "get_weather", None, "imported", {"pack": "weather", "index": 2}),
        ("eval", "weather", "how warm is Rome", "get_weather"),
    ]


def test_install_pack_validates_first_and_writes_nothing_when_invalid():
    pack = SkillPack.from_dict(good_pack())
    pack.eval[0]["expected"][0]["arguments"]["unit"] = ["K"]
    mem = FakeMemory()
    with pytest.raises(PackError):
        install_pack(mem, pack)
    assert mem.log == []
