"""The episodic memory's behaviour: episodes, promotion, dedup, recall, runs, reports, stats."""

from __future__ import annotations

import threading

import pytest

from memory.store import Memory, NotFoundError, ValidationError

WEATHER = {
    "name": "get_weather",
    "description": "Weather forecast for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]},
}
EVENTS = {
    "name": "Events_3_FindEvents",
    "description": "Find cultural events",
    "parameters": {"type": "object",
                   "properties": {"event_type": {"type": "string"}, "city": {"type": "string"},
                                  "date": {"type": "string"}},
                   "required": ["event_type", "city"]},
}
FLIGHTS = {
    "name": "search_flights",
    "description": "Find flights",
    "parameters": {"type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"}},
                   "required": ["origin", "destination"]},
}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def call(name: str, **arguments) -> list[dict]:
    return [{"name": name, "arguments": arguments}]


@pytest.fixture
def mem(tmp_path):
    m = Memory(tmp_path)
    m.add_skill("weather", "Forecasts", [WEATHER])
    m.add_skill("events", "Find and book events", [EVENTS])
    m.add_skill("travel", "Flights", [FLIGHTS])
    yield m
    m.close()


# -- skills ---------------------------------------------------------------------------------------

def test_add_skill_upserts_and_replaces_the_tool_set(mem):
    first = mem.get_skill("weather")["id"]
    other = dict(WEATHER, name="get_alerts")
    assert mem.add_skill("weather", "Forecasts and alerts", [other, WEATHER]) == first
    skill = mem.get_skill("weather")
    assert skill["description"] == "Forecasts and alerts"
    assert [t["name"] for t in skill["tools"]] == ["get_alerts", "get_weather"]
    mem.add_skill("weather", "Forecasts", [WEATHER])
    assert [t["name"] for t in mem.tools_for("weather")] == ["get_weather"]
    assert [t["name"] for t in mem.tools_for()] == ["Events_3_FindEvents", "search_flights", "get_weather"]
    assert mem.get_skill("nope") is None
    assert [s["name"] for s in mem.list_skills()] == ["events", "travel", "weather"]


def test_tool_schema_property_order_is_kept(mem):
    # The order the model is shown must be the pack's, not alphabetical.
    assert list(mem.tools_for("events")[0]["parameters"]["properties"]) == ["event_type", "city", "date"]


def test_function_wrapped_tools_are_flattened(tmp_path):
    with Memory(tmp_path) as m:
        m.add_skill("w", "", [{"type": "function", "function": WEATHER}])
        assert m.tools_for("w") == [WEATHER]


# -- episodes -------------------------------------------------------------------------------------

def test_record_episode_and_read_it_back(mem):
    msgs = user("Weather in Rome?") + [{"role": "assistant", "content": "Sunny."}]
    eid = mem.record_episode(msgs, [], "Sunny.", model_version="v0003", skill="weather", meta={"latency_ms": 12})
    ep = mem.episode(eid)
    assert ep["messages"] == msgs and ep["answer"] == "Sunny." and ep["skill"] == "weather"
    assert (ep["outcome"], ep["source"], ep["model_version"], ep["meta"]) == ("unknown", "live", "v0003", {"latency_ms": 12})
    assert mem.last_episode()["id"] == eid


def test_set_outcome_with_note(mem):
    eid = mem.record_episode(user("hi"))
    mem.set_outcome(eid, "failure", "called the wrong tool")
    ep = mem.episode(eid)
    assert (ep["outcome"], ep["note"]) == ("failure", "called the wrong tool")
    with pytest.raises(NotFoundError, match="episode 999 does not exist"):
        mem.set_outcome(999, "success")
    with pytest.raises(KeyError):
        mem.episode(999)


def test_record_episodes_in_one_batch(mem):
    ids = mem.record_episodes([{"messages": user(f"q{i}"), "outcome": "success"} for i in range(50)])
    assert ids == list(range(ids[0], ids[0] + 50))
    assert mem.stats()["episodes_by_outcome"] == {"success": 50, "failure": 0, "unknown": 0}


# -- demonstrations -------------------------------------------------------------------------------

