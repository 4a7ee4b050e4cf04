"""Losses that add up across nights are blocked: each earlier skill is judged against the version
that learned it and each general suite against the base, not only against the champion.

The end-to-end case builds two nights on the tiny model whose per-night losses are each too few
to be significant, and whose sum is: the multiple-choice set's gold answers are the base's own
picks, and its items are chosen from the picks of the three versions so that night 1 loses 3,
night 2 loses 3 more.
"""

from __future__ import annotations

import json

import pytest
from test_gate import WORDS, _candidate, _load

from learner.gate import GateConfig, anchor_versions, decide, run_gate
from memory.models import ModelStore
from memory.store import Memory
from skills.evaluate import SuiteResult
from skills.probes.multiple_choice import score_items


def _suite(name: str, scores: list[int], kind: str = "multiple_choice") -> SuiteResult:
    return SuiteResult(name, kind, [{"id": str(i), "score": float(x)} for i, x in enumerate(scores)])


def test_decide_blocks_a_loss_that_is_small_per_night_but_large_since_the_base():
    base = _suite("mc", [1] * 20)
    champ = _suite("mc", [1] * 17 + [0] * 3)  # night 1 lost 3
    cand = _suite("mc", [1] * 14 + [0] * 6)  # night 2 lost 3 more
    per_night = decide([champ], [cand], GateConfig())
    assert per_night.promote and per_night.since == []
    [vs_champ] = per_night.suites
    assert (vs_champ.worse_cases, vs_champ.better_cases, vs_champ.verdict) == (3, 0, "drop not significant")

    d = decide([champ], [cand], GateConfig(), anchors={"mc": ("v0000", base)})
    assert not d.promote
    [since] = d.since
    assert since.against == "v0000" and since.champion == 1.0 and since.candidate == 0.7
    assert (since.worse_cases, since.better_cases) == (6, 0) and since.p_value == pytest.approx(0.5 ** 6)
    assert since.verdict == "regressed" and since.role == "probe"
    assert d.reasons == [since.reason] and since.reason.startswith("mc since v0000: 100.0% → 70.0% ")
    assert d.suites[0].verdict == "drop not significant"  # the per-night verdict is unchanged


def test_decide_anchor_rules():
    a, b = _suite("a", [1, 1, 1, 1], "skill"), _suite("a", [0, 0, 0, 0], "skill")
    # the new skill is judged by its gain only, never against an anchor
    d = decide([b], [a], GateConfig(), new_skill="a", anchors={"a": ("v1", a)})
    assert d.promote and d.since == []
    # an earlier skill against the version that learned it: 4 of 4 lost there
    d = decide([a], [b], GateConfig(), anchors={"a": ("v1", a)})
    assert [s.role for s in d.since] == ["skill"] and d.since[0].against == "v1"
    with pytest.raises(ValueError, match="anchor for 'zz'"):
        decide([a], [a], GateConfig(), anchors={"zz": ("v1", a)})
    with pytest.raises(ValueError, match="v1 and candidate were evaluated on different cases"):
        decide([a], [a], GateConfig(), anchors={"a": ("v1", _suite("a", [1, 1], "skill"))})


def test_anchor_versions_follow_the_lineage(tiny_home):
    from learner.gate import gate_suites

    v1 = _candidate(tiny_home, 0.0)
    v2 = _candidate(tiny_home, 0.0, parent=v1)
    v3 = _candidate(tiny_home, 0.0, parent=v2)
    with Memory(tiny_home) as mem:
        for name in ("a", "b", "c"):
            mem.add_skill(name, name.upper(), [{"name": f"f_{name}", "description": "F",
                                                "parameters": {"type": "object", "properties": {}}}])
            mem.add_eval_case(name, [{"role": "user", "content": "hi"}], [{"name": f"f_{name}", "arguments": {}}])
        for version, skill in ((v1, "a"), (v2, "b")):
            run = mem.start_run("sft", {}, skill=skill)
            mem.update_run(run, candidate_version=version)
        config = GateConfig(probe_sets=("drift_champion", "drift", "instructions"), fetch_probes=False)
        suites, _ = gate_suites(tiny_home, mem, ["c", "a", "b"], config)
        store = ModelStore(tiny_home, quiet=True)
        # v3 learns c over champion v2: a since v1 (which learned it), b is the champion's own
        # skill (already compared), instructions since the base; drift never
        assert anchor_versions(store, mem, suites, v3, v2, "c") == {"a": v1, "instructions": "tiny"}
        # v2 learning b over v1: a's anchor is the champion; only the base anchors remain
        assert anchor_versions(store, mem, suites, v2, v1, "b") == {"instructions": "tiny"}
        # the first night: the champion is the base, nothing to add
        assert anchor_versions(store, mem, suites, v1, "tiny", "a") == {}


