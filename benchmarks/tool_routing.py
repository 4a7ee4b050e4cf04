"""Tool routing (agent.routing) on and off: tool restraint and every installed skill's held-out
accuracy of some versions of one home, with the tools the agent serves — every installed tool
(what `sdft-agent run` offers without routing), the routed ones, and for reference the skill's
own tools alone (the gate's skill suites).

Made for issue 12: a 135M model that has learned six skills calls a tool for "Thanks, that was
helpful!" with thirteen tools' schemas in its prompt; the memory's demonstrations say which
skills a request resembles. What does offering only those keep, and what does it cost the skills?

A routed case whose expected tool is not offered is wrong without a model run (the agent refuses
a call to a tool it did not offer); the rest are decoded, one batch per tool set.

    flock /tmp/sdft-heavy.lock python benchmarks/tool_routing.py --home /work/nightly/rstream \\
        --versions base,v0002,v0006 --gate-set probe_limit=12 --gate-set "probe_limits=$LIM" \\
        --out benchmarks/results/tool_routing.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.routing import Router  # noqa: E402
from learner.config import parse_settings  # noqa: E402
from learner.gate import GateConfig, _load  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.evaluate import evaluate_skill, user_text  # noqa: E402
from skills.probes import default_probes  # noqa: E402
from skills.retention import unneeded_requests  # noqa: E402

CONDITIONS = ("own", "all", "routed")


def routing_table(memory, router: Router, names: list[str], restraint) -> dict:
    """What routing offers, no model: per skill, how many held-out requests are offered their
    expected tools; for restraint, how many tools each request is offered."""
    out = {"skills": {}, "restraint": {}}
    for s in memory.list_skills():
        cases = memory.eval_cases(s["name"])
        offered = [router.route(user_text(c["messages"]), names).offered for c in cases]
        reach = [all(e["name"] in o for e in c["expected"]) for c, o in zip(cases, offered, strict=True)]
        out["skills"][s["name"]] = {"n": len(cases), "reached": sum(reach),
                                    "mean_offered": sum(map(len, offered)) / max(1, len(offered))}
    sizes = [len(t) for t in restraint.offered()]
    r = sum(1 for i in restraint.case_ids() if i.startswith("r"))
    out["restraint"] = {"needs_none": r, "offered_none": sizes[:r].count(0),
                        "mean_offered_needs_none": sum(sizes[:r]) / max(1, r),
                        "mean_offered_skill_requests": sum(sizes[r:]) / max(1, len(sizes) - r)}
    return out


def skill_accuracy(model, tok, memory, router: Router, skill: str, condition: str, served: list[dict],
                   batch_size: int) -> dict:
    cases = memory.eval_cases(skill)
    if condition == "own":
        groups = {None: (memory.tools_for(skill), list(range(len(cases))))}
    elif condition == "all":
        groups = {None: (served, list(range(len(cases))))}
    else:
        groups = {}
        names = [t["name"] for t in served]
        for i, c in enumerate(cases):
            offered = router.route(user_text(c["messages"]), names).offered
            groups.setdefault(tuple(offered), ([t for t in served if t["name"] in offered], []))[1].append(i)
    correct: dict[int, tuple[bool, str]] = {}
    for tools, rows in groups.values():
        run = [i for i in rows if all(e["name"] in {t["name"] for t in tools} for e in cases[i]["expected"])]
        for i in set(rows) - set(run):
            correct[i] = (False, "expected tool not offered")
        if run:
            r = evaluate_skill(model, tok, [cases[i] for i in run], tools, name=skill, batch_size=batch_size)
            for i, c in zip(run, r.cases, strict=True):
                correct[i] = (bool(c["correct"]), c["answer"])
    ok = [correct[i][0] for i in range(len(cases))]
    return {"accuracy": sum(ok) / len(ok), "correct": sum(ok), "n": len(ok),
            "cases": [{"request": user_text(cases[i]["messages"]), "correct": correct[i][0], "answer": correct[i][1]}
                      for i in range(len(cases))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--versions", required=True, help="comma-separated versions (or base)")
    ap.add_argument("--skill-versions", default=None,
                    help="versions whose skills are measured too (default: every version but base)")
    ap.add_argument("--conditions", default="all,routed",
                    help=f"skills' tool sets to measure, of {','.join(CONDITIONS)} (own: the gate's skill suites)")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--restraint", default="tool_restraint,tool_restraint_routed",
                    help="restraint suites to run (tool_restraint: every tool; tool_restraint_routed)")
    ap.add_argument("--routing-only", action="store_true", help="print what routing offers; no model runs")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    config = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    versions = args.versions.split(",")
    conditions = args.conditions.split(",")
    if not set(conditions) <= set(CONDITIONS):
        raise SystemExit(f"--conditions: choose from {', '.join(CONDITIONS)}")
    skill_versions = (args.skill_versions.split(",") if args.skill_versions is not None
                      else [v for v in versions if v != "base"])
    store = ModelStore(args.home, quiet=True)
    doc: dict = {"args": vars(args), "rows": []}
    with Memory(args.home) as memory:
        probes, notes = default_probes(args.home, sets=("tool_restraint", "tool_restraint_routed"),
                                       limit=config.probe_limit, limits=config.probe_limits, seed=config.probe_seed,
                                       fetch=config.fetch_probes, memory=memory)
        served = memory.served_tools()
        names = [t["name"] for t in served]
        router = Router(memory, unneeded_requests(served))  # as `run --route` and the routed suite
        doc["routing"] = routing_table(memory, router, names, probes[1])
        probes = [p for p in probes if p.name in args.restraint.split(",")]
        doc["notes"] = notes
        print(json.dumps(doc["routing"], indent=1), flush=True)
        if args.routing_only:
            return
        for version in versions:
            model, tok = _load(store, version)
            for probe in probes:
                t0 = time.perf_counter()
                r = probe.run(model, tok, batch_size=config.batch_size, model_name=version)
                rr = [c for c in r.cases if c["id"].startswith("r")]
                xx = [c for c in r.cases if c["id"].startswith("x")]
                row = {"version": version, "suite": probe.name, "accuracy": r.value, "n": r.n,
                       "needs_none": [sum(c["correct"] for c in rr), len(rr)],
                       "skill_requests": [sum(c["correct"] for c in xx), len(xx)],
                       "seconds": round(time.perf_counter() - t0, 1), "notes": r.notes, "cases": r.cases}
                doc["rows"].append(row)
                print(f"{version:6} {probe.name:22} {r.value:6.1%}  needs none {row['needs_none'][0]}/{len(rr)}  "
                      f"skill requests {row['skill_requests'][0]}/{len(xx)}  ({row['seconds']:.0f} s)", flush=True)
            if version in skill_versions:
                for s in memory.list_skills():
                    for condition in conditions:
                        t0 = time.perf_counter()
                        acc = skill_accuracy(model, tok, memory, router, s["name"], condition, served,
                                             config.batch_size)
                        doc["rows"].append({"version": version, "suite": s["name"], "tools": condition,
                                            "seconds": round(time.perf_counter() - t0, 1), **acc})
                        print(f"{version:6} {s['name']:22} {condition:6} {acc['accuracy']:6.1%} "
                              f"({acc['correct']}/{acc['n']}, {time.perf_counter() - t0:.0f} s)", flush=True)
            del model
            Path(args.out).write_text(json.dumps(doc, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
