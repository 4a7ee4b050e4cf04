"""The retention gate end to end on the tiny model: a damaged candidate is blocked, an unchanged
one passes, and both reports exist and state the figures.

The suites are ones a random model is measurable on: the drift probe (continuous) and a
multiple-choice set whose gold answers are the champion's own choices (so the champion scores
100% and damage shows as a real, significant drop), plus a small skill the tiny model fails on
either side (no change: must not block).
"""

from __future__ import annotations

import json

import pytest
import torch

from learner.gate import GateConfig, run_gate
from memory.models import ModelStore
from memory.store import Memory
from skills.install import install_pack
from skills.pack import SkillPack, bundled_pack
from skills.probes.multiple_choice import score_items

WORDS = "red blue green apple river stone cloud paper glass music tiger seven lamp window sugar".split()


def _load(home, version):
    from agent.loading import load

    return load(version, store=ModelStore(home, quiet=True))


def _candidate(home, noise: float, parent: str = "tiny") -> str:
    """A new version from `parent`'s weights, with Gaussian noise of std `noise` added."""
    store = ModelStore(home, quiet=True)
    model, tok = _load(home, parent)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise)
    with store.draft(parent=parent, notes=f"noise {noise}") as draft:
        model.save_pretrained(draft.path)
        tok.save_pretrained(draft.path)
    return draft.version


@pytest.fixture
def gate_home(tiny_home, tmp_path):
    """tiny_home + a small skill in memory + a multiple-choice file the champion aces."""
    pack = SkillPack.load(bundled_pack("unit_convert"))
    pack.demonstrations, pack.eval = pack.demonstrations[:3], pack.eval[:3]
    with Memory(tiny_home) as mem:
        install_pack(mem, pack)
    items = [{"id": str(i), "context": f"Question: {WORDS[i % 15]} {WORDS[(3 * i) % 15]}?\nAnswer:",
              "choices": [f" {WORDS[(i + k) % 15]} {WORDS[(5 * i + k) % 15]}" for k in range(3)], "gold": 0}
             for i in range(30)]
    model, tok = _load(tiny_home, "tiny")
    picks = [c["pick"] for c in score_items(model, tok, items).cases]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps({**it, "gold": p}) + "\n" for it, p in zip(items, picks, strict=True)))
    return tiny_home, path


def _config(mc_path) -> GateConfig:
    return GateConfig(probe_sets=("drift_champion", "drift"), probe_files=[str(mc_path)], max_new_tokens=6,
                      fetch_probes=False)


def test_damaged_candidate_is_blocked_and_champion_unchanged(gate_home):
    home, mc = gate_home
    cand = _candidate(home, noise=0.5)
    out = run_gate(home, cand, config=_config(mc))

    assert out.decision.decision == "block" and not out.promoted
    assert ModelStore(home, quiet=True).champion_name() == "tiny"
    suites = {s.name: s for s in out.decision.suites}
    assert set(suites) == {"unit_convert", "drift_champion", "drift", "mc"}
    assert suites["mc"].champion == 1.0 and suites["mc"].verdict == "regressed"
    assert suites["mc"].worse_cases == round(30 * (1 - suites["mc"].candidate)) and suites["mc"].better_cases == 0
    assert suites["mc"].p_value == pytest.approx(0.5 ** suites["mc"].worse_cases)
    assert suites["drift"].champion == 0.0 and suites["drift"].candidate > 0.1
    assert suites["drift"].verdict == "info" and suites["drift"].worse_cases == 16  # reported, never blocks
    dc = suites["drift_champion"]
    assert dc.champion == 0.0 and dc.candidate > 0.25 and dc.verdict == "regressed" and dc.worse_cases == dc.n
    assert suites["unit_convert"].verdict == "ok"  # 0% on both sides: no change, no block
    assert any(r.startswith("mc: 100.0% → ") for r in out.decision.reasons)

    md = out.report_path.read_text()
    assert md.startswith(f"# Retention gate, run {out.run_id}: BLOCK")
    assert "tiny stays the champion" in md
    assert f"| mc | probe | 30 | 100.0% [88.6, 100.0] | {100 * suites['mc'].candidate:.1f}% [" in md
    assert "**regressed**" in md and "BWT: n/a" in md
    html = out.html_path.read_text()
    assert "<table>" in html and html.count("data:image/png;base64,") == 2
    assert (out.report_path.parent / "suites.png").stat().st_size > 1000
    with Memory(home) as mem:
        [rec] = mem.gate_reports(out.run_id)
        assert rec["decision"] == "block" and rec["path"] == str(out.report_path)
        assert rec["summary"]["suites"][3]["name"] == "mc"
        assert mem.run(out.run_id)["status"] == "blocked"


