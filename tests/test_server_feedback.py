"""The feedback rule (agent.feedback) for every front end: it names its episode, a /bad retracts
what a /good kept, through the memory's repositories, all or nothing; and the HTTP server finds
an episode by the response id its client was answered with, in any process on the home.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agent.feedback import judge
from agent.server.engine import Job, Reply
from agent.server.episodes import EpisodeLog, new_response_id
from agent_support import DATE_TOOLS, call
from cli import agent_cmd
from memory.store import Memory

ROOT = Path(__file__).resolve().parent.parent
INT = {"type": "integer"}
MULTIPLY = {"name": "multiply", "description": "Multiply two integers.",
            "parameters": {"type": "object", "properties": {"a": INT, "b": INT}, "required": ["a", "b"]}}


@pytest.fixture
def mem(home):
    with Memory(home) as m:
        m.add_skill("math", "Arithmetic", [MULTIPLY])
        yield m


def episode(mem, question="What is 6 times 7?", a=6, b=7) -> int:
    made = [{"name": "multiply", "arguments": {"a": a, "b": b}}]
    return mem.record_episode([{"role": "user", "content": question},
                               {"role": "assistant", "content": "", "tool_calls": made}], made, skill="math")


# ---- the rule --------------------------------------------------------------------------------

def test_good_then_bad_retracts_through_the_repository(mem):
    eid = episode(mem)
    good = judge(mem, eid, "good")
    assert good["outcome"] == "success" and mem.demonstration(good["demonstration_id"])["episode_id"] == eid
    bad = judge(mem, eid, "bad", note="wrong")
    assert bad["retracted"] == [good["demonstration_id"]]
    assert mem.demonstrations("math") == [] and mem.unlearned_demonstrations() == []
    assert mem.episode(eid)["outcome"] == "failure" and mem.episode(eid)["note"] == "wrong"


def test_a_failed_retraction_changes_nothing(mem, monkeypatch):
    eid = episode(mem)
    demo_id = judge(mem, eid, "good")["demonstration_id"]

    def broken(episode_id):
        with mem.write() as db:  # part of the work done, then a failure
            db.execute("DELETE FROM demonstrations WHERE id = ?", [demo_id])
            raise RuntimeError("disk gone")

    monkeypatch.setattr(mem.demo_repo, "retract", broken)
    with pytest.raises(RuntimeError, match="disk gone"):
        judge(mem, eid, "bad")
    assert mem.episode(eid)["outcome"] == "success"  # the outcome went back with it
    assert [d["id"] for d in mem.demonstrations("math")] == [demo_id]


def test_a_refused_teach_changes_nothing(mem):
    eid = episode(mem)
    with pytest.raises(ValueError, match="arguments"):
        judge(mem, eid, "bad", tool_calls=[{"name": "multiply", "arguments": {"a": "six"}}])
    assert mem.episode(eid)["outcome"] == "unknown" and mem.demonstrations("math") == []


def test_a_bad_keeps_a_taught_correction(mem):
    eid = episode(mem, a=6, b=8)
    taught = judge(mem, eid, tool_calls=[{"name": "multiply", "arguments": {"a": 6, "b": 7}}])
    assert taught["outcome"] == "failure" and taught["taught_id"] is not None
    assert judge(mem, eid, "bad")["retracted"] == []
    assert [d["id"] for d in mem.demonstrations("math")] == [taught["taught_id"]]


def test_a_good_that_cannot_become_a_demonstration_still_judges(mem):
    eid = mem.record_episode([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
                             answer="hi")
    out = judge(mem, eid, "good")
    assert out["outcome"] == "success" and out["demonstration_id"] is None and "not kept" in out["note"]
    assert mem.episode(eid)["outcome"] == "success"


@pytest.mark.parametrize("ident", [None, "3", 2.0, True])
def test_feedback_must_name_its_episode_by_id(mem, ident):
    episode(mem)
    with pytest.raises(ValueError, match="name its episode"):
        judge(mem, ident, "good")  # type: ignore[arg-type]
    assert mem.demonstrations("math") == []


def test_an_unknown_episode_is_named(mem):
    with pytest.raises(KeyError, match="episode 99"):
        judge(mem, 99, "good")


def test_no_raw_delete_outside_memory():
    """Retraction (and every other delete) goes through memory's repositories."""
    hits = [f"{p.relative_to(ROOT)}:{n}" for d in ("agent", "cli") for p in sorted((ROOT / d).rglob("*.py"))
            for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"\bDELETE\s+FROM\b", line, re.I)]
    assert hits == []


