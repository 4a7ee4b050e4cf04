"""The retention gate: a candidate replaces the champion only if nothing it could do got worse.

(Over 400 lines on purpose: the decision rule, the suite list, the champion-cache bookkeeping and
the evaluation loop are one transaction-shaped procedure that reads best in one place; statistics,
the cache and the report are their own modules.)

Candidate and champion are judged on the same cases (docs/ARCHITECTURE.md, "The gate"): every
skill in memory on its held-out cases (no demonstrations in context), the skill just learned, and
general suites that read what the model writes (skills.probes): plain facts and closed-book
answers (TriviaQA, NQ-open), open-answer health, IFEval, tool restraint, drift from the champion on its own answers;
then cheap extras (ARC-Easy, PIQA, COPA) and drift from the base (informational). Per suite,
paired on case ids:

- a suite *regresses* when the candidate is worse by more than the suite's tolerance AND the
  paired test says the drop is not noise (one-sided exact McNemar on the discordant cases,
  p < alpha; for drift, the sign test on the per-case differences). For closed-book suites the
  drop is measured as *retained*: of the items the champion answers right, the share the
  candidate still does. Tolerances come from benchmarks/gate_calibration.py (see DEFAULT_TOLERANCES).
- the new skill must improve: candidate accuracy above the champion's by more than `min_gain`
  (or both already perfect).
- losses must not add up across nights (`GateConfig.cumulative`): each night's drop may sit
  inside the tolerance or under the noise, yet six such nights took tool restraint from 97% to
  68%. So every earlier skill is also judged against the version that learned it, and every
  general suite against the base, with the same tolerances and test: a tolerance is a budget
  for the whole lineage, not for one night. Those anchors' results come from their gate caches
  (a version's results are cached when it is champion or promoted); a suite whose items changed
  since (tool restraint offers every installed tool) is evaluated on the anchor afresh, once.

The champion's per-case results are cached with its version (learner.gate_cache), so a night
loads and evaluates only the candidate; a promoted candidate's results become the next night's
champion cache. Promote when no suite regresses and the new skill improved: the champion alias
moves (ModelStore.use). Otherwise block. Either way the decision, its reasons and every figure go
to a report (learner.report) linked from memory.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from learner.gate_cache import GateCache, fingerprint
from learner.stats import mcnemar_exact, mean_ci, wilson
from skills.evaluate import SuiteResult, evaluate_skill, memory_recaller

PROMOTE, BLOCK = "promote", "block"


# Per-suite tolerances (fraction of accuracy / retained; nats/token for drift), chosen from the
# calibration table in benchmarks/results/README.md ("Gate calibration"): the smallest that let
# the unchanged and gentle candidates pass while every candidate that broke plain answers blocked.
DEFAULT_TOLERANCES = {
    "plain_facts": 0.05,  # retained: everyday facts the champion knows; losing one in 20 blocks (if significant)
    "trivia_qa": 0.10,  # retained: a candidate may lose at most 10% of the answers the champion had
    "nq_open": 0.10,
    "open_answers": 0.05,
    "ifeval": 0.05,
    "tool_restraint": 0.05,
}
INFO_KINDS = ("drift",)  # reported, never blocking: drift from the base grows with every promotion


@dataclass
class GateConfig:
    tolerance: float = 0.02  # accuracy suites without their own tolerance: a drop up to this never blocks
    # drift from the champion on its own answers: an increase up to this (nats/token) never blocks
    # (calibrated: benchmarks/results/README.md, "Gate calibration")
    drift_tolerance: float = 0.25
    tolerances: dict[str, float] = field(default_factory=dict)  # per-suite overrides of DEFAULT_TOLERANCES
    alpha: float = 0.05  # significance level of the one-sided paired test
    min_gain: float = 0.0  # the new skill must beat the champion by more than this
    batch_size: int = 16
    max_new_tokens: int | None = None  # skill answers; None: longest expected answer + 32
    probe_sets: tuple[str, ...] | None = None  # default probe sets; None: all (skills.probes.DEFAULT_SETS)
    probe_files: list[str] = field(default_factory=list)  # extra JSONL probe sets
    probe_limit: int | None = 100  # items per fetched / external probe set (fixed seeded subset)
    probe_limits: dict[str, int | None] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    probe_seed: int = 0
    fetch_probes: bool = True
    instruction_max_new_tokens: int = 128
    cache: bool = True  # reuse the champion's cached per-case results
    # also judge earlier skills against the version that learned them and general suites against
    # the base, so per-night losses under the tolerance cannot add up (module docstring)
    cumulative: bool = True

    def tolerance_for(self, suite: SuiteResult) -> float:
        if suite.name in self.tolerances:
            return self.tolerances[suite.name]
        if suite.kind in ("drift", "drift_champion"):
            return self.drift_tolerance
        return DEFAULT_TOLERANCES.get(suite.name, self.tolerance)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["probe_sets"] = list(self.probe_sets) if self.probe_sets is not None else None
        return d


# Items per set in the default gate (the rest use probe_limit), sized for a nightly gate within
# about a minute and a half on a 2-core CPU with the champion cached (benchmarks/gate_calibration.py).
DEFAULT_LIMITS: dict[str, int | None] = {"trivia_qa": 100, "nq_open": 100, "ifeval": 100,
                                         "tool_restraint": 45, "arc_easy": 50, "piqa": 50, "copa": 50}


@dataclass
class SuiteComparison:
    """One suite, champion against candidate, and what the gate makes of it."""

    name: str
    kind: str
    role: str  # "new skill" | "skill" | "probe" | "info" (reported, never blocks)
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
    verdict: str  # ok | improved | drop within tolerance | drop not significant | regressed | not improved | info
    reason: str
    retained: float | None = None  # closed book: of the champion's right answers, the share kept
    champion_correct: int | None = None
    # cumulative comparisons: the version compared against (the base, or the version that learned
    # the skill); the `champion` figures are then that version's. None: against the champion.
    against: str | None = None

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
    since: list[SuiteComparison] = field(default_factory=list)  # against each suite's anchor version

    @property
    def decision(self) -> str:
        return PROMOTE if self.promote else BLOCK


def _fmt(value: float, binary: bool) -> str:
    return f"{100 * value:.1f}%" if binary else f"{value:.4f}"


def compare_suite(champ: SuiteResult, cand: SuiteResult, *, tolerance: float, alpha: float,
                  role: str = "probe", min_gain: float = 0.0, against: str | None = None) -> SuiteComparison:
    """Pair the two results case by case and judge the difference. `against`: the version
    `champ` comes from when it is not the champion (a cumulative comparison)."""
    a, b = champ.scores(), cand.scores()
    if set(a) != set(b):
        raise ValueError(f"suite {champ.name!r}: {against or 'champion'} and candidate were evaluated on different cases")
    sign = 1 if champ.higher_is_better else -1
    worse = sum(1 for k in a if sign * (b[k] - a[k]) < 0)
    better = sum(1 for k in a if sign * (b[k] - a[k]) > 0)
    p = mcnemar_exact(worse, better, "greater")
    drop = sign * (champ.value - cand.value)  # > 0: the candidate is worse
    binary = champ.binary
    retained = kept = None
    if champ.kind == "closed_book":
        had = [k for k in a if a[k] >= 1.0]
        kept = sum(1 for k in had if b[k] >= 1.0)
        retained = kept / len(had) if had else 1.0
        drop = 1.0 - retained  # what forgetting means to a user: answers it no longer gives
    if binary:
        ci_a, ci_b = wilson(champ.correct, champ.n), wilson(cand.correct, cand.n)
    else:
        ci_a, ci_b = mean_ci(list(a.values())), mean_ci(list(b.values()))
    unit = "points" if binary else "nats/token"
    scale = 100 if binary else 1
    change = (f"{_fmt(champ.value, binary)} → {_fmt(cand.value, binary)} "
              f"({(cand.value - champ.value) * scale + 0.0:+.{1 if binary else 4}f} {unit}; {worse} case(s) worse, {better} better, "
              f"one-sided exact McNemar p = {p:.3g})")
    if retained is not None:
        change += f"; retained {100 * retained:.0f}% of {against or 'the champion'}'s {len(had)} right answers"
    measure = f"loss of {against or 'the champion'}'s right answers" if retained is not None else "drop"
    if role == "info":
        verdict, why = "info", "reported only: never blocks"
    elif role == "new skill":
        gain = cand.value - champ.value
        perfect = champ.value >= 1.0 and cand.value >= 1.0
        if gain > min_gain or perfect:
            verdict, why = "improved", "the new skill improved" if not perfect else "the new skill is already perfect"
        else:
            verdict = "not improved"
            why = f"the new skill must improve by more than {min_gain * scale:g} {unit}"
    elif drop > tolerance and p < alpha:
        verdict, why = "regressed", f"{measure} beyond the tolerance of {tolerance * scale:g} {unit} and p < {alpha:g}"
    elif drop > tolerance:
        verdict, why = "drop not significant", f"{measure} beyond tolerance but p ≥ {alpha:g}: noise on {champ.n} cases"
    elif drop > 0:
        verdict, why = "drop within tolerance", f"within the tolerance of {tolerance * scale:g} {unit}"
    else:
        verdict, why = "ok", "no drop"
    return SuiteComparison(
        name=champ.name, kind=champ.kind, role=role, metric=champ.metric,
        higher_is_better=champ.higher_is_better, n=champ.n, champion=champ.value,
        candidate=cand.value, worse_cases=worse, better_cases=better, p_value=p,
        tolerance=tolerance, ci_champion=ci_a, ci_candidate=ci_b, verdict=verdict,
        reason=f"{champ.name}{f' since {against}' if against else ''}: {change}: {why}", retained=retained,
        champion_correct=len(had) if retained is not None else None, against=against,
    )


def decide(champion: list[SuiteResult], candidate: list[SuiteResult], config: GateConfig,
           new_skill: str | None = None,
           anchors: dict[str, tuple[str, SuiteResult]] | None = None) -> GateDecision:
    """The per-suite verdicts and the decision, with a reason for each blocking suite.

    anchors: suite name -> (version, its result) for the cumulative comparisons (the version
    that learned a skill, the base for a general suite); judged like the champion's."""
    by_name = {r.name: r for r in candidate}
    if [r.name for r in champion] != [r.name for r in candidate]:
        raise ValueError("champion and candidate were evaluated on different suites")
    if new_skill is not None and new_skill not in by_name:
        raise ValueError(f"the new skill {new_skill!r} was not evaluated")
    suites, roles = [], {}
    for champ in champion:
        role = ("new skill" if champ.name == new_skill else "skill" if champ.kind == "skill"
                else "info" if champ.kind in INFO_KINDS else "probe")
        roles[champ.name] = role
        suites.append(compare_suite(champ, by_name[champ.name], tolerance=config.tolerance_for(champ),
                                    alpha=config.alpha, role=role, min_gain=config.min_gain))
    since = []
    for name, (version, anchor) in (anchors or {}).items():
        if name not in by_name:
            raise ValueError(f"anchor for {name!r} ({version}): the candidate was not evaluated on that suite")
        if roles[name] in ("skill", "probe"):  # the new skill is judged by its gain; info never blocks
            since.append(compare_suite(anchor, by_name[name], tolerance=config.tolerance_for(anchor),
                                       alpha=config.alpha, role=roles[name], against=version))
    blocking = [s for s in suites + since if s.blocks]
    if blocking:
        return GateDecision(False, [s.reason for s in blocking], suites, since)
    reasons = [f"no suite dropped beyond its tolerance with p < {config.alpha:g} ({len(suites)} suites"
               + (f"; {len(since)} also against the version each is anchored to" if since else "") + ")"]
    reasons += [s.reason for s in suites if s.role == "new skill"]
    return GateDecision(True, reasons, suites, since)


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