def test_exact_duplicate_is_stored_once_and_counted(mem):
    a = mem.add_demonstration("weather", user("Weather in Paris?"), call("get_weather", city="Paris", days=2))
    # Same messages and calls, arguments in another order: the same demonstration.
    b = mem.add_demonstration("weather", user("Weather in Paris?"), [{"name": "get_weather", "arguments": {"days": 2, "city": "Paris"}}])
    c = mem.add_demonstration("weather", user("Weather in Paris?"), call("get_weather", city="Paris", days=2))
    assert a[1] is True and b == (a[0], False) and c == (a[0], False)
    assert len(mem.demonstrations()) == 1
    assert mem.demonstration(a[0])["duplicates"] == 2
    assert mem.stats()["duplicates_seen"] == 2
    # A different call is a different demonstration.
    assert mem.add_demonstration("weather", user("Weather in Paris?"), call("get_weather", city="Paris"))[1] is True


def test_promote_a_tool_calling_episode(mem):
    msgs = [
        {"role": "system", "content": "Be brief."},
        *user("Weather in Rome for 2 days?"),
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": "Rome", "days": 2}}]},
        {"role": "tool", "content": "sunny", "name": "get_weather", "tool_call_id": "c1"},
        {"role": "assistant", "content": "Sunny both days."},
    ]
    eid = mem.record_episode(msgs, call("get_weather", city="Rome", days=2), "Sunny both days.",
                             source="taught", model_version="v0001")
    with pytest.raises(ValidationError, match=r"outcome is 'unknown'; only successful episodes"):
        mem.promote_episode(eid, "weather")
    mem.set_outcome(eid, "success")
    did = mem.promote_episode(eid, "weather")
    d = mem.demonstration(did)
    assert d["messages"] == msgs[:2]
    assert d["tool_calls"] == call("get_weather", city="Rome", days=2)  # call id dropped
    assert d["content"] is None and d["source"] == "taught" and d["episode_id"] == eid
    assert d["provenance"] == {"episode_id": eid, "model_version": "v0001", "episode_source": "taught"}
    assert mem.promote_episode(eid, "weather") == did  # again: same row, not a duplicate
    assert mem.demonstration(did)["duplicates"] == 0


def test_promote_an_answer_only_episode(mem):
    eid = mem.record_episode(user("Say hi") + [{"role": "assistant", "content": "Hi!"}], answer="Hi!", outcome="success")
    d = mem.demonstration(mem.promote_episode(eid, "weather"))
    assert (d["messages"], d["tool_calls"], d["content"]) == (user("Say hi"), [], "Hi!")


def test_promote_checks_the_calls_against_the_skill(mem):
    eid = mem.record_episode(user("Flights to Rome"), call("search_flights", origin="Oslo", destination="Rome"),
                             outcome="success")
    with pytest.raises(ValidationError, match=r"^episode \d+ as a demonstration of 'weather': demonstration\.tool_calls\[0\]\.name"):
        mem.promote_episode(eid, "weather")
    assert mem.demonstration(mem.promote_episode(eid, "travel"))["messages"] == user("Flights to Rome")


def test_unlearned_and_mark_used(mem):
    ids = [mem.add_demonstration("weather", user(f"Weather in city {i}?"), call("get_weather", city=f"c{i}"))[0]
           for i in range(4)]
    ev = mem.add_demonstration("events", user("Concerts?"), call("Events_3_FindEvents", event_type="Music", city="Berlin"))[0]
    run = mem.start_run("sdft", {"lr": 1e-4}, skill="weather")
    mem.mark_used(ids[:3], run)
    mem.mark_used(ids[:1], run)  # idempotent
    assert [d["id"] for d in mem.unlearned_demonstrations()] == [ids[3], ev]
    assert [d["id"] for d in mem.unlearned_demonstrations("weather")] == [ids[3]]
    assert [d["id"] for d in mem.unlearned_demonstrations(limit=1)] == [ids[3]]
    assert mem.demonstration(ids[0])["used_in_runs"] == [run]
    run2 = mem.start_run("sft", {})
    mem.mark_used([ids[0]], run2)
    assert mem.demonstration(ids[0])["used_in_runs"] == [run, run2]
    with pytest.raises(NotFoundError, match=r"demonstrations do not exist: \[999\]"):
        mem.mark_used([ids[3], 999], run)
    with pytest.raises(NotFoundError, match="learn run 77 does not exist"):
        mem.mark_used([ids[3]], 77)
    assert [d["id"] for d in mem.unlearned_demonstrations("weather")] == [ids[3]]  # nothing written


