"""Export → import round trips, all-or-nothing import, and the `memory` command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.memory_cmd import app
from memory.store import Memory, ValidationError

EVENTS = {
    "name": "Events_3_FindEvents",
    "description": "Find cultural events",
    "parameters": {"type": "object",
                   "properties": {"event_type": {"type": "string"}, "city": {"type": "string"},
                                  "date": {"type": "string"}},
                   "required": ["event_type", "city"]},
}
SHOP = {"name": "add_to_cart", "description": "", "parameters": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}, "required": ["sku"]}}

# What identifies a demonstration and where it came from; ids and episode links are local.
PORTABLE = ("skill", "messages", "tool_calls", "content", "source", "provenance", "duplicates", "fingerprint", "created_at")


def portable(rows: list[dict]) -> list[dict]:
    return [{k: r[k] for k in PORTABLE} for r in rows]


@pytest.fixture
def source(tmp_path):
    m = Memory(tmp_path / "a")
    m.add_skill("events", "Find and book events", [EVENTS])
    m.add_skill("shop", "Shopping", [SHOP])
    m.add_demonstration("events", [{"role": "user", "content": "Jazz in Berlin on Friday? ünïcode ✓"}],
                        [{"name": "Events_3_FindEvents", "arguments": {"event_type": "Music", "city": "Berlin", "date": "2026-12-04"}}],
                        provenance={"pack": "events.json"})
    m.add_demonstration("events", [{"role": "user", "content": "Jazz in Berlin on Friday? ünïcode ✓"}],
                        [{"name": "Events_3_FindEvents", "arguments": {"city": "Berlin", "event_type": "Music", "date": "2026-12-04"}}])
    multi = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Two apples"},
             {"role": "assistant", "content": None, "tool_calls": [{"name": "add_to_cart", "arguments": {"sku": "apple", "qty": 2}}]},
             {"role": "tool", "content": "ok", "name": "add_to_cart"}]
    m.add_demonstration("shop", multi, None, "Added two apples.", source="taught")
    eid = m.record_episode([{"role": "user", "content": "One pear"}], [{"name": "add_to_cart", "arguments": {"sku": "pear"}}],
                           outcome="success", model_version="v0002")
    m.promote_episode(eid, "shop")
    m.add_eval_case("events", [{"role": "user", "content": "Theatre in Paris?"}],
                    [{"name": "Events_3_FindEvents", "arguments": {"event_type": ["Theater"], "city": ["Paris", "Paris, France"]}}])
    run = m.start_run("sdft", {})
    m.mark_used([1], run)
    yield m
    m.close()


def test_export_then_import_into_an_empty_home_gives_identical_rows(source, tmp_path):
    first = tmp_path / "first.jsonl"
    assert source.export_jsonl(first) == 2 + 3 + 1  # skills + demonstrations + eval cases
    with Memory(tmp_path / "b") as target:
        assert target.import_jsonl(first) == {"skills": 2, "demonstrations": 3, "duplicates": 0,
                                              "eval_cases": 1, "eval_duplicates": 0}
        assert portable(target.demonstrations()) == portable(source.demonstrations())
        assert target.list_skills()[0]["tools"] == source.list_skills()[0]["tools"]
        assert [t["name"] for t in target.tools_for()] == [t["name"] for t in source.tools_for()]
        assert [(c["messages"], c["expected"], c["created_at"]) for c in target.eval_cases("events")] == \
               [(c["messages"], c["expected"], c["created_at"]) for c in source.eval_cases("events")]
        # Local links do not travel: no episode here, no run has used them here.
        assert all(d["episode_id"] is None and d["used_in_runs"] == [] for d in target.demonstrations())
        assert target.recall("jazz berlin", k=1)[0]["tool_calls"][0]["arguments"]["city"] == "Berlin"
        second = tmp_path / "second.jsonl"
        target.export_jsonl(second)
    assert second.read_bytes() == first.read_bytes()


def test_import_twice_adds_nothing(source, tmp_path):
    path = tmp_path / "x.jsonl"
    source.export_jsonl(path)
    with Memory(tmp_path / "b") as target:
        target.import_jsonl(path)
        before = target.demonstrations()
        counts = target.import_jsonl(path)
        assert (counts["demonstrations"], counts["duplicates"], counts["eval_cases"], counts["eval_duplicates"]) == (0, 3, 0, 1)
        assert target.demonstrations() == before


def test_a_bad_line_names_itself_and_nothing_is_written(source, tmp_path):
    path = tmp_path / "x.jsonl"
    source.export_jsonl(path)
    lines = path.read_text().splitlines()
    bad = json.loads(lines[4])
    bad["tool_calls"] = [{"name": "add_to_cart", "arguments": {"qty": "two"}}]
    lines[4] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    with Memory(tmp_path / "b") as target:
        with pytest.raises(ValidationError) as info:
            target.import_jsonl(path)
        assert str(info.value).splitlines() == [
            "x.jsonl:5: demonstration.tool_calls[0].arguments.sku: required argument is missing",
            "x.jsonl:5: demonstration.tool_calls[0].arguments.qty: 'two' is not of type 'integer'",
        ]
        assert target.list_skills() == [] and target.demonstrations() == []
        path.write_text('{"type": "header", "format": "sdft-agent-memory", "version": 1}\n{"type": "demo"}\n')
        with pytest.raises(ValidationError, match=r"^x\.jsonl:2: type: must be one of header, skill"):
            target.import_jsonl(path)
        path.write_text('{"type": "demonstration", "skill": "nope", "messages": []}\n')
        with pytest.raises(ValidationError, match=r"^x\.jsonl:1: demonstration\.skill: unknown skill 'nope'"):
            target.import_jsonl(path)
        path.write_text("{not json\n")
        with pytest.raises(ValidationError, match=r"^x\.jsonl:1: not valid JSON"):
            target.import_jsonl(path)


def test_import_uses_skills_already_in_the_home(source, tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"type": "demonstration", "skill": "shop",
                                "messages": [{"role": "user", "content": "Three kiwis"}],
                                "tool_calls": [{"name": "add_to_cart", "arguments": {"sku": "kiwi", "qty": 3}}]}) + "\n")
    assert source.import_jsonl(path)["demonstrations"] == 1
    assert source.demonstrations("shop")[-1]["source"] == "imported"


# -- command line ---------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_stats_search_export_import(source, tmp_path):
    home = str(source.home)
    out = runner.invoke(app, ["stats", "--home", home])
    assert out.exit_code == 0, out.output
    assert "demonstrations" in out.output and "skill events" in out.output
    out = runner.invoke(app, ["stats", "--json", "--home", home])
    assert json.loads(out.output)["demonstrations"] == 3
    out = runner.invoke(app, ["search", "jazz concerts Berlin", "-k", "1", "--home", home])
    assert out.exit_code == 0 and "Events_3_FindEvents" in out.output and "Jazz in Berlin" in out.output
    out = runner.invoke(app, ["search", "zebra", "--home", home])
    assert "no matching demonstrations" in out.output
    path = tmp_path / "cli.jsonl"
    out = runner.invoke(app, ["export", str(path), "--home", home])
    assert out.exit_code == 0 and "wrote 6 records" in out.output
    out = runner.invoke(app, ["import", str(path), "--home", str(tmp_path / "c")])
    assert out.exit_code == 0 and "imported 2 skills, 3 demonstrations" in out.output
    assert Memory(tmp_path / "c").stats()["demonstrations"] == 3


def test_cli_errors_are_one_line(source, tmp_path):
    out = runner.invoke(app, ["search", "x", "--skill", "nope", "--home", str(source.home)])
    assert out.exit_code == 1 and "unknown skill 'nope'" in out.output
    path = tmp_path / "bad.jsonl"
    path.write_text("[1]\n")
    out = runner.invoke(app, ["import", str(path), "--home", str(source.home)])
    assert out.exit_code == 1 and "bad.jsonl:1: type: must be one of" in out.output and "Traceback" not in out.output