class SkillSuite:
    """A skill's held-out cases with its own tools, no demonstrations in context."""

    kind = "skill"

    def __init__(self, name: str, cases: list[dict], tools: list[dict], memory, max_new_tokens: int | None):
        self.name, self.cases, self.tools, self.memory = name, cases, tools, memory
        self.max_new_tokens = max_new_tokens

    def items_key(self) -> list:
        return [self.max_new_tokens, self.tools, [[c.get("id"), c["messages"], c["expected"]] for c in self.cases]]

    def run(self, model, tokenizer, *, batch_size: int = 8, model_name: str | None = None, **_) -> SuiteResult:
        return evaluate_skill(model, tokenizer, self.cases, self.tools, name=self.name,
                              recaller=memory_recaller(self.memory, self.name), batch_size=batch_size,
                              max_new_tokens=self.max_new_tokens, model_name=model_name)


def gate_suites(home, memory, skills: list[str], config: GateConfig) -> tuple[list, list[str]]:
    """(suites, notes): every skill's held-out cases, then the general probes, in report order."""
    from skills.probes import DEFAULT_SETS, default_probes, load_probe_file

    suites: list = [SkillSuite(s, memory.eval_cases(s), memory.tools_for(s), memory, config.max_new_tokens)
                    for s in skills]
    probes, notes = default_probes(home, sets=tuple(config.probe_sets if config.probe_sets is not None else DEFAULT_SETS),
                                   limit=config.probe_limit, seed=config.probe_seed, fetch=config.fetch_probes,
                                   max_new_tokens=config.instruction_max_new_tokens, memory=memory,
                                   limits=config.probe_limits)
    taken = {p.name for p in probes} | set(skills)
    for path in config.probe_files:
        p = load_probe_file(path, limit=config.probe_limit, seed=config.probe_seed,
                            max_new_tokens=config.instruction_max_new_tokens)
        while p.name in taken:
            p.name += "_"
        taken.add(p.name)
        probes.append(p)
    return suites + probes, notes


