"""The call decision on and off: tool restraint and every installed skill's held-out accuracy of
some versions of one home, decoded greedily with `call_threshold` 0 (the likeliest token: a call
whenever its opening is the argmax) and with each threshold given (call only when the model puts
at least that much probability on opening one; agent.decode).

Made for issue 12: after learning tools a 135M model opens a call for "Good night!" with P 0.1–0.3
because every word is below that; does deciding the call as a binary choice keep restraint, and
what does it cost the skills learned?

    flock /tmp/sdft-heavy.lock python benchmarks/call_decision.py --home /work/nightly/rstream \\
        --versions base,v0004,v0006 --thresholds 0,0.5 --gate-set probe_limit=12 \\
        --gate-set "probe_limits=$LIM" --out benchmarks/results/call_decision.json
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
from learner.gate import GateConfig, _load, gate_suites  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--versions", required=True, help="comma-separated versions (or base)")
    ap.add_argument("--thresholds", default="0,0.5", help="comma-separated call thresholds (0: off)")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    config = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    thresholds = [float(t) for t in args.thresholds.split(",")]
    store = ModelStore(args.home, quiet=True)
    with Memory(args.home) as memory:
        suites, _ = gate_suites(args.home, memory, [s["name"] for s in memory.list_skills()], config)
        wanted = [s for s in suites if getattr(s, "kind", "") == "skill" or s.name == "tool_restraint"]
        rows = []
        for version in args.versions.split(","):
            model, tok = _load(store, version)
            for suite in wanted:
                by_t = {}
                for t in thresholds:
                    start = time.perf_counter()
                    with deciding_calls(t):
                        r = suite.run(model, tok, batch_size=config.batch_size, model_name=version)
                    by_t[t] = (r, time.perf_counter() - start)
                base_r = by_t[thresholds[0]][0]
                for t, (r, secs) in by_t.items():
                    ref = {c["id"]: c for c in base_r.cases}
                    flips = [{"id": c["id"], "now": bool(c["correct"]),
                              "request": c.get("request") or c.get("prompt") or c.get("id"),
                              "before": ref[c["id"]].get("answer") or ref[c["id"]].get("output"),
                              "after": c.get("answer") or c.get("output")}
                             for c in r.cases if c["id"] in ref and bool(c["correct"]) != bool(ref[c["id"]]["correct"])]
                    row = {"version": version, "suite": suite.name, "threshold": t, "accuracy": r.value,
                           "n": len(r.cases), "seconds": round(secs, 1),
                           "gained": sum(f["now"] for f in flips), "lost": sum(not f["now"] for f in flips),
                           "flips": flips}
                    rows.append(row)
                    print(f"{version:6} {suite.name:24} t={t:<4} {r.value:6.1%} (n {len(r.cases)}) "
                          f"+{row['gained']} -{row['lost']}  {secs:5.0f} s", flush=True)
            del model
            Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
