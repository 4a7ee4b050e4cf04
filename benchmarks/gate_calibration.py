"""Calibrate the retention gate on real candidates: which does it block, which does it pass, and
how small a drop can each suite's n detect.

On the default model (SmolLM2-135M) with the bundled unit_convert skill, a row per candidate:
- `unchanged`: a copy of the base (must pass every suite);
- `noise-<s>`: Gaussian noise of std s × each tensor's own std added to every weight;
- `sft-<lr>x<steps>`: SFT on the skill's demonstrations from the base, the shipped recipe at the
  demo's budget (1e-3 × 12) and gentler / harsher ones.
Each is judged by the gate (dry run: the champion never moves; the base's results are cached
after the first row) and, independently of the gate, asked three plain questions that no suite
scores ("plain answers"), read by a person in the log. `--timing` instead measures the gate's
wall time with 1 and 6 installed skills, the champion cached and not.

    python benchmarks/gate_calibration.py --home /tmp/calib            # the table
    python benchmarks/gate_calibration.py --home /tmp/calib --timing   # gate wall time

Writes benchmarks/results/gate_calibration.json (or gate_timing.json) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from agent.loading import load  # noqa: E402
from agent.prompt import PromptFormat  # noqa: E402
from learner.config import parse_settings, shipped_config  # noqa: E402
from learner.gate import GateConfig, run_gate  # noqa: E402
from learner.learn import learn_candidate  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.generation import generate_texts  # noqa: E402
from skills.install import install_pack  # noqa: E402
from skills.pack import SkillPack, bundled_pack  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
PLAIN = ["What is the capital of France?", "What is 2 plus 2?", "Say hello.",
         "Give me three tips for sleeping better."]
CANDIDATES = ["unchanged", "noise-0.02", "noise-0.08", "sft-1e-4x24", "sft-3e-4x12", "sft-1e-3x4",
              "sft-1e-3x12", "sft-1e-3x24"]


def setup(home: Path, skills: list[str], eval_n: int) -> tuple[ModelStore, str]:
    store = ModelStore(home, quiet=True)
    if store.champion() is None:
        store.pull("smollm2-135m")
    with Memory(home) as mem:
        have = {s["name"] for s in mem.list_skills()}
        for name in skills:
            if name in have:
                continue
            pack = SkillPack.load(bundled_pack(name)) if name in ("unit_convert", "date_math", "catalog") \
                else _bfcl_pack(name)
            pack.eval = pack.eval[:eval_n]
            install_pack(mem, pack)
    return store, store.champion().version


def _bfcl_pack(function: str) -> SkillPack:
    from skills.bfcl import import_bfcl

    return import_bfcl(function=function, train=15, eval=16)


def make_candidate(store: ModelStore, home: Path, label: str, base: str, skill: str) -> str:
    if label == "unchanged" or label.startswith("noise-"):
        model, tok = load(base, store=store)
        if label.startswith("noise-"):
            s = float(label.split("-", 1)[1])
            g = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * s * p.float().std())
        with store.draft(parent=base, notes=f"calibration: {label}") as draft:
            model.save_pretrained(draft.path)
            tok.save_pretrained(draft.path)
        return draft.version
    lr, steps = label.split("-", 1)[1].split("x")
    with Memory(home) as mem:
        ids = [d["id"] for d in mem.demonstrations() if d.get("skill") == skill]
    out = learn_candidate(home, shipped_config(method="sft", lr=float(lr), max_steps=int(steps), seed=0),
                          skill=skill, version=base, demonstration_ids=ids, progress=False)
    return out.candidate


def plain_answers(store: ModelStore, version: str) -> list[str]:
    model, tok = load(version, store=store)
    fmt = PromptFormat(tok)
    return generate_texts(model, fmt, [fmt.encode([{"role": "user", "content": q}]) for q in PLAIN],
                          max_new_tokens=48, batch_size=4)


def detectable(n: int, champion_correct: int | None, alpha: float) -> float:
    """The smallest drop a suite of n cases can call significant: k worse cases and none better,
    with 0.5^k < alpha (one-sided exact McNemar), as a fraction of n (or of the champion's right
    answers, for retained)."""
    k = 1
    while 0.5 ** k >= alpha:
        k += 1
    return k / (champion_correct if champion_correct else n)


def gate_config(args) -> GateConfig:
    """The default gate, with --gate-set FIELD=VALUE overrides (JSON values), e.g. the demo's sizes."""
    return GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))