def decoding_settings(config: GateConfig) -> dict:
    """What decides the generated tokens besides the model: part of every cache key and report."""
    try:
        from skills.generation import DECODING  # the decoding path records its own settings
    except ImportError:
        DECODING = {"greedy": True}
    from agent.decode import default_call_threshold, default_constrain, default_grounding

    # tool calls are constrained unless switched off for the run (SDFT_AGENT_CONSTRAIN=0): only
    # the exception is written, so the keys of results cached under the default stay valid; the
    # call decision (agent.decode) is written when on, so results cached before it are not reused
    free = {} if default_constrain() else {"tool_calls": "free"}
    threshold = default_call_threshold()
    decided = {"call_threshold": threshold} if threshold > 0 else {}
    # grounded calls and arguments (agent.grounding) are written when on: results cached before
    # them are not reused
    grounded = {"grounded_calls": True, "grounded_arguments": True} if default_grounding() else {}
    return {**DECODING, "batch_size": config.batch_size, **free, **decided, **grounded}


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


def _evaluate(store, version: str, suites: list, config: GateConfig, *, base: str, log,
              references: dict | None = None) -> tuple[list[SuiteResult], dict, object, object]:
    """Load `version`, run `suites` on it; (results, drift references it can serve as champion,
    model, tokenizer). references: the champion's results and drift payloads, for the suites
    that judge a candidate against them (open-answer collapse, drift from the champion)."""
    from skills.probes import ChampionDriftProbe, DriftProbe, OpenHealthProbe
    from skills.probes.generated import Generations

    log(f"loading {version}…")
    model, tokenizer = _load(store, version)
    from agent.prompt import PromptFormat

    gens = Generations(model, PromptFormat(tokenizer), config.batch_size)
    drift = [s for s in suites if isinstance(s, DriftProbe) and s.ref is None]
    if drift:
        if version == base:
            for s in drift:
                s.reference(model, tokenizer, base)
        else:
            log(f"loading base {base} for drift from the base…")
            base_model, base_tok = _load(store, base)
            for s in drift:
                s.reference(base_model, base_tok, base)
            del base_model
    results, payloads = [], {}
    for s in suites:
        log(f"{version}: {s.name}…")
        t0 = time.perf_counter()
        if isinstance(s, ChampionDriftProbe):
            if references is None:  # this model is the champion: it is its own reference
                payloads[s.name] = s.reference(model, tokenizer, batch_size=config.batch_size, generations=gens)
                r = s.zero(version)
            else:
                r = s.run(model, tokenizer, reference=references["payloads"][s.name], model_name=version)
        elif isinstance(s, OpenHealthProbe) and references is not None:
            r = s.run(model, tokenizer, batch_size=config.batch_size, model_name=version, generations=gens,
                      reference=references["results"].get(s.name))
        else:
            r = s.run(model, tokenizer, batch_size=config.batch_size, model_name=version, generations=gens)
        r.wall_s = r.wall_s or time.perf_counter() - t0
        results.append(r)
    return results, payloads, model, (tokenizer, gens)