@pytest.mark.parametrize("status,queued", [
    ("running", False), ("succeeded", False), ("promoted", False),
    ("blocked", True), ("failed", True), ("interrupted", True), ("cancelled", True),
])
def test_a_run_that_did_not_land_gives_its_demonstrations_back(mem, status, queued):
    """Learned means used by a run that landed (or still may): a blocked or failed one leaves
    its demonstrations to be tried again, until `attempts` such runs have tried them."""
    a, b = (mem.add_demonstration("weather", user(f"Weather in {c}?"), call("get_weather", city=c))[0]
            for c in ("Oslo", "Rome"))
    run = mem.start_run("sft", {}, skill="weather")
    mem.mark_used([a], run)
    if status != "running":
        mem.finish_run(run, status)
    assert [d["id"] for d in mem.unlearned_demonstrations()] == ([a, b] if queued else [b])
    assert [d["id"] for d in mem.unlearned_demonstrations(attempts=1)] == [b]
    assert mem.stats()["demonstrations_unlearned"] == (2 if queued else 1)
    second = mem.start_run("sft", {}, skill="weather")
    mem.mark_used([a], second)
    mem.finish_run(second, "blocked")
    assert [d["id"] for d in mem.unlearned_demonstrations()] == [b]  # two that did not land (or one that did)
    assert [d["id"] for d in mem.unlearned_demonstrations(attempts=3)] == ([a, b] if queued else [b])
    with pytest.raises(ValidationError, match=r"attempts must be a whole number ≥ 1 .*got 0"):
        mem.unlearned_demonstrations(attempts=0)


# -- recall ---------------------------------------------------------------------------------------

@pytest.fixture
def library(mem):
    demos = [
        ("events", "Any jazz concerts in Berlin this Friday?", call("Events_3_FindEvents", event_type="Music", city="Berlin, Germany", date="2026-12-04")),
        ("events", "Find a theater play in London next week", call("Events_3_FindEvents", event_type="Theater", city="London, UK")),
        ("weather", "Will it rain in Berlin on Friday?", call("get_weather", city="Berlin", days=3)),
        ("weather", "What is the temperature in Madrid today?", call("get_weather", city="Madrid")),
        ("travel", "Book me a flight from Berlin to Rome on Friday", call("search_flights", origin="Berlin", destination="Rome")),
        ("travel", "Cheapest flights from Oslo to Paris", call("search_flights", origin="Oslo", destination="Paris")),
    ]
    ids = {}
    for skill, text, calls in demos:
        ids[text] = mem.add_demonstration(skill, user(text), calls)[0]
    return ids


def test_recall_ranks_the_exact_topic_first(mem, library):
    hits = mem.recall("Are there any concerts in Berlin on Friday?", k=3)
    assert hits[0]["id"] == library["Any jazz concerts in Berlin this Friday?"]
    assert len(hits) == 3 and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert mem.recall("how hot is it in Madrid", k=1)[0]["id"] == library["What is the temperature in Madrid today?"]
    assert mem.recall("flights Oslo Paris", k=1)[0]["id"] == library["Cheapest flights from Oslo to Paris"]


def test_recall_within_one_skill(mem, library):
    hits = mem.recall("Are there any concerts in Berlin on Friday?", k=5, skill="weather")
    assert [h["skill"] for h in hits] == ["weather"]
    assert hits[0]["id"] == library["Will it rain in Berlin on Friday?"]


def test_recall_is_safe_with_any_text(mem, library):
    assert mem.recall("", k=3) == []
    assert mem.recall("?!", k=3) == []
    assert mem.recall("zebra unicorn", k=3) == []
    # FTS5 syntax in user text is just words.
    for q in ['"Berlin', "Berlin AND (", "NEAR(Berlin", "Berlin*", "city:Berlin", "-Rome ^x"]:
        assert mem.recall(q, k=2), q
    # Only stop words: they are searched rather than nothing.
    assert mem.recall("what is the", k=1)[0]["id"] == library["What is the temperature in Madrid today?"]


