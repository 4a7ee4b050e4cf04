"""The call decision on and off: tool restraint and every installed skill's held-out accuracy of
some versions of one home, decoded greedily with `call_threshold` 0 (the likeliest token: a call
whenever its opening is the argmax) and at each threshold of a grid (call only when the model
puts at least that much probability on opening one; agent.decode). Two runs per suite give the
whole grid exactly: threshold 0, and threshold 1 (every decided reply under the no-call grammar)
with each case's P(call) recorded; at threshold t a case has the first reply where P ≥ t, else
the second.

Made for issue 12: after learning tools a 135M model opens a call for "Good night!" with P 0.1–0.3
because every word is below that; does deciding the call as a binary choice keep restraint, and
what does it cost the skills learned?

    flock /tmp/sdft-heavy.lock python benchmarks/call_decision.py --home /work/nightly/rstream \\
        --versions v0002,v0004,v0006 --gate-set probe_limit=12 \\
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

import skills.generation  # noqa: E402
from agent.decode import deciding_calls  # noqa: E402
from learner.config import parse_settings  # noqa: E402
from learner.gate import GateConfig, _load, gate_suites  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402


class Recorder:
    """P(call) of every decided request, in the order the suites asked (skills.generation's
    complete wrapped), so a suite run with the threshold at 1 gives each case's P beside its no-call reply."""

    def __init__(self):
        self.seen: list[float | None] = []
        self.real = skills.generation.complete

    def __call__(self, model, fmt, requests, **kw):
        done = self.real(model, fmt, requests, **kw)
        self.seen += [c.call_p for c in done]
        return done


def curve(at0: list[dict], at1: list[dict], p: list[float | None], grid: list[float]) -> dict:
    """Accuracy at each threshold, exactly: a case decided (P known) keeps its threshold-0 reply
    where P ≥ t and has its no-call reply (threshold 1) below; an undecided case is the same."""
    out = {}
    for t in grid:
        ok = [(c0 if pi is None or pi >= t else c1)["correct"] for c0, c1, pi in zip(at0, at1, p, strict=True)]
        out[t] = sum(bool(x) for x in ok) / len(ok)
    return out


def rescore(args, config: GateConfig, grid: list[float], store: ModelStore) -> None:
    """The restraint rows of a saved run scored again from their saved replies (a scoring rule
    changed since); the skill rows are unchanged."""
    from transformers import AutoTokenizer

    from agent.prompt import PromptFormat

    doc = json.loads(Path(args.out).read_text())
    with Memory(args.home) as memory:
        suites, _ = gate_suites(args.home, memory, [s["name"] for s in memory.list_skills()], config)
    probe = next(s for s in suites if s.name == "tool_restraint")
    fmt = PromptFormat(AutoTokenizer.from_pretrained(store.get("base").path))
    for row in doc["rows"]:
        if row["suite"] != probe.name:
            continue
        ids = [c["id"] for c in row["cases"]]
        free = probe.score([c["free"] for c in row["cases"]], fmt).cases
        none = probe.score([c["no_call"] for c in row["cases"]], fmt).cases
        if [c["id"] for c in free] != ids:
            raise SystemExit("the saved cases are not the suite's: run again without --rescore")
        for c, f, n in zip(row["cases"], free, none, strict=True):
            c["correct_free"], c["correct_no_call"] = bool(f["correct"]), bool(n["correct"])
        row["accuracy"] = curve(free, none, [c["p_call"] for c in row["cases"]], grid)
        row["scoring_version"] = probe.scoring_version
        print(f"{row['version']:6} {row['suite']:24} " + "  ".join(f"t={t:g} {a:6.1%}" for t, a in row["accuracy"].items()))
    Path(args.out).write_text(json.dumps(doc, indent=1, default=str) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--versions", required=True, help="comma-separated versions (or base)")
    ap.add_argument("--grid", default="0,0.1,0.2,0.3,0.4,0.5", help="thresholds to report (0: off)")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rescore", action="store_true",
                    help="score the replies saved in --out again with the suites' current rules (no model runs)")
    args = ap.parse_args()
    config = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    grid = [float(t) for t in args.grid.split(",")]
    store = ModelStore(args.home, quiet=True)
    if args.rescore:
        return rescore(args, config, grid, store)
    rows = []
    with Memory(args.home) as memory:
        suites, _ = gate_suites(args.home, memory, [s["name"] for s in memory.list_skills()], config)
        wanted = [s for s in suites if getattr(s, "kind", "") == "skill" or s.name == "tool_restraint"]
        for version in args.versions.split(","):
            model, tok = _load(store, version)
            for suite in wanted:
                t0 = time.perf_counter()
                with deciding_calls(0.0):
                    off = suite.run(model, tok, batch_size=config.batch_size, model_name=version)
                t1 = time.perf_counter()
                rec = Recorder()
                skills.generation.complete = rec  # the suites decode through skills.generation
                try:
                    with deciding_calls(1.0):
                        none = suite.run(model, tok, batch_size=config.batch_size, model_name=version)
                finally:
                    skills.generation.complete = rec.real
                t2 = time.perf_counter()
                if len(rec.seen) != len(off.cases):
                    raise SystemExit(f"{suite.name}: {len(rec.seen)} requests for {len(off.cases)} cases")
                acc = curve(off.cases, none.cases, rec.seen, grid)
                cases = [{"id": c0["id"], "p_call": pi, "correct_free": bool(c0["correct"]),
                          "correct_no_call": bool(c1["correct"]),
                          "free": c0.get("answer") or c0.get("output"), "no_call": c1.get("answer") or c1.get("output"),
                          "request": c0.get("request")}
                         for c0, c1, pi in zip(off.cases, none.cases, rec.seen, strict=True)]
                rows.append({"version": version, "suite": suite.name, "n": len(cases), "accuracy": acc,
                             "seconds_free": round(t1 - t0, 1), "seconds_scored": round(t2 - t1, 1), "cases": cases})
                print(f"{version:6} {suite.name:24} " + "  ".join(f"t={t:g} {a:6.1%}" for t, a in acc.items())
                      + f"  ({t1 - t0:.0f} s free, {t2 - t1:.0f} s scored)", flush=True)
            del model
            Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