def _gate(store, memory, run_id, own_run, champion, cand_info, skill, skills, config, promote, log, t0):
    """Evaluate the champion (from its cache where it can) and the candidate, decide, move the
    alias or not, write and link the report."""
    from skills.probes import ChampionDriftProbe

    candidate = cand_info.version
    suites, notes = gate_suites(store.home, memory, skills, config)
    decoding = decoding_settings(config)
    keys = {s.name: fingerprint(s, decoding) for s in suites}
    base = store.lineage(candidate)[-1]

    # champion: cached per-case results where the suite and its items are unchanged
    cache = GateCache(store.home, champion)
    champ: dict[str, SuiteResult] = {}
    payloads: dict = {}
    if config.cache:
        for s in suites:
            r = cache.get(keys[s.name])
            if r is not None and isinstance(s, ChampionDriftProbe):
                p = cache.get_payload(keys[s.name])
                if p is None:
                    continue
                payloads[s.name] = p
            if r is not None:
                champ[s.name] = r
    missing = [s for s in suites if s.name not in champ]
    # open-answer health is judged against the champion's answers: evaluate the champion first
    if missing:
        results, fresh, model, _ = _evaluate(store, champion, missing, config, base=base, log=log)
        for s, r in zip(missing, results, strict=True):
            champ[s.name] = r
            cache.put(keys[s.name], r)
        for name, p in fresh.items():
            payloads[name] = p
            cache.put_payload(keys[name], p)
        del model
        gc.collect()
    cached = [s.name for s in suites if s not in missing]
    if cached:
        notes.append(f"champion {champion}: {len(cached)} of {len(suites)} suites from its cache")
    champ_results = [champ[s.name] for s in suites]

    anchors = (_anchor_results(store, memory, suites, keys, candidate, champion, skill, config, base, log, notes)
               if config.cumulative else {})

    refs = {"results": champ, "payloads": payloads}
    cand_results, _, model, (tokenizer, gens) = _evaluate(store, candidate, suites, config, base=base, log=log,
                                                          references=refs)
    results = {champion: champ_results, candidate: cand_results}
    decision = decide(champ_results, cand_results, config, new_skill=skill, anchors=anchors)
    promoted = False
    if decision.promote and promote:
        # the candidate's results become the champion cache of the next night: its open answers are
        # scored on their own (no reference) and it is the reference for drift
        _cache_as_champion(store.home, candidate, suites, keys, cand_results, model, tokenizer, gens, config)
        from memory.models import ChampionMoved

        try:  # a compare-and-set: of two gates judged against one champion, one promotes
            store.use(candidate, reason=f"retention gate, run {run_id}: promoted over {champion}",
                      expected=champion)
            promoted = True
        except ChampionMoved as exc:
            decision = GateDecision(False, [str(exc)], decision.suites, decision.since)
    elif decision.promote:
        decision.reasons.insert(0, "dry run: the gate would promote, the alias was not moved")
    del model
    gc.collect()
    summary = _summary(run_id, champion, candidate, cand_info.parent, base, skill, decision, results,
                       config, notes, promoted, time.perf_counter() - t0)
    summary["decoding"] = decoding
    summary["cached_suites"] = cached
    from learner.report import history_matrix, write_report

    summary["matrix"] = history_matrix(store, memory, summary)
    folder = _report_folder(store.home, run_id)
    md, html = write_report(folder, summary, results[champion], results[candidate],
                            anchors={name: r for name, (_, r) in anchors.items()})
    summary["report"] = str(md)
    report_id = memory.add_gate_report(run_id, decision.decision, summary, str(md))
    (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    doc = {v: [r.to_dict() for r in rs] for v, rs in results.items()}
    if anchors:  # the anchors' cases, under a key no version name can take
        doc["anchors"] = {name: {"version": v, "result": r.to_dict()} for name, (v, r) in anchors.items()}
    (folder / "results.json").write_text(json.dumps(doc, ensure_ascii=False, default=str) + "\n")
    if own_run:
        memory.finish_run(run_id, "promoted" if promoted else "blocked",
                          metrics={"gate": {"decision": decision.decision, "report": str(md)}})
    return GateOutcome(run_id, decision, champion, candidate, promoted, report_id, md, html, summary)


def anchor_versions(store, memory, suites: list, candidate: str, champion: str,
                    new_skill: str | None) -> dict[str, str]:
    """Suite name -> the version its cumulative comparison is against: for an earlier skill, the
    nearest version on the candidate's lineage that learned it (a learning run made it); for a
    general suite, the base. Suites whose anchor is the champion (already compared), the new
    skill (judged by its gain), drift (relative to the champion by definition) and info-only
    suites have none."""
    from learner.report import learned_by_run
    from skills.probes import ChampionDriftProbe, DriftProbe

    lineage = store.lineage(candidate)[1:]  # the candidate's ancestors, nearest first
    base = lineage[-1] if lineage else candidate
    made_by = learned_by_run(memory)  # version -> skill its learning run learned
    out = {}
    for s in suites:
        if getattr(s, "kind", None) == "skill":
            if s.name == new_skill:
                continue
            anchor = next((v for v in lineage if made_by.get(v) == s.name), None)
        elif isinstance(s, (ChampionDriftProbe, DriftProbe)) or getattr(s, "kind", None) in INFO_KINDS:
            continue
        else:
            anchor = base
        if anchor is not None and anchor != champion:
            out[s.name] = anchor
    return out


def _anchor_results(store, memory, suites, keys, candidate, champion, skill, config, base, log,
                    notes: list[str]) -> dict[str, tuple[str, SuiteResult]]:
    """Each anchored suite's result on its anchor version: from that version's gate cache, or
    evaluated now (and cached) where the suite's items changed since it was cached."""
    wanted = anchor_versions(store, memory, suites, candidate, champion, skill)
    out: dict[str, tuple[str, SuiteResult]] = {}
    for version in dict.fromkeys(wanted.values()):
        mine = [s for s in suites if wanted.get(s.name) == version]
        cache = GateCache(store.home, version)
        missing = []
        for s in mine:
            r = cache.get(keys[s.name]) if config.cache else None
            if r is None:
                missing.append(s)
            else:
                out[s.name] = (version, r)
        if missing:
            log(f"{version}: {len(missing)} suite(s) for the comparison since {version} are not cached…")
            results, _, model, _ = _evaluate(store, version, missing, config, base=base, log=log)
            for s, r in zip(missing, results, strict=True):
                cache.put(keys[s.name], r)
                out[s.name] = (version, r)
            del model
            gc.collect()
        notes.append(f"against {version} as well ({', '.join(s.name for s in mine)}): "
                     f"{len(mine) - len(missing)} from its cache, {len(missing)} evaluated now")
    return {s.name: out[s.name] for s in suites if s.name in out}  # report order


def _cache_as_champion(home, version, suites, keys, results, model, tokenizer, gens, config) -> None:
    from skills.probes import ChampionDriftProbe, OpenHealthProbe

    cache = GateCache(home, version)
    for s, r in zip(suites, results, strict=True):
        if isinstance(s, ChampionDriftProbe):
            cache.put_payload(keys[s.name], s.reference(model, tokenizer, batch_size=config.batch_size, generations=gens))
            r = s.zero(version)
        elif isinstance(s, OpenHealthProbe):
            r = s.score([c["answer"] for c in r.cases], model_name=version, wall_s=r.wall_s)
        cache.put(keys[s.name], r)


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
        "since": [s.to_dict() for s in decision.since],
        "accuracies": {"champion": accuracies(results[champion]), "candidate": accuracies(results[candidate])},
        "wall_s": round(wall_s, 1),
        "eval_wall_s": {v: round(sum(r.wall_s for r in rs), 1) for v, rs in results.items()},
        "config": config.to_dict(),
        "notes": notes + [f"{r.name}: {n}" for r in results[champion] for n in r.notes],
    }