def test_unchanged_candidate_passes_and_is_promoted(gate_home):
    home, mc = gate_home
    cand = _candidate(home, noise=0.0)
    out = run_gate(home, cand, config=_config(mc))

    assert out.decision.decision == "promote" and out.promoted
    store = ModelStore(home, quiet=True)
    assert store.champion_name() == cand
    history = list(store.db.query("SELECT reason FROM alias_history ORDER BY id DESC LIMIT 1"))
    assert history[0]["reason"] == f"retention gate, run {out.run_id}: promoted over tiny"
    for s in out.decision.suites:  # an identical copy: every figure equal, drift from the champion exactly 0
        assert (s.champion, s.worse_cases, s.better_cases) == (s.candidate, 0, 0)
        assert s.verdict == ("info" if s.name == "drift" else "ok")
    assert {s.name: s.candidate for s in out.decision.suites}["drift_champion"] == 0.0
    md = out.report_path.read_text()
    assert f"# Retention gate, run {out.run_id}: PROMOTE" in md
    assert f"{cand} is now the champion" in md
    assert "| mc | probe | 30 | 100.0% [88.6, 100.0] | 100.0% [88.6, 100.0] | +0.0 pts | 0 / 0 | 1 |" in md
    assert "| drift | info | 16 | 0.0000 [0.0000, 0.0000] | 0.0000 [0.0000, 0.0000] | +0.0000 | 0 / 0 | 1 |" in md


def test_new_skill_must_improve(gate_home):
    home, mc = gate_home
    cand = _candidate(home, noise=0.0)
    out = run_gate(home, cand, skill="unit_convert", config=_config(mc))
    assert out.decision.decision == "block"
    assert out.decision.reasons == [
        "unit_convert: 0.0% → 0.0% (+0.0 points; 0 case(s) worse, 0 better, one-sided exact McNemar "
        "p = 1): the new skill must improve by more than 0 points"
    ]
    assert ModelStore(home, quiet=True).champion_name() == "tiny"
    assert out.summary["matrix"]["rows"] == ["tiny", cand]
    assert out.summary["matrix"]["row_skills"] == [None, "unit_convert"]


def test_dry_run_never_moves_the_alias(gate_home):
    home, mc = gate_home
    cand = _candidate(home, noise=0.0)
    out = run_gate(home, cand, config=_config(mc), promote=False)
    assert out.decision.decision == "promote" and not out.promoted
    assert out.decision.reasons[0].startswith("dry run")
    assert ModelStore(home, quiet=True).champion_name() == "tiny"


def test_gating_the_champion_is_refused(gate_home):
    home, mc = gate_home
    with pytest.raises(ValueError, match="already the champion"):
        run_gate(home, "tiny", config=_config(mc))


def test_accuracy_matrix_and_bwt_follow_the_lineage(tiny_home):
    from learner.report import history_matrix

    v1 = _candidate(tiny_home, 0.0)
    v2 = _candidate(tiny_home, 0.0, parent=v1)
    with Memory(tiny_home) as mem:
        mem.add_skill("a", "A", [])
        mem.add_skill("b", "B", [])
        run = mem.start_run("sdft", {}, skill="a")
        mem.update_run(run, candidate_version=v1)
        mem.add_gate_report(run, "promote", {"champion": "tiny", "candidate": v1, "skill": "a",
                                             "accuracies": {"champion": {"a": 0.1, "b": 0.5},
                                                            "candidate": {"a": 0.8, "b": 0.5}}}, None)
        now = {"champion": v1, "candidate": v2, "skill": "b",
               "accuracies": {"champion": {"a": 0.8, "b": 0.5}, "candidate": {"a": 0.6, "b": 0.9}}}
        m = history_matrix(ModelStore(tiny_home, quiet=True), mem, now)
    assert m["rows"] == ["tiny", v1, v2] and m["row_skills"] == [None, "a", "b"]
    assert m["cols"] == ["a", "b"]
    assert m["values"] == [[0.1, 0.5], [0.8, 0.5], [0.6, 0.9]]
    assert m["bwt"] == pytest.approx(0.6 - 0.8) and m["bwt_terms"] == 1


