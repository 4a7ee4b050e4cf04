"""What retention costs: one learning run's training time with and without the retention term,
on the same skill, demonstrations, steps and machine (goal: retention ≤ 2.5× SFT alone).

    flock /tmp/sdft-heavy.lock python benchmarks/retention_cost.py --base-home /work/homes/learner \\
        --arm sft --arm kl:retention=kl --arm self_replay:retention=self_replay

Each arm trains from the base in a fresh home (learn_candidate, the child's work in a nightly run;
no gate). Writes benchmarks/results/retention_cost.json and prints a table.

The cost that grew was a late night's, with many skills installed: `--from-home` measures there.
Each arm then trains in that home (e.g. the one a nightly.py arm left), from its champion, on
`--skill`'s demonstrations again (learn_candidate's demonstration_ids), with every installed
skill's tools in the retention prompts; the candidates it writes are never promoted.

    python benchmarks/retention_cost.py --from-home /work/nightly/served --skill Services_1_FindProvider \
        --arm sft:retention=none --arm each:retention_tool_sets=each --arm served --out …/cost_night6.json
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

from learner.config import parse_settings, shipped_config  # noqa: E402
from learner.learn import learn_candidate  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.install import install_pack  # noqa: E402
from skills.pack import SkillPack, bundled_pack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-home", default=os.environ.get("SDFT_AGENT_HOME"))
    ap.add_argument("--skill", default="unit_convert")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME[:FIELD=VALUE,...]")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="for every arm")
    ap.add_argument("--work", default="/tmp/sdft-retention-cost")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "retention_cost.json"))
    ap.add_argument("--from-home", default=None,
                    help="train in this home (many skills installed) on --skill's demonstrations again")
    args = ap.parse_args()
    rows = []
    for text in args.arm or ["sft"]:
        name, _, rest = text.partition(":")
        cfg = shipped_config(**parse_settings(args.set + [p for p in rest.split(",") if p]))
        ids = None
        if args.from_home:
            home = Path(args.from_home)
            with Memory(home) as memory:
                ids = [d["id"] for d in memory.demonstrations(args.skill)]
                installed = len(memory.list_skills())
            if not ids:
                raise SystemExit(f"{args.from_home}: skill {args.skill!r} has no demonstrations")
        else:
            home = Path(args.work) / name
            if home.exists():
                shutil.rmtree(home)
            ModelStore(home, quiet=True).add_folder(ModelStore(args.base_home, quiet=True).resolve(None).path, "base")
            with Memory(home) as memory:
                install_pack(memory, SkillPack.load(bundled_pack(args.skill)))
                installed = 1
        t = time.perf_counter()
        out = learn_candidate(home, cfg, skill=args.skill, progress=False, demonstration_ids=ids)
        wall = time.perf_counter() - t
        s = out.summary
        rows.append({"arm": name, "settings": rest, "wall_s": wall, "train_s": s["seconds"], "steps": s["steps"],
                     "retention_s": s.get("retention_s", 0.0), "prepare_s": s.get("prepare_s", 0.0),
                     "demonstrations": len(out.demonstrations), "skills_installed": installed,
                     "load_avg": os.getloadavg()[0], "summary": s})
        print(f"{name}: {s['steps']} steps, train {s['seconds']:.0f} s (retention {s.get('retention_s', 0):.0f} s, "
              f"prepare {s.get('prepare_s', 0):.0f} s), wall {wall:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
        if not args.from_home:
            shutil.rmtree(home)
    ref = next((r for r in rows if r["arm"] == "sft"), rows[0])
    print("| arm | steps | train s | of which retention s | × SFT (train) | × SFT (whole child) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arm']} | {r['steps']} | {r['train_s']:.0f} | {r['retention_s']:.0f} | "
              f"{(r['train_s'] + r['prepare_s']) / (ref['train_s'] + ref['prepare_s']):.2f} | {r['wall_s'] / ref['wall_s']:.2f} |")
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
