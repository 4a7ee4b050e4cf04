"""Night 1 (unit_convert) with some learner settings, then plain questions asked of the candidate
the way a user asks them (`sdft-agent ask`: no tools, greedy): does a recipe keep answers the
gate's suites do not contain?

Made for one finding of the six-night experiment: without the gradient through the served
prompt, the demo's champion answered "What is the capital of France?" with a French loop.

    python benchmarks/night_one_ask.py --base-home /work/homes/base --work /work/night1 \\
        --name r6_s1 --set seed=1 --set retention_prefix_grad=false --set retention_tools_share=0.75 \\
        --out benchmarks/results/six_nights/night1_r6_s1.json

Prints each answer and writes them, the config and the training time as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nightly import load_skill  # noqa: E402

from learner.config import parse_settings, shipped_config  # noqa: E402
from learner.learn import learn_candidate  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.install import install_pack  # noqa: E402

QUESTIONS = ("What is the capital of France?", "What is the capital of Italy?",
             "Which planet do we live on?", "Who wrote Romeo and Juliet?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-home", required=True, help="a home holding the base model")
    ap.add_argument("--work", required=True, help="folder for the run's home (<work>/<name>, replaced)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="LearnConfig field over the shipped defaults and max_steps=12, max_new_tokens=48")
    ap.add_argument("--question", action="append", default=None, help="ask this instead (repeatable)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = shipped_config(max_steps=12, max_new_tokens=48, **parse_settings(args.set))
    home = Path(args.work) / args.name
    shutil.rmtree(home, ignore_errors=True)
    ModelStore(home, quiet=True).add_folder(ModelStore(args.base_home, quiet=True).resolve(None).path, "base")
    with Memory(home) as memory:
        install_pack(memory, load_skill("unit_convert", 16, 40, seed=0))
    t = time.perf_counter()
    out = learn_candidate(home, cfg, skill="unit_convert", progress=False)
    train_s = time.perf_counter() - t
    print(f"{args.name}: {out.candidate}, train {train_s:.0f} s", flush=True)
    cli = str(Path(sys.executable).with_name("sdft-agent"))
    answers = {}
    for q in args.question or QUESTIONS:
        r = subprocess.run([cli, "ask", q, "--home", str(home), "--model", out.candidate, "--max-new-tokens", "32"],
                           capture_output=True, text=True, check=True)
        answers[q] = " ".join(r.stdout.split())
        print(f"  {q} → {answers[q][:140]}", flush=True)
    doc = {"args": vars(args), "config": cfg.to_dict(), "candidate": out.candidate, "train_s": train_s,
           "answers": answers}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
