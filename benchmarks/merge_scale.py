"""A learned version's adapter folded in at a fraction α of its strength: what the gate says.

Interpolating between the weights a model started from and the weights fine-tuning reached
(θ = θ₀ + α·Δ) is known to keep more of what the start could do than the fine-tuned end does,
often at a small cost to the new task (weight-space ensembling, "WiSE-FT"). A LoRA's Δ is B·A, so
scaling B by α gives exactly that point, with no training. This asks, of one candidate the gate
blocked: how restraint, the earlier skills and the new skill move as α falls.

    python benchmarks/merge_scale.py --home /work/wise --candidate v0004 --skill Music_3_LookupMusic \
        --scales 0.5,0.75 --gate-set probe_limit=12 --gate-set "probe_limits=$LIM" \
        --out benchmarks/results/merge_scale.json

Each α writes a new version in `--home` (parent: the candidate's parent; the candidate's learning
run, so the cumulative gate sees the same lineage) and gates it as a dry run (the alias never
moves). Use a copy of a home: the versions stay.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peft import LoraConfig  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from learner.config import parse_settings  # noqa: E402
from learner.gate import GateConfig, run_gate  # noqa: E402
from learner.merge import save_candidate  # noqa: E402
from memory.models import ModelStore  # noqa: E402


def scaled(state: dict, alpha: float) -> dict:
    """The adapter whose delta is α times the given one (B·A → (αB)·A)."""
    return {k: (v * alpha if "lora_B" in k else v) for k, v in state.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True)
    ap.add_argument("--candidate", required=True, help="a learned version with its adapter/ beside it")
    ap.add_argument("--skill", required=True, help="the skill the candidate learned")
    ap.add_argument("--scales", required=True, help="comma-separated α, e.g. 0.5,0.75 (1 regates the candidate)")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    gate = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    store = ModelStore(args.home, quiet=True)
    info = store.get(args.candidate)
    folder = info.path / "adapter"
    state = load_file(str(folder / "adapter_model.safetensors"))
    config = LoraConfig(**{k: v for k, v in json.loads((folder / "adapter_config.json").read_text()).items()
                           if k in LoraConfig.__dataclass_fields__})
    manifest = json.loads((info.path / "manifest.json").read_text())
    rows = []
    for alpha in [float(a) for a in args.scales.split(",")]:
        t = time.perf_counter()
        version = args.candidate if alpha == 1.0 else save_candidate(
            store, info.parent, scaled(state, alpha), config, method=manifest.get("method", "sft"),
            demonstrations=manifest.get("demonstrations", []), metrics={"merge_scale": alpha},
            config={**manifest.get("config", {}), "extra": {"merge_scale": alpha, "of": args.candidate}},
            learn_run_id=info.learn_run_id, notes=f"{args.candidate} at merge scale {alpha}")
        g = run_gate(args.home, version, skill=args.skill, config=gate, promote=False,
                     log=lambda m: print(f"[{time.strftime('%H:%M:%S')}] {m}", flush=True))
        rows.append({"alpha": alpha, "version": version, "gate_s": time.perf_counter() - t,
                     "decision": g.decision.decision, "reasons": g.decision.reasons,
                     "suites": g.summary["suites"], "since": g.summary["since"], "report": str(g.report_path)})
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str) + "\n")
        print(f"α = {alpha}: {version} {g.decision.decision}")
        for s in g.summary["suites"] + g.summary["since"]:
            print(f"  {s['name']:24} {'since ' + s['against'] if s.get('against') else s['role']:14} "
                  f"{s['champion']:.3f} -> {s['candidate']:.3f}  {s['worse_cases']}/{s['better_cases']}  {s['verdict']}")


if __name__ == "__main__":
    main()
