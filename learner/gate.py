"""The retention gate: a candidate replaces the champion only if nothing it could do got worse.

Candidate and champion are evaluated in one process on the same cases (DESIGN.md §7): every
skill in memory on its held-out cases (no demonstrations in context), the skill just learned,
and the general probes (skills.probes). Then, per suite, paired on case ids:

- a suite *regresses* when the candidate is worse by more than the suite's tolerance (default
  2 points of accuracy; 1.0 nats/token of drift) AND the paired test says the drop is not noise
  (one-sided exact McNemar on the discordant cases, p < alpha; for drift, the sign test on the
  per-conversation KL differences). On a small suite a few flipped cases are not significant, so
  noise does not block; a real drop is both large and consistent, so it does.
- the new skill must improve: candidate accuracy above the champion's by more than `min_gain`
  (or both already perfect).

Promote when no suite regresses and the new skill improved: the champion alias moves in one
transaction (ModelStore.use). Otherwise block: the champion stays. Either way the decision, its
reasons and every figure go to a report (learner.report) linked from memory.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from learner.stats import mcnemar_exact, mean_ci, wilson
from skills.evaluate import SuiteResult, evaluate_memory_skill

PROMOTE, BLOCK = "promote", "block"


@dataclass
class GateConfig:
    tolerance: float = 0.02  # accuracy suites: a drop up to this (fraction) never blocks
    # drift: an increase up to this (nats/token) never blocks. Drift measures how far the
    # output distribution moved, not an ability: learning runs that left every ability probe
    # unchanged moved it 0.2-0.5 (benchmarks/results), so only a gross shift should block.
    drift_tolerance: float = 1.0
    tolerances: dict[str, float] = field(default_factory=dict)  # per-suite overrides
    alpha: float = 0.05  # significance level of the one-sided paired test
    min_gain: float = 0.0  # the new skill must beat the champion by more than this
    batch_size: int = 8
    max_new_tokens: int | None = None  # skill answers; None: longest expected answer + 32
    probe_sets: tuple[str, ...] | None = None  # default probe sets; None: all (skills.probes)
    probe_files: list[str] = field(default_factory=list)  # extra JSONL probe sets
    probe_limit: int | None = 100  # items per fetched / external probe set (fixed seeded subset)
    probe_seed: int = 0
    fetch_probes: bool = True
    instruction_max_new_tokens: int = 128

    def tolerance_for(self, suite: SuiteResult) -> float:
        if suite.name in self.tolerances:
            return self.tolerances[suite.name]
        return self.drift_tolerance if suite.kind == "drift" else self.tolerance

    def to_dict(self) -> dict:
        d = asdict(self)
        d["probe_sets"] = list(self.probe_sets) if self.probe_sets is not None else None
        return d


@dataclass
class SuiteComparison:
    """One suite, champion against candidate, and what the gate makes of it."""

    name: str
    kind: str
    role: str  # "new skill" | "skill" | "probe"
    metric: str
    higher_is_better: bool
    n: int
    champion: float
    candidate: float
    worse_cases: int  # cases where the candidate did worse (McNemar's b)
    better_cases: int  # cases where it did better (c)
    p_value: float  # one-sided: is the candidate worse?
    tolerance: float
    ci_champion: tuple[float, float]
    ci_candidate: tuple[float, float]
    verdict: str  # ok | improved | drop within tolerance | drop not significant | regressed | not improved
    reason: str

    @property
    def delta(self) -> float:
        return self.candidate - self.champion

    @property
    def blocks(self) -> bool:
        return self.verdict in ("regressed", "not improved")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["delta"] = self.delta
        d["blocks"] = self.blocks
        return d


@dataclass
class GateDecision:
    promote: bool
    reasons: list[str]
    suites: list[SuiteComparison]

    @property
    def decision(self) -> str:
        return PROMOTE if self.promote else BLOCK


def _fmt(value: float, binary: bool) -> str:
    return f"{100 * value:.1f}%" if binary else f"{value:.4f}"


def compare_suite(champ: SuiteResult, cand: SuiteResult, *, tolerance: float, alpha: float,
                  role: str = "probe", min_gain: float = 0.0) -> SuiteComparison:
    """Pair the two results case by case and judge the difference."""
    a, b = champ.scores(), cand.scores()
    if set(a) != set(b):
        raise ValueError(f"suite {champ.name!r}: champion and candidate were evaluated on different cases")
    sign = 1 if champ.higher_is_better else -1
    worse = sum(1 for k in a if sign * (b[k] - a[k]) < 0)
    better = sum(1 for k in a if sign * (b[k] - a[k]) > 0)
    p = mcnemar_exact(worse, better, "greater")
    drop = sign * (champ.value - cand.value)  # > 0: the candidate is worse
    binary = champ.binary
    if binary:
        ci_a, ci_b = wilson(champ.correct, champ.n), wilson(cand.correct, cand.n)
    else:
        ci_a, ci_b = mean_ci(list(a.values())), mean_ci(list(b.values()))
    unit = "points" if binary else "nats/token"
    scale = 100 if binary else 1
    change = (f"{_fmt(champ.value, binary)} → {_fmt(cand.value, binary)} "
              f"({(cand.value - champ.value) * scale + 0.0:+.{1 if binary else 4}f} {unit}; {worse} case(s) worse, {better} better, "
              f"one-sided exact McNemar p = {p:.3g})")
    if role == "new skill":
        gain = cand.value - champ.value
        perfect = champ.value >= 1.0 and cand.value >= 1.0
        if gain > min_gain or perfect:
            verdict, why = "improved", "the new skill improved" if not perfect else "the new skill is already perfect"
        else:
            verdict = "not improved"
            why = f"the new skill must improve by more than {min_gain * scale:g} {unit}"
    elif drop > tolerance and p < alpha:
        verdict, why = "regressed", f"drop beyond the tolerance of {tolerance * scale:g} {unit} and p < {alpha:g}"
    elif drop > tolerance:
        verdict, why = "drop not significant", f"drop beyond tolerance but p ≥ {alpha:g}: noise on {champ.n} cases"
    elif drop > 0:
        verdict, why = "drop within tolerance", f"within the tolerance of {tolerance * scale:g} {unit}"
    else:
        verdict, why = "ok", "no drop"
    return SuiteComparison(
        name=champ.name, kind=champ.kind, role=role, metric=champ.metric,
        higher_is_better=champ.higher_is_better, n=champ.n, champion=champ.value,
        candidate=cand.value, worse_cases=worse, better_cases=better, p_value=p,
        tolerance=tolerance, ci_champion=ci_a, ci_candidate=ci_b, verdict=verdict,
        reason=f"{champ.name}: {change}: {why}",
    )


def decide(champion: list[SuiteResult], candidate: list[SuiteResult], config: GateConfig,
           new_skill: str | None = None) -> GateDecision:
    """The per-suite verdicts and the decision, with a reason for each blocking suite."""
    by_name = {r.name: r for r in candidate}
    if [r.name for r in champion] != [r.name for r in candidate]:
        raise ValueError("champion and candidate were evaluated on different suites")
    if new_skill is not None and new_skill not in by_name:
        raise ValueError(f"the new skill {new_skill!r} was not evaluated")
    suites = []
    for champ in champion:
        role = "new skill" if champ.name == new_skill else ("skill" if champ.kind == "skill" else "probe")
        suites.append(compare_suite(champ, by_name[champ.name], tolerance=config.tolerance_for(champ),
                                    alpha=config.alpha, role=role, min_gain=config.min_gain))
    blocking = [s for s in suites if s.blocks]
    if blocking:
        return GateDecision(False, [s.reason for s in blocking], suites)
    reasons = [f"no suite dropped beyond its tolerance with p < {config.alpha:g} ({len(suites)} suites)"]
    reasons += [s.reason for s in suites if s.role == "new skill"]
    return GateDecision(True, reasons, suites)


# ---- running it ---------------------------------------------------------------------------


@dataclass
class GateOutcome:
    run_id: int
    decision: GateDecision
    champion: str
    candidate: str
    promoted: bool  # the champion alias moved
    report_id: int
    report_path: Path  # report.md
    html_path: Path
    summary: dict


def _load(store, version: str):
    from agent.loading import load

    return load(version, store=store)


def evaluate_version(model, tokenizer, memory, skills: list[str], probes: list, config: GateConfig,
                     name: str, log: Callable[[str], None] = lambda _: None) -> list[SuiteResult]:
    """Every skill's held-out cases (no demonstrations in context), then every probe."""
    from skills.probes import run_probes

    results = []
    for skill in skills:
        log(f"{name}: skill {skill}…")
        results.append(evaluate_memory_skill(model, tokenizer, memory, skill, batch_size=config.batch_size,
                                             max_new_tokens=config.max_new_tokens, model_name=name))
    log(f"{name}: general probes…")
    results += run_probes(model, tokenizer, probes, batch_size=config.batch_size, model_name=name)
    return results


