"""One night again, in a home a nightly.py arm left, with other learner settings: what the gate
says of the candidate (dry run: the alias never moves).

Made to ask one question of the six-night experiment: with the cumulative gate judging general
suites against the base, can a retention teacher repair what the champion already lost? KL to
the champion keeps the champion's behaviour; `retention_teacher=base` teaches everyday prompts
from the base instead.

    python benchmarks/retention_teacher.py --home /work/nightly/served --skill Services_1_FindProvider \\
        --set retention_teacher=base --set max_steps=12 --set max_new_tokens=48 \\
        --gate-set probe_limit=12 --gate-set "probe_limits=$LIM" --out benchmarks/results/six_nights/served/night6_base_teacher.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learner.config import parse_settings, shipped_config  # noqa: E402
from learner.gate import GateConfig, run_gate  # noqa: E402
from learner.learn import learn_candidate  # noqa: E402
from memory.store import Memory  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--skill", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="LearnConfig field")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--replay", type=int, default=None, help="also rehearse N earlier demonstrations (LearnConfig.replay)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = shipped_config(**parse_settings(args.set))
    if args.replay is not None:
        cfg = dataclasses.replace(cfg, replay=args.replay)
    gate = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    with Memory(args.home) as memory:
        ids = [d["id"] for d in memory.demonstrations(args.skill)]
    if not ids:
        raise SystemExit(f"{args.home}: skill {args.skill!r} has no demonstrations")
    t = time.perf_counter()
    out = learn_candidate(args.home, cfg, skill=args.skill, demonstration_ids=ids, progress=False)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    g = run_gate(args.home, out.candidate, skill=args.skill, config=gate, promote=False,
                 log=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
    doc = {"args": vars(args), "config": cfg.to_dict(), "train_s": train_s, "gate_s": time.perf_counter() - t,
           "train": out.summary, "decision": g.decision.decision, "reasons": g.decision.reasons,
           "suites": g.summary["suites"], "since": g.summary["since"], "report": str(g.report_path)}
    Path(args.out).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"{out.candidate}: {g.decision.decision}; train {train_s:.0f} s")
    for r in g.decision.reasons:
        print("  -", r)
    for s in g.summary["suites"] + g.summary["since"]:
        print(f"  {s['name']:24} {'since ' + s['against'] if s.get('against') else s['role']:14} "
              f"{s['champion']:.3f} -> {s['candidate']:.3f}  {s['worse_cases']}/{s['better_cases']}  {s['verdict']}")


if __name__ == "__main__":
    main()