# ---- the HTTP server's response ids ---------------------------------------------------------

def job(question: str) -> Job:
    return Job(messages=[{"role": "user", "content": question}], tools=[MULTIPLY], choice="required",
               version=None, options={})


def reply(a: int, b: int) -> Reply:
    return Reply(content="", calls=[{"id": "call_1", "name": "multiply", "arguments": json.dumps({"a": a, "b": b})}],
                 finish="tool_calls", usage={}, version="tiny")


def test_the_response_id_names_its_episode_in_any_process(mem):
    log = EpisodeLog(mem)
    rids = [new_response_id() for _ in range(3)]
    eids = [log.record(rid, job(f"What is {i} times 3?"), reply(i, 3)) for i, rid in enumerate(rids)]
    assert all(isinstance(e, int) for e in eids)
    for rid, eid in zip(rids, eids, strict=True):
        assert mem.episode(eid)["meta"]["response_id"] == rid
        assert log.resolve(rid) == eid
        assert EpisodeLog(mem).resolve(rid) == eid  # another server on this home: from memory
        assert mem.episode_by_response_id(rid) == eid
    assert log.resolve(f" {rids[1]} ") == eids[1]
    assert log.resolve(eids[2]) == eids[2] and log.resolve(str(eids[2])) == eids[2]
    assert log.resolve(new_response_id()) is None and log.resolve("nonsense") is None
    ep = mem.episode(eids[1])
    assert ep["learned_turn"] == 1 and ep["tool_calls"] == [{"name": "multiply", "arguments": {"a": 1, "b": 3}}]
    assert judge(mem, log.resolve(rids[1]), "good")["demonstration_id"] is not None
    assert mem.episode(eids[0])["outcome"] == "unknown" and mem.episode(eids[2])["outcome"] == "unknown"


# ---- chat: /good /bad /teach judge this chat's own episode ------------------------------------

def test_chat_feedback_judges_only_its_own_episode(tiny_home, script):
    with Memory(tiny_home) as m:
        m.add_skill("date_math", "Calendar arithmetic", DATE_TOOLS)
        other = m.record_episode(  # another process's episode, the newest in the memory
            [{"role": "user", "content": "What weekday is 2024-01-01?"},
             {"role": "assistant", "content": "", "tool_calls": [{"name": "weekday_of", "arguments": {"date": "2024-01-01"}}]}],
            [{"name": "weekday_of", "arguments": {"date": "2024-01-01"}}], skill="date_math")
    script += [call("weekday_of", date="2024-07-04"), "A Thursday."]
    session = "\n".join([
        "/good",
        '/teach {"name": "weekday_of", "arguments": {"date": "2024-01-01"}}',
        "/bad",
        "What weekday is 2024-07-04?",
        "/good",
        "/bad took it back",
        "/quit",
    ]) + "\n"
    app = typer.Typer()
    app.command()(agent_cmd.chat)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["chat", "--skill", "date_math", "--home", str(tiny_home)], input=session)
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("no episode in this chat yet to judge") == 3
    mine = other + 1
    assert f"episode {mine} marked success; kept as demonstration" in out
    kept = int(re.search(rf"episode {mine} marked success; kept as demonstration (\d+)", out).group(1))
    assert f"episode {mine} marked failure; demonstration {kept} retracted" in out
    with Memory(tiny_home) as m:
        assert m.episode(other)["outcome"] == "unknown"
        assert m.episode(mine)["outcome"] == "failure" and m.episode(mine)["note"] == "took it back"
        assert m.demonstrations("date_math") == []