def test_report_states_matrix_and_bwt(tmp_path):
    from learner.gate import GateConfig, decide
    from learner.report import write_report
    from skills.evaluate import SuiteResult

    def suite(name, scores):
        return SuiteResult(name, "skill", [{"id": str(i), "score": float(x)} for i, x in enumerate(scores)])

    champ, cand = [suite("a", [1, 1, 1, 1, 0]), suite("b", [0, 0, 1, 1, 1])], [suite("a", [1, 1, 1, 0, 0]), suite("b", [1, 1, 1, 1, 1])]
    d = decide(champ, cand, GateConfig(), new_skill="b")
    summary = {"run_id": 7, "decision": d.decision, "promoted": True, "champion": "v1", "candidate": "v2",
               "candidate_parent": "v1", "base": "base", "skill": "b", "reasons": d.reasons,
               "suites": [x.to_dict() for x in d.suites], "wall_s": 1.0, "eval_wall_s": {"v1": 0.5, "v2": 0.5},
               "config": GateConfig().to_dict(), "notes": [],
               "matrix": {"rows": ["base", "v1", "v2"], "row_skills": [None, "a", "b"], "cols": ["a", "b"],
                          "values": [[0.2, 0.0], [1.0, 0.6], [0.6, 1.0]], "bwt": -0.4, "bwt_terms": 1}}
    md, html = write_report(tmp_path / "r", summary, champ, cand)
    text = md.read_text()
    assert text.startswith("# Retention gate, run 7: PROMOTE")
    assert "| v1 (learned a) | 100.0% | 60.0% |" in text
    assert "**-40.0 points** over 1 skill(s)" in text
    assert "| a | skill | 5 | 80.0% [37.6, 96.4] | 60.0% [23.1, 88.2] | -20.0 pts | 1 / 0 | 0.5 | 2 pts | **drop not significant** |" in text
    assert "| b | new skill | 5 | 60.0% [23.1, 88.2] | 100.0% [56.6, 100.0] | +40.0 pts | 0 / 2 | 1 | 2 pts | **improved** |" in text
    assert (tmp_path / "r" / "matrix.png").is_file() and html.read_text().count("data:image/png") == 2


# ---- the command line ----------------------------------------------------------------------


def _cli(args, home):
    import typer
    from typer.testing import CliRunner

    from cli.gate_cmd import app as gate_app

    app = typer.Typer()
    app.add_typer(gate_app, name="gate")
    return CliRunner().invoke(app, ["gate", *args, "--home", str(home)])


def test_gate_check_and_report_from_the_command_line(gate_home, tmp_path):
    home, mc = gate_home
    cand = _candidate(home, noise=0.5)
    result = _cli(["check", "--candidate", cand, "--probe-sets", "drift", "--probes", str(mc),
                   "--max-new-tokens", "4", "--no-fetch"], home)
    assert result.exit_code == 0, result.output
    assert f"BLOCK {cand} vs champion tiny" in result.output
    assert "champion: tiny; report: " in result.output
    run_id = Memory(home).gate_reports()[-1]["run_id"]

    html = tmp_path / "out.html"
    shown = _cli(["report", str(run_id), "--html", str(html)], home)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith(f"# Retention gate, run {run_id}: BLOCK")
    assert "| mc | probe | 30 | 100.0% [88.6, 100.0] |" in shown.stdout
    assert html.read_text().startswith("<!doctype html>")
    assert _cli(["report"], home).stdout == shown.stdout  # default: the latest report


def test_gate_report_without_reports_is_one_clear_line(tiny_home):
    result = _cli(["report"], tiny_home)
    assert result.exit_code == 1
    assert "no gate report for this home" in result.output and "Traceback" not in result.output