@pytest.fixture
def two_nights(tiny_home, tmp_path):
    """(home, v1, v2, mc path): v1 loses 3 of the base's right answers, v2 3 more of v1's."""
    v1 = _candidate(tiny_home, 0.05)
    v2 = _candidate(tiny_home, 0.05, parent=v1)
    items = [{"id": str(i), "context": f"Question: {WORDS[i % 15]} {WORDS[(3 * i) % 15]} {WORDS[(7 * i + 2) % 15]}?\nAnswer:",
              "choices": [f" {WORDS[(i + k) % 15]} {WORDS[(5 * i + k) % 15]}" for k in range(3)], "gold": 0}
             for i in range(120)]
    picks = []
    for version in ("tiny", v1, v2):
        model, tok = _load(tiny_home, version)
        picks.append([c["pick"] for c in score_items(model, tok, items).cases])
    kept = [i for i in range(120) if picks[0][i] == picks[1][i] == picks[2][i]]
    night1 = [i for i in range(120) if picks[0][i] != picks[1][i] and picks[1][i] == picks[2][i]]
    night2 = [i for i in range(120) if picks[0][i] == picks[1][i] != picks[2][i]]
    assert len(kept) >= 24 and len(night1) >= 3 and len(night2) >= 3, "the noise no longer flips enough picks"
    chosen = kept[:24] + night1[:3] + night2[:3]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps({**items[i], "gold": picks[0][i]}) + "\n" for i in chosen))
    return tiny_home, v1, v2, path


def _mc_only(path, **kw) -> GateConfig:
    return GateConfig(probe_sets=(), probe_files=[str(path)], max_new_tokens=6, fetch_probes=False, **kw)


def test_losses_that_add_up_across_nights_are_blocked(two_nights):
    home, v1, v2, mc = two_nights
    first = run_gate(home, v1, config=_mc_only(mc))
    assert first.promoted and first.decision.since == []  # night 1: the champion is the base
    [s1] = [s for s in first.decision.suites if s.name == "mc"]
    assert (s1.worse_cases, s1.better_cases, s1.verdict) == (3, 0, "drop not significant")

    # night 2 judged per night only: it would promote
    per_night = run_gate(home, v2, config=_mc_only(mc, cumulative=False), promote=False)
    assert per_night.decision.promote and per_night.decision.since == []

    second = run_gate(home, v2, config=_mc_only(mc))
    assert not second.promoted and ModelStore(home, quiet=True).champion_name() == v1
    [s2] = [s for s in second.decision.suites if s.name == "mc"]
    assert (s2.worse_cases, s2.verdict) == (3, "drop not significant")
    [since] = second.decision.since
    assert since.name == "mc" and since.against == "tiny"
    assert (since.champion, since.worse_cases, since.better_cases) == (1.0, 6, 0)
    assert since.verdict == "regressed" and since.p_value == pytest.approx(0.5 ** 6)
    assert second.decision.reasons == [since.reason]
    # the base's results came from its cache (it was champion on night 1): nothing re-evaluated
    assert "against tiny as well (mc): 1 from its cache, 0 evaluated now" in second.summary["notes"]
    assert second.summary["since"][0]["against"] == "tiny"

    md = second.report_path.read_text()
    assert "## Since each suite's anchor" in md
    assert "| mc | tiny | 30 | 100.0% [88.6, 100.0] | 80.0% [" in md and "| 6 / 0 |" in md
    assert "### mc since tiny" in md and md.count("- worse: case ") == 3 + 5  # 3 vs champion, 5 shown of 6
    results = json.loads((second.report_path.parent / "results.json").read_text())
    assert results["anchors"]["mc"]["version"] == "tiny"


def test_an_anchor_whose_items_changed_is_evaluated_once_and_cached(two_nights):
    home, v1, v2, mc = two_nights
    run_gate(home, v1, config=_mc_only(mc))
    # the base's cache no longer holds this suite: the gate evaluates the base on it, then caches it
    import shutil

    shutil.rmtree(home / "cache" / "gate" / "tiny")
    out = run_gate(home, v2, config=_mc_only(mc), promote=False)
    assert "against tiny as well (mc): 0 from its cache, 1 evaluated now" in out.summary["notes"]
    assert out.decision.since[0].verdict == "regressed"
    again = run_gate(home, v2, config=_mc_only(mc), promote=False)
    assert "against tiny as well (mc): 1 from its cache, 0 evaluated now" in again.summary["notes"]
    assert [s.to_dict() for s in again.decision.since] == [s.to_dict() for s in out.decision.since]