def gate_probes(home, config: GateConfig) -> tuple[list, list[str]]:
    from skills.probes import DEFAULT_SETS, default_probes, load_probe_file

    probes, notes = default_probes(home, sets=tuple(config.probe_sets if config.probe_sets is not None else DEFAULT_SETS),
                                   limit=config.probe_limit, seed=config.probe_seed,
                                   fetch=config.fetch_probes, max_new_tokens=config.instruction_max_new_tokens)
    taken = {p.name for p in probes}
    for path in config.probe_files:
        p = load_probe_file(path, limit=config.probe_limit, seed=config.probe_seed,
                            max_new_tokens=config.instruction_max_new_tokens)
        while p.name in taken:
            p.name += "_"
        taken.add(p.name)
        probes.append(p)
    return probes, notes


def run_gate(
    home,
    candidate: str,
    *,
    skill: str | None = None,
    run_id: int | None = None,
    config: GateConfig | None = None,
    promote: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> GateOutcome:
    """Gate `candidate` against the champion; promote or block; write and link the report.

    run_id: the learning run that made the candidate (its status is the caller's to set); None
    starts a run of method "gate" here and finishes it as promoted or blocked. promote=False
    decides and reports but never moves the alias.
    """
    from memory.models import ModelStore
    from memory.store import Memory

    config = config or GateConfig()
    t0 = time.perf_counter()
    store = ModelStore(home, quiet=True)
    with Memory(home) as memory:
        champion, cand_info, skills = _check(store, memory, candidate, skill)
        own_run = run_id is None
        if own_run:
            run_id = memory.start_run("gate", config.to_dict(), skill=skill)
            memory.update_run(run_id, base_version=champion, candidate_version=candidate, phase="gate")
        try:
            return _gate(store, memory, run_id, own_run, champion, cand_info, skill, skills, config,
                         promote, log, t0)
        except BaseException as exc:
            if own_run:
                memory.finish_run(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
            raise


def _check(store, memory, candidate: str, skill: str | None):
    """(champion, candidate info, skills to evaluate, the new one first), or a clear error."""
    champ_info = store.champion()
    if champ_info is None:
        raise ValueError("no champion to compare with: run `sdft-agent models pull` first")
    cand_info = store.get(candidate)
    if candidate == champ_info.version:
        raise ValueError(f"{candidate} is already the champion; gate a different version")
    skills = [s["name"] for s in memory.list_skills() if memory.eval_cases(s["name"])]
    if skill is not None and skill not in skills:
        raise ValueError(f"skill {skill!r} has no held-out eval cases in memory (skills with cases: "
                         f"{', '.join(skills) or 'none'})")
    if skill is not None:  # the new skill first: it is what the run was for
        skills = [skill] + [s for s in skills if s != skill]
    return champ_info.version, cand_info, skills


def _gate(store, memory, run_id, own_run, champion, cand_info, skill, skills, config, promote, log, t0):
    """Evaluate both versions, decide, move the alias or not, write and link the report."""
    from skills.probes import needs_reference, set_reference

    candidate = cand_info.version
    probes, notes = gate_probes(store.home, config)
    base = store.lineage(candidate)[-1]
    results: dict[str, list[SuiteResult]] = {}
    referenced = not needs_reference(probes)
    for version in (champion, candidate):
        log(f"loading {version}…")
        model, tokenizer = _load(store, version)
        if not referenced:
            referenced = True
            if version == base:
                set_reference(probes, model, tokenizer, base)
            else:
                log(f"loading base {base} for drift…")
                base_model, base_tok = _load(store, base)
                set_reference(probes, base_model, base_tok, base)
                del base_model
        results[version] = evaluate_version(model, tokenizer, memory, skills, probes, config, version, log)
        del model
        gc.collect()
    decision = decide(results[champion], results[candidate], config, new_skill=skill)
    promoted = False
    if decision.promote and promote:
        from memory.models import ChampionMoved

        try:  # a compare-and-set: of two gates judged against one champion, one promotes
            store.use(candidate, reason=f"retention gate, run {run_id}: promoted over {champion}",
                      expected=champion)
            promoted = True
        except ChampionMoved as exc:
            decision = GateDecision(False, [str(exc)], decision.suites)
    elif decision.promote:
        decision.reasons.insert(0, "dry run: the gate would promote, the alias was not moved")
    summary = _summary(run_id, champion, candidate, cand_info.parent, base, skill, decision, results,
                       config, notes, promoted, time.perf_counter() - t0)
    from learner.report import history_matrix, write_report

    summary["matrix"] = history_matrix(store, memory, summary)
    folder = _report_folder(store.home, run_id)
    md, html = write_report(folder, summary, results[champion], results[candidate])
    summary["report"] = str(md)
    report_id = memory.add_gate_report(run_id, decision.decision, summary, str(md))
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    (folder / "results.json").write_text(json.dumps({v: [r.to_dict() for r in rs] for v, rs in results.items()},
                                                    ensure_ascii=False, default=str) + "\n")
    if own_run:
        memory.finish_run(run_id, "promoted" if promoted else "blocked",
                          metrics={"gate": {"decision": decision.decision, "report": str(md)}})
    return GateOutcome(run_id, decision, champion, candidate, promoted, report_id, md, html, summary)


def _report_folder(home: Path, run_id: int) -> Path:
    base = Path(home) / "reports" / f"run-{run_id:04d}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    folder.mkdir(parents=True)
    return folder


def _summary(run_id, champion, candidate, parent, base, skill, decision: GateDecision,
             results: dict[str, list[SuiteResult]], config: GateConfig, notes: list[str],
             promoted: bool, wall_s: float) -> dict:
    def accuracies(rs: list[SuiteResult]) -> dict[str, float]:
        return {r.name: r.value for r in rs if r.kind == "skill"}

    return {
        "run_id": run_id,
        "decision": decision.decision,
        "promoted": promoted,
        "champion": champion,
        "candidate": candidate,
        "candidate_parent": parent,
        "base": base,
        "skill": skill,
        "reasons": decision.reasons,
        "suites": [s.to_dict() for s in decision.suites],
        "accuracies": {"champion": accuracies(results[champion]), "candidate": accuracies(results[candidate])},
        "wall_s": round(wall_s, 1),
        "eval_wall_s": {v: round(sum(r.wall_s for r in rs), 1) for v, rs in results.items()},
        "config": config.to_dict(),
        "notes": notes + [f"{r.name}: {n}" for r in results[champion] for n in r.notes],
    }
