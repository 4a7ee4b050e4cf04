"""What the per-skill switch (LearnConfig.method="auto") would choose for each skill: the
demonstration-conditioned teacher's checker-verified calls, measured on the base model exactly as
a learning run measures them (learner.competence.measure), without training anything.

On a model whose teacher cannot teach, "auto" picks SFT for every skill and is then the shipped
SFT + retention arm plus the measurement's cost; this says whether that is so, skill by skill.

    flock /tmp/sdft-heavy.lock python benchmarks/competence.py --base-home /work/homes/base \\
        --skills unit_convert,date_math,catalog,bfcl:Music_3_LookupMusic+siblings@40/12 --n 12 \\
        --out benchmarks/results/six_nights/competence.json
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
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from nightly import load_skill  # noqa: E402

from agent.loading import load_folder  # noqa: E402
from agent.prompt import PromptFormat  # noqa: E402
from learner.competence import measure  # noqa: E402
from learner.config import shipped_config  # noqa: E402
from learner.examples import examples_from_demonstrations  # noqa: E402
from memory.models import ModelStore  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-home", default=os.environ.get("SDFT_AGENT_HOME"))
    ap.add_argument("--skills", default="unit_convert,date_math,catalog")
    ap.add_argument("--n", type=int, default=None, help="demonstrations tried per skill (default: the shipped competence_n)")
    ap.add_argument("--template", action="append", default=[], help="teacher template (repeatable; default: the shipped one)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    folder = ModelStore(args.base_home, quiet=True).resolve(None).path
    model, tok = load_folder(folder)
    fmt = PromptFormat(tok)
    rows = []
    for spec in args.skills.split(","):
        pack = load_skill(spec, eval_n=16, train_n=40, seed=0)
        demos = [{**d, "skill": pack.name} for d in pack.demonstrations]
        examples = examples_from_demonstrations(demos, fmt, {pack.name: pack.tools})
        for template in args.template or [shipped_config().teacher_template]:
            cfg = shipped_config(method="auto", teacher_template=template,
                                 **({"competence_n": args.n} if args.n else {}))
            t = time.perf_counter()
            c = measure(model, tok, examples, cfg, pack.name, torch.Generator().manual_seed(cfg.seed))
            rows.append({**c.to_dict(), "spec": spec, "seconds": time.perf_counter() - t})
            print(f"{pack.name:>24} {template:>14}: teacher {c.teacher_correct}/{c.n}, student {c.student_correct}/{c.n} "
                  f"-> {c.method} ({rows[-1]['seconds']:.0f} s)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"model": str(folder), "rows": rows}, indent=1))
    print("\n| skill | teacher template | teacher right | student right | auto chooses |\n|---|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['skill']} | {r['template']} | {r['teacher_correct']}/{r['n']} | {r['student_correct']}/{r['n']} | {r['method']} |")


if __name__ == "__main__":
    main()