def calibrate(args) -> None:
    home = Path(args.home)
    store, base = setup(home, [args.skill], args.eval_n)
    rows = []
    cfg = gate_config(args)
    for label in args.candidates:
        t0 = time.perf_counter()
        cand = make_candidate(store, home, label, base, args.skill)
        t_make = time.perf_counter() - t0
        skill = args.skill if label.startswith("sft") else None
        out = run_gate(home, cand, skill=skill, config=cfg, promote=False, log=lambda m: print(f"  {m}", flush=True))
        answers = plain_answers(store, cand)
        row = {"label": label, "version": cand, "make_s": round(t_make, 1), "gate_s": out.summary["wall_s"],
               "decision": out.decision.decision, "reasons": out.decision.reasons, "plain": dict(zip(PLAIN, answers, strict=True)),
               "suites": [s.to_dict() for s in out.decision.suites], "report": str(out.report_path)}
        rows.append(row)
        print(f"{label:>12} {cand}: {row['decision']} in {row['gate_s']:.0f} s (made in {t_make:.0f} s)", flush=True)
        for q, a in row["plain"].items():
            print(f"    {q!r} -> {a!r}", flush=True)
        (OUT / args.out_name).write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows,
                                                               "config": cfg.to_dict()}, indent=1, default=str))
    print_table(rows, cfg)


def print_table(rows: list[dict], cfg: GateConfig) -> None:
    names = [s["name"] for s in rows[0]["suites"]]
    print("\n| candidate | decision | " + " | ".join(names) + " |")
    print("| --- | --- |" + " ---: |" * len(names))
    for r in rows:
        cells = []
        for s in r["suites"]:
            v = f"{100 * s['candidate']:.0f}%" if s["metric"] == "accuracy" else f"{s['candidate']:.3f}"
            if s.get("retained") is not None:
                v += f" (kept {100 * s['retained']:.0f}%)"
            cells.append(v + (" **✗**" if s["blocks"] else ""))
        print(f"| {r['label']} | {r['decision']} | " + " | ".join(cells) + " |")
    print("\n| suite | n | champion | tolerance | smallest significant drop at alpha |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for s in rows[0]["suites"]:
        if s["metric"] != "accuracy":
            print(f"| {s['name']} | {s['n']} | {s['champion']:.3f} | {s['tolerance']:g} | (all cases move: sign test) |")
            continue
        d = detectable(s["n"], s.get("champion_correct"), cfg.alpha)
        what = "of the champion's right answers" if s.get("champion_correct") else "points"
        print(f"| {s['name']} | {s['n']} | {100 * s['champion']:.0f}% | {100 * s['tolerance']:g} | "
              f"{100 * d:.1f} {what} |")


def timing(args) -> None:
    """Gate wall time, 1 and 6 skills, champion cached and not, on an unchanged candidate."""
    home = Path(args.home)
    results = []
    for skills in (["unit_convert"], ["unit_convert", "date_math", "catalog", *args.bfcl]):
        store, base = setup(home, skills, args.eval_n)
        cand = make_candidate(store, home, "unchanged", base, skills[0])
        for cache in (False, True):
            t0 = time.perf_counter()
            out = run_gate(home, cand, config=GateConfig(cache=cache), promote=False)
            dt = time.perf_counter() - t0
            results.append({"skills": len(skills), "cache": cache, "wall_s": round(dt, 1),
                            "eval_wall_s": out.summary["eval_wall_s"]})
            print(f"{len(skills)} skill(s), champion {'cached' if cache else 'evaluated'}: {dt:.0f} s", flush=True)
    (OUT / "gate_timing.json").write_text(json.dumps({"command": " ".join(sys.argv), "rows": results}, indent=1))
    print("\n| installed skills | champion | gate wall time (s) |\n| ---: | --- | ---: |")
    for r in results:
        print(f"| {r['skills']} | {'cached' if r['cache'] else 'evaluated'} | {r['wall_s']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True)
    ap.add_argument("--skill", default="unit_convert")
    ap.add_argument("--eval-n", type=int, default=16)
    ap.add_argument("--candidates", nargs="+", default=CANDIDATES)
    ap.add_argument("--timing", action="store_true")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE",
                    help="GateConfig field, JSON value (e.g. probe_limits={...} for the demo's sizes)")
    ap.add_argument("--out-name", default="gate_calibration.json")
    ap.add_argument("--bfcl", nargs="+", default=["Events_3_FindEvents", "Music_3_LookupMusic", "Movies_3_FindMovies"])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    (timing if args.timing else calibrate)(args)


if __name__ == "__main__":
    main()
