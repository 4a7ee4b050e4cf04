"""Recall into context, per skill, on versions that learned some skills and not others: each
installed skill's held-out accuracy with nothing in context and with k demonstrations recalled
(the skill's own tools offered, as the gate's skill suites and `sdft-agent eval --recall K` do).

Made for issue 12: the agent recalls demonstrations into the prompt, and a skill the model was
trained on may do worse with them there (a first look, one version: two learned skills lost 19
and 25 points, the unlearned one gained 19). The agent now leaves out the demonstrations of
skills the serving model learned (`AgentConfig.recall_learned`, memory.Memory.skills_learned_by);
this measures that rule against always and never recalling, per version:

    policy = recall 0 for the version's learned skills, recall k for the others

    flock /tmp/sdft-heavy.lock python benchmarks/recall_policy.py --home /work/nightly/NAME \\
        --versions base,v0001,v0002 --k 3 --out benchmarks/results/recall_policy.json
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

from learner.gate import _load  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.evaluate import evaluate_memory_skill  # noqa: E402


def summarise(rows: list[dict]) -> dict:
    """Mean accuracy over skills for never / always / the policy, and over learned and unlearned
    skills apart (each skill weighs the same: the goal is a per-skill average)."""
    def mean(xs):
        return round(sum(xs) / len(xs), 4) if xs else None
    learned = [r for r in rows if r["learned"]]
    other = [r for r in rows if not r["learned"]]
    return {
        "never": mean([r["recall_0"] for r in rows]),
        "always": mean([r["recall_k"] for r in rows]),
        "policy": mean([r["recall_0"] if r["learned"] else r["recall_k"] for r in rows]),
        "learned": {"n": len(learned), "recall_0": mean([r["recall_0"] for r in learned]),
                    "recall_k": mean([r["recall_k"] for r in learned])},
        "not_learned": {"n": len(other), "recall_0": mean([r["recall_0"] for r in other]),
                        "recall_k": mean([r["recall_k"] for r in other])},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--versions", required=True, help="comma-separated versions (base: the home's base)")
    ap.add_argument("--skills", default=None, help="comma-separated skills (default: every installed one)")
    ap.add_argument("--k", type=int, default=3, help="demonstrations recalled (the agent's default: 3)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    store = ModelStore(args.home, quiet=True)
    doc: dict = {"args": vars(args), "versions": []}
    with Memory(args.home) as memory:
        skills = args.skills.split(",") if args.skills else [s["name"] for s in memory.list_skills()]
        for version in args.versions.split(","):
            model, tok = _load(store, version)
            learned = set(memory.skills_learned_by(version))  # none for the base
            rows = []
            for skill in skills:
                t0 = time.perf_counter()
                r0 = evaluate_memory_skill(model, tok, memory, skill, recall=0, batch_size=args.batch_size,
                                           model_name=version)
                rk = evaluate_memory_skill(model, tok, memory, skill, recall=args.k, batch_size=args.batch_size,
                                           model_name=version)
                row = {"skill": skill, "learned": skill in learned, "n": r0.n,
                       "recall_0": round(r0.value, 4), "recall_k": round(rk.value, 4),
                       "seconds": round(time.perf_counter() - t0, 1),
                       "cases": [{"request": a["request"], "recall_0": a["correct"], "recall_k": b["correct"],
                                  "answer_0": a["answer"][:200], "answer_k": b["answer"][:200]}
                                 for a, b in zip(r0.cases, rk.cases, strict=True)]}
                rows.append(row)
                print(f"{version:6} {skill:34} {'learned' if row['learned'] else 'not learned':11} "
                      f"recall 0 {row['recall_0']:6.1%}  recall {args.k} {row['recall_k']:6.1%}  "
                      f"n {row['n']}  ({row['seconds']:.0f} s)", flush=True)
            summary = summarise(rows)
            doc["versions"].append({"version": version, "learned": sorted(learned), "skills": rows,
                                    "summary": summary})
            print(f"{version:6} mean: never {summary['never']:.1%}  always {summary['always']:.1%}  "
                  f"policy {summary['policy']:.1%}", flush=True)
            Path(args.out).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
