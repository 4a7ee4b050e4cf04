"""Gate a candidate that is already in a home again, as a dry run (the alias never moves), with
the call decision at a given threshold (agent.decode): what the gate would have said of a night
had the agent served with it. Results are cached in the home under their own decoding key.

    python benchmarks/regate.py --home /work/n4/learned --candidate v0004 --skill Music_3_LookupMusic \\
        --call-threshold 0.5 --gate-set probe_limit=12 --gate-set "probe_limits=$LIM" \\
        --out benchmarks/results/six_nights/rstream/night4_regate_t05.json
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

from agent.decode import deciding_calls  # noqa: E402
from learner.config import parse_settings  # noqa: E402
from learner.gate import GateConfig, run_gate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--candidate", required=True)
    ap.add_argument("--skill", required=True, help="the skill the candidate learned")
    ap.add_argument("--call-threshold", type=float, required=True, help="0: the decision off")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    gate = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    t = time.perf_counter()
    with deciding_calls(args.call_threshold):
        g = run_gate(args.home, args.candidate, skill=args.skill, config=gate, promote=False,
                     log=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
    doc = {"args": vars(args), "gate_s": time.perf_counter() - t, "decision": g.decision.decision,
           "reasons": g.decision.reasons, "suites": g.summary["suites"], "since": g.summary["since"],
           "report": str(g.report_path)}
    Path(args.out).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"{args.candidate} at call threshold {args.call_threshold}: {g.decision.decision}")
    for r in g.decision.reasons:
        print("  -", r)


if __name__ == "__main__":
    main()
