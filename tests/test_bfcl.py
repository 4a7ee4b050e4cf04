"""skills.bfcl: schema normalisation, and importing packs from the real BFCL v4 files."""

from __future__ import annotations

import importlib.util
import json

import pytest

from skills import bfcl
from skills.bfcl import BfclError, import_bfcl, list_bfcl_functions, normalize_schema
from skills.checker import check_calls
from skills.pack import SkillPack, first_choice

HAVE_BFCL = importlib.util.find_spec("bfcl_eval") is not None
needs_bfcl = pytest.mark.skipif(not HAVE_BFCL, reason="pip install --no-deps bfcl-eval==2026.3.23")


def test_normalize_schema_maps_bfcl_types_recursively():
    schema = {
        "type": "dict",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "description": "a parameter called 'type' is left alone"},
            "ratio": {"type": "float"},
            "pair": {"type": "tuple", "items": {"type": "float"}},
            "blob": {"type": "any", "description": "anything"},
            "opts": {"type": "dict", "properties": {"deep": {"type": "array", "items": {"type": "dict", "properties": {}}}}},
            "when": {"type": "string", "default": None},
            "kind": {"type": "string", "enum": ["a", "b"], "default": None},
        },
    }
    assert normalize_schema(schema) == {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "description": "a parameter called 'type' is left alone"},
            "ratio": {"type": "number"},
            "pair": {"type": "array", "items": {"type": "number"}},
            "blob": {"description": "anything"},
            "opts": {"type": "object", "properties": {"deep": {"type": "array", "items": {"type": "object", "properties": {}}}}},
            "when": {"type": ["string", "null"], "default": None},
            "kind": {"type": ["string", "null"], "enum": ["a", "b", None], "default": None},
        },
    }
    assert schema["type"] == "dict"  # the input is not modified


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(bfcl, "PACKAGE", "bfcl_eval_not_installed_here")
    with pytest.raises(BfclError, match=r"install it with: pip install --no-deps bfcl-eval==2026\.3\.23"):
        list_bfcl_functions("live_multiple")


@needs_bfcl
def test_list_functions_counts_single_call_queries():
    top = list_bfcl_functions("live_multiple")
    assert top[:3] == [("Events_3_FindEvents", 84), ("Movies_3_FindMovies", 76), ("Music_3_LookupMusic", 62)]
    counts = [c for _, c in top]
    assert counts == sorted(counts, reverse=True)
    assert sum(counts) == 1053  # every live_multiple query is a single call


@needs_bfcl
def test_unknown_category_lists_the_known_ones():
    with pytest.raises(BfclError, match=r"no BFCL category 'live_nope' with answers \(known: .*live_multiple, "):
        list_bfcl_functions("live_nope")


@needs_bfcl
def test_import_builds_a_valid_disjoint_pack():
    pack = import_bfcl("live_multiple", function="Events_3_FindEvents", train=20, eval=10, seed=1)
    assert isinstance(pack, SkillPack)
    assert pack.name == "Events_3_FindEvents"
    assert [t["name"] for t in pack.tools] == ["Events_3_FindEvents"]  # target only, no distractors
    params = pack.tools[0]["parameters"]
    assert params["type"] == "object" and params["required"] == ["event_type", "city"]
    assert len(pack.demonstrations) == 20 and len(pack.eval) == 10
    demo_msgs = {json.dumps(d["messages"]) for d in pack.demonstrations}
    eval_msgs = {json.dumps(c["messages"]) for c in pack.eval}
    assert len(demo_msgs) == 20 and len(eval_msgs) == 10 and not demo_msgs & eval_msgs
    SkillPack.from_dict(pack.to_dict())  # round-trips through validation
    for d in pack.demonstrations:
        (call,) = d["tool_calls"]
        assert call["name"] == "Events_3_FindEvents"
        assert set(call["arguments"]) >= {"event_type", "city"}
    for c in pack.eval:  # the ground truth's first choice is judged correct by the checker
        calls = [{"name": e["name"], "arguments": first_choice(e["arguments"])} for e in c["expected"]]
        assert check_calls(calls, c["expected"], pack.tools).correct


@needs_bfcl
def test_import_is_seeded():
    a = import_bfcl(function="Movies_3_FindMovies", train=10, eval=5, seed=3)
    b = import_bfcl(function="Movies_3_FindMovies", train=10, eval=5, seed=3)
    c = import_bfcl(function="Movies_3_FindMovies", train=10, eval=5, seed=4)
    assert a.dumps() == b.dumps()
    assert a.demonstrations != c.demonstrations