def test_recall_follows_writes(mem, library):
    assert mem.recall("innsbruck snow", k=1) == [] and mem.recall("innsbruck", skill="weather") == []
    did, _ = mem.add_demonstration("weather", user("Snow forecast for Innsbruck"), call("get_weather", city="Innsbruck"))
    assert [h["id"] for h in mem.recall("innsbruck snow", k=1)] == [did]
    assert [h["id"] for h in mem.recall("innsbruck", skill="weather")] == [did]
    assert mem.recall("innsbruck", skill="events") == []


def test_recall_prunes_frequent_terms_on_a_large_memory(mem, monkeypatch):
    """Past the row budget, a term in most demonstrations no longer decides the ranking, and
    `exact=True` still ranks with it."""
    from memory import recall as recall_mod

    monkeypatch.setattr(recall_mod, "ROW_BUDGET", 5)
    common = [{"messages": user(f"forecast for town{i}"), "tool_calls": call("get_weather", city=f"town{i}")}
              for i in range(20)]
    mem.add_demonstrations("weather", common)
    rare, _ = mem.add_demonstration("weather", user("forecast forecast for Zermatt"), call("get_weather", city="Zermatt"))
    hits = mem.recall("forecast zermatt", k=3)
    assert hits[0]["id"] == rare and len(hits) == 3  # rarest term first; filled up to k
    assert [h["id"] for h in mem.recall("forecast zermatt", k=3, exact=True)][0] == rare
    assert {h["id"] for h in mem.recall("forecast zermatt", k=1, skill="weather")} == {rare}


def test_recall_leaves_out_excluded_skills(mem, library):
    q = "Are there any concerts in Berlin on Friday?"
    everything = mem.recall(q, k=6)
    assert {h["skill"] for h in everything} == {"events", "weather", "travel"}
    kept = mem.recall(q, k=6, exclude=["events"])
    assert [h["id"] for h in kept] == [h["id"] for h in everything if h["skill"] != "events"]
    assert {h["skill"] for h in mem.recall(q, k=6, exclude=["events", "travel"])} == {"weather"}
    assert [h["id"] for h in mem.recall(q, k=6, exclude="events")] == [h["id"] for h in kept]  # one name
    assert mem.recall(q, k=6, exclude=["events", "travel", "weather"]) == []
    assert mem.recall(q, k=3, skill="events", exclude=["events"]) == []  # the named skill itself excluded
    assert [h["id"] for h in mem.recall(q, k=6, exclude=["no such skill"])] == [h["id"] for h in everything]
    # fewer than k outside the excluded skills: it fills up from them, never with them
    assert len(mem.recall("Berlin", k=3, exclude=["weather"])) == 2


def _version(db, version: str, parent: str | None, run_id: int | None) -> None:
    db["model_versions"].insert({"version": version, "kind": "base" if parent is None else "learned",
                                 "parent": parent, "path": f"models/{version}", "learn_run_id": run_id,
                                 "sha256": "0" * 64, "size_bytes": 1, "created_at": "2026-12-07T00:00:00Z"})


def test_skills_learned_by_follow_the_versions_lineage(mem, library):
    """v1 learned weather, v2 (from v1) events, v3 (from the base, as after a rollback) travel; a
    run that used no demonstration adds nothing."""
    runs = {}
    for skill in ("weather", "events", "travel"):
        runs[skill] = mem.start_run("sft", {}, skill=skill)
        mem.mark_used([d["id"] for d in mem.demonstrations(skill)], runs[skill])
    empty = mem.start_run("sft", {})
    with mem.write() as db:
        _version(db, "base", None, None)
        _version(db, "v1", "base", runs["weather"])
        _version(db, "v2", "v1", runs["events"])
        _version(db, "v3", "base", runs["travel"])
        _version(db, "v4", "v3", empty)
    assert mem.skills_learned_by("v2") == ["events", "weather"]
    assert mem.skills_learned_by("v1") == ["weather"]
    assert mem.skills_learned_by("v3") == mem.skills_learned_by("v4") == ["travel"]
    assert mem.skills_learned_by("base") == [] and mem.skills_learned_by("unknown") == []


