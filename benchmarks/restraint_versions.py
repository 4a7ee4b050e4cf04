"""Tool restraint of several versions of one home, with the tools that home serves, free and
constrained: what users get from each champion or candidate as skills are installed.

Made for one question of issue 12: how much of the six-night restraint loss is calls the served
agent cannot make (invented tool names, which constrained decoding rules out), and how much is
calling where no tool is needed.

    flock /tmp/sdft-heavy.lock python benchmarks/restraint_versions.py --home /work/nightly/served \\
        --versions base,v0002,v0008,v0009 --gate-set probe_limit=12 --gate-set "probe_limits=$LIM" \\
        --out benchmarks/results/six_nights/served/restraint_versions.json
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

from learner.config import parse_settings  # noqa: E402
from learner.gate import GateConfig, _load, gate_suites  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--versions", required=True, help="comma-separated versions (or base)")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--decoding", choices=["both", "constrained", "free"], default="both")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    config = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    store = ModelStore(args.home, quiet=True)
    with Memory(args.home) as memory:
        suites, _ = gate_suites(args.home, memory, [s["name"] for s in memory.list_skills()], config)
    probe = next(s for s in suites if s.name == "tool_restraint")
    rows = []
    for version in args.versions.split(","):
        model, tok = _load(store, version)
        for constrain in {"both": (False, True), "constrained": (True,), "free": (False,)}[args.decoding]:
            t = time.perf_counter()
            r = probe.run(model, tok, batch_size=config.batch_size, model_name=version, constrain=constrain)
            kinds = {"needs none": [c for c in r.cases if c["id"].startswith("r")],
                     "cross-skill": [c for c in r.cases if c["id"].startswith("x")]}
            row = {"version": version, "constrained": constrain, "accuracy": r.value, "n": len(r.cases),
                   "seconds": time.perf_counter() - t,
                   **{k: [sum(c["correct"] for c in v), len(v)] for k, v in kinds.items()},
                   "failures": [{"id": c["id"], "request": c["request"], "answer": c["answer"], "reason": c["reason"]}
                                for c in r.cases if not c["correct"]]}
            rows.append(row)
            print(f"{version:6} {'constrained' if constrain else 'free':11} {r.value:6.1%}  needs none "
                  f"{row['needs none'][0]}/{row['needs none'][1]}  cross-skill {row['cross-skill'][0]}/"
                  f"{row['cross-skill'][1]}  ({row['seconds']:.0f} s)", flush=True)
        del model
    Path(args.out).write_text(json.dumps({"args": vars(args), "tools": len(probe.tools), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