@needs_bfcl
def test_demonstrations_take_first_values_and_omit_optional_arguments():
    pack = import_bfcl(function="Music_3_LookupMusic", train=40, eval=0, seed=0)
    truth = {
        json.dumps(e["question"][0]): e["ground_truth"][0]["Music_3_LookupMusic"]
        for e in bfcl.load_entries("live_multiple")
        if "Music_3_LookupMusic" in e["ground_truth"][0]
    }
    omitted = 0
    for d in pack.demonstrations:
        gt = truth[json.dumps(d["messages"])]
        assert d["tool_calls"][0]["arguments"] == {k: v[0] for k, v in gt.items() if "" not in v}
        omitted += sum("" in v for v in gt.values())
    assert omitted > 0  # the rule was exercised: BFCL marks 'dontcare' answers optional


@needs_bfcl
def test_system_messages_are_kept():
    pack = import_bfcl(function="get_service_providers", train=15, eval=4, seed=0)
    convs = [d["messages"] for d in pack.demonstrations] + [c["messages"] for c in pack.eval]
    with_system = [m for m in convs if m[0]["role"] == "system"]
    assert with_system, "get_service_providers has queries with a system message"
    assert all([x["role"] for x in m] == ["system", "user"] for m in with_system)


@needs_bfcl
def test_too_few_queries_says_how_many_and_lists_top_functions():
    with pytest.raises(BfclError) as info:
        import_bfcl(function="Events_3_FindEvents", train=80, eval=10)
    msg = str(info.value)
    assert msg.startswith(
        "'Events_3_FindEvents' has 82 usable single-call queries in live_multiple (84 in all); "
        "asked for train 80 + eval 10 = 90. Functions with the most single-call queries: "
        "Events_3_FindEvents (84), Movies_3_FindMovies (76), "
    )
    with pytest.raises(BfclError, match=r"^'no_such_fn' has 0 usable"):
        import_bfcl(function="no_such_fn", train=1, eval=1)


def test_demonstration_arguments_follow_the_schema_order_the_grammar_emits():
    from agent.constrain import lark_grammar  # noqa: F401  (the grammar this order serves)
    from skills.bfcl import in_schema_order

    tool = {"name": "find", "description": "", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "date": {"type": "string"}, "event_type": {"type": "string"}}}}
    got = in_schema_order(tool, {"event_type": "Music", "city": "Los Angeles, CA", "date": "2023-04-07"})
    assert list(got) == ["city", "date", "event_type"]
    assert got == {"event_type": "Music", "city": "Los Angeles, CA", "date": "2023-04-07"}
    assert list(in_schema_order(tool, {"zz": 1, "date": "x"})) == ["date", "zz"]  # unknown keys last


@needs_bfcl
def test_imported_demonstrations_are_in_schema_order():
    pack = import_bfcl(function="Events_3_FindEvents", train=6, eval=2)
    order = list(pack.tools[0]["parameters"]["properties"])
    for demo in pack.demonstrations:
        keys = list(demo["tool_calls"][0]["arguments"])
        assert keys == [k for k in order if k in keys]


@needs_bfcl
def test_siblings_offer_the_other_functions_of_the_service_and_a_sibling_call_is_wrong():
    pack = import_bfcl(function="Music_3_LookupMusic", train=10, eval=5, seed=0, siblings=True)
    assert [t["name"] for t in pack.tools] == ["Music_3_LookupMusic", "Music_3_PlayMedia"]
    assert all(d["tool_calls"][0]["name"] == "Music_3_LookupMusic" for d in pack.demonstrations)
    plain = import_bfcl(function="Music_3_LookupMusic", train=10, eval=5, seed=0)
    assert plain.demonstrations == pack.demonstrations and plain.eval == pack.eval  # same split
    case = pack.eval[0]
    args = first_choice(case["expected"][0]["arguments"])
    assert check_calls([{"name": "Music_3_LookupMusic", "arguments": args}], case["expected"], pack.tools).correct
    assert not check_calls([{"name": "Music_3_PlayMedia", "arguments": {"track": "x"}}], case["expected"], pack.tools).correct


@needs_bfcl
def test_siblings_need_a_service_with_other_functions():
    with pytest.raises(BfclError, match="has no service prefix"):
        import_bfcl(function="get_service_providers", train=5, eval=2, siblings=True)
    with pytest.raises(BfclError, match="the only function of service Movies_3"):
        import_bfcl(function="Movies_3_FindMovies", train=5, eval=2, siblings=True)