# -- runs and gate reports ------------------------------------------------------------------------

def test_run_lifecycle(mem):
    rid = mem.start_run("sdft", {"lr": 1e-4, "epochs": 2}, skill="events")
    assert mem.run(rid)["status"] == "running" and mem.run(rid)["finished_at"] is None
    mem.update_run(rid, phase="rollouts", metrics={"loss": 1.5}, base_version="v0001")
    mem.update_run(rid, phase="merge", metrics={"kl": 0.2}, candidate_version="v0002")
    mem.finish_run(rid, "promoted", metrics={"loss": 0.9})
    run = mem.run(rid)
    assert (run["status"], run["phase"], run["skill"], run["method"]) == ("promoted", "merge", "events", "sdft")
    assert [p["phase"] for p in run["phases"]] == ["rollouts", "merge"]
    assert run["metrics"] == {"loss": 0.9, "kl": 0.2}
    assert run["config"] == {"lr": 1e-4, "epochs": 2}
    assert (run["base_version"], run["candidate_version"]) == ("v0001", "v0002")
    assert run["finished_at"] is not None
    other = mem.start_run("sft", {})
    mem.finish_run(other, "failed", error="out of memory")
    assert [r["id"] for r in mem.runs()] == [other, rid]
    assert mem.run(other)["error"] == "out of memory"
    with pytest.raises(NotFoundError, match="learn run 99 does not exist"):
        mem.update_run(99, phase="x")


def test_gate_reports(mem):
    rid = mem.start_run("sdft", {})
    gid = mem.add_gate_report(rid, "block", {"suites": {"weather": {"before": 0.8, "after": 0.5}}}, "reports/run-1/report.md")
    rows = mem.gate_reports(rid)
    assert [r["id"] for r in rows] == [gid]
    assert rows[0]["summary"]["suites"]["weather"]["after"] == 0.5 and rows[0]["decision"] == "block"
    assert mem.gate_reports() == rows and mem.gate_reports(rid + 1) == []
    with pytest.raises(NotFoundError):
        mem.add_gate_report(rid + 1, "promote", {}, None)


def test_eval_cases_are_per_skill_and_deduplicated(mem):
    exp = [{"name": "get_weather", "arguments": {"city": ["Oslo", "Oslo, Norway"], "days": ["", 1]}}]
    a = mem.add_eval_case("weather", user("Weather in Oslo?"), exp)
    assert mem.add_eval_case("weather", user("Weather in Oslo?"), exp) == a
    cases = mem.eval_cases("weather")
    assert [(c["id"], c["expected"]) for c in cases] == [(a, exp)]
    assert mem.eval_cases("events") == []


def test_stats_counts(mem, library):
    mem.record_episode(user("x"), outcome="failure")
    s = mem.stats()
    assert (s["skills"], s["tools"], s["demonstrations"], s["episodes"]) == (3, 3, 6, 1)
    assert s["demonstrations_by_skill"] == {"events": 2, "travel": 2, "weather": 2}
    assert s["demonstrations_unlearned"] == 6 and s["db_bytes"] > 0


def test_one_memory_shared_by_threads(mem):
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                eid = mem.record_episode(user(f"thread {t} item {i}"), answer="ok", outcome="success")
                mem.promote_episode(eid, "weather")
                mem.recall(f"thread {t}", k=2)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert mem.stats()["episodes"] == 160 and mem.stats()["demonstrations"] == 160


def test_several_calls_in_one_write_are_one_transaction(mem):
    with pytest.raises(ValidationError):
        with mem.write():
            mem.add_skill("shop", "", [dict(FLIGHTS, name="buy")])
            mem.add_demonstration("shop", user("buy it"), call("buy", origin="a", destination="b"))
            mem.add_demonstration("shop", user("buy it"), call("sell"))  # refused: all of it undone
    assert mem.get_skill("shop") is None and mem.demonstrations() == []
    with mem.write():
        mem.add_skill("shop", "", [dict(FLIGHTS, name="buy")])
        mem.add_demonstration("shop", user("buy it"), call("buy", origin="a", destination="b"))
    assert len(mem.demonstrations("shop")) == 1
