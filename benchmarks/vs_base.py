"""After a run of nights: the champion it ended with, judged by the gate against the base it
started from, on every suite with every skill installed (a dry run: nothing is promoted).

Each night's gate compares the candidate with the night's champion, so small losses can pile up
unseen across nights; this is the whole sequence's change from the base, with the same paired
tests and per-case report, e.g. "closed-book answers retained" relative to what the base knew.

    flock /tmp/sdft-heavy.lock python benchmarks/vs_base.py --home /work/nightly/kl \\
        --gate-set probe_limit=12 --gate-set "probe_limits=$LIM" --out benchmarks/results/six_nights/kl

Writes <out>/vs_base.json (the gate's summary) and <out>/vs_base.md (its report). The champion is
switched to the base for the comparison and switched back afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learner.config import parse_settings  # noqa: E402
from learner.gate import GateConfig, run_gate  # noqa: E402
from memory.models import ModelStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="the home the nights ran in")
    ap.add_argument("--base", default="base", help="the version the nights started from")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    store = ModelStore(args.home, quiet=True)
    final = store.champion_name()
    if final == args.base:
        raise SystemExit(f"the champion of {args.home} is still {args.base}: no night was promoted")
    gate = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    store.use(args.base, reason="benchmark: judge the final champion against the base")
    try:
        outcome = run_gate(args.home, final, config=gate, promote=False,
                           log=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
    finally:
        store.use(final, reason="benchmark: back to the final champion")
    summary = {**outcome.summary, "final": final, "base": args.base, "wall_s": time.perf_counter() - t}
    (out / "vs_base.json").write_text(json.dumps(summary, indent=1, default=str))
    shutil.copyfile(outcome.report_path, out / "vs_base.md")
    for s in summary.get("suites", []):
        print(f"{s['name']:>24}  {s['champion']:.3f} -> {s['candidate']:.3f}")
    print(f"{'blocked' if not outcome.decision.promote else 'would pass'}: " + "; ".join(outcome.decision.reasons))


if __name__ == "__main__":
    main()
