"""Some nights again from a snapshot of a home that nightly.py left (memory.db, models/, cache/
copied as one night began), with other learner settings, through the product's own path
(`learn_now`: training in a child process, the gate, promote or block), so a later night sees
what an earlier one landed. retention_teacher.py asks one night in a dry run; this carries on.

    python benchmarks/nights_from.py --snapshot /work/snap3 --home /work/chain/steps30 \\
        --skills catalog,bfcl:Music_3_LookupMusic+siblings@40/12 \\
        --set max_new_tokens=48 --set max_steps=30 --set holdout_fraction=0.2 --set eval_every=3 \\
        --set patience=2 --gate-set probe_limit=12 --gate-set "probe_limits=$LIM" \\
        --out benchmarks/results/six_nights/chain_steps30.json

A skill already installed in the snapshot is learned as it is; any other spec (as nightly.py
reads them) is installed first. Writes the JSON after every night (nightly.py's night records).

Run it from a checkout nobody edits meanwhile (`git worktree add /work/exp HEAD`): the gate imports
some modules only when it reaches them, and a night whose process had loaded the old code crashed
at the gate on the new. `--regate VERSION` then gates the candidate that night left, from a copy
of its home, and goes on.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from nightly import load_skill, log, night_record  # noqa: E402

from learner.config import parse_settings, shipped_config  # noqa: E402
from learner.gate import GateConfig, run_gate  # noqa: E402
from learner.run import RunResult, learn_now  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.install import install_pack  # noqa: E402


def link_or_copy(src: str, dst: str) -> str:
    """A hard link where the file system allows one (a model is ~0.5 GB a version), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def regate(home: Path, candidate: str, skill: str, gate: GateConfig) -> RunResult:
    """Gate a trained candidate again and end the learning run that made it as learn_now would
    have (promoted or blocked), so the night's record keeps its training figures and later nights
    see its skill as learned (or not)."""
    with Memory(home) as memory:
        runs = [r for r in memory.runs(limit=1000) if r.get("candidate_version") == candidate and r["method"] != "gate"]
    if not runs:
        raise SystemExit(f"{candidate}: no learning run made it in this home")
    run_id, t = runs[0]["id"], time.perf_counter()
    outcome = run_gate(home, candidate, skill=skill, run_id=run_id, config=gate, log=log)
    status = "promoted" if outcome.promoted else "blocked"
    with Memory(home) as memory:  # as learn_now ends a run: its demonstrations count as learned or not
        memory.update_run(run_id, phase=status)
        memory.finish_run(run_id, status, metrics={"gate": {"decision": outcome.decision.decision,
                                                            "report": str(outcome.report_path)}})
    return RunResult(status, run_id, candidate, candidate if outcome.promoted else outcome.champion,
                     str(outcome.report_path), list(outcome.decision.reasons),
                     {"gate_s": time.perf_counter() - t})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshot", required=True, help="a home as a night began (memory.db, models/, cache/)")
    ap.add_argument("--home", required=True, help="where the copy goes (replaced if it exists)")
    ap.add_argument("--skills", required=True, help="comma-separated, in order (nightly.py's specs)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="LearnConfig field")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--regate", metavar="VERSION",
                    help="a candidate in the snapshot whose gate did not finish (its night crashed): gate it "
                         "for the first skill instead of training that skill again")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    snap, home = Path(args.snapshot), Path(args.home)
    if not (snap / "memory.db").is_file():
        raise SystemExit(f"{snap}: no memory.db; give a folder nightly.py's home was copied to")
    cfg = shipped_config(**parse_settings(args.set))
    gate = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    home.chmod(0o700)
    shutil.copy(snap / "memory.db", home / "memory.db")
    if (snap / "models").is_dir():  # version folders are written once and renamed into place
        shutil.copytree(snap / "models", home / "models", copy_function=link_or_copy)
    if (snap / "cache").is_dir():  # the gate writes into its cache: a real copy
        shutil.copytree(snap / "cache", home / "cache")
    with Memory(home) as memory:
        installed = {s["name"] for s in memory.list_skills()}
    out = {"args": vars(args), "config": cfg.to_dict(), "gate": gate.to_dict(), "nights": []}
    for spec in args.skills.split(","):
        name = spec
        if spec not in installed:
            pack = load_skill(spec, 16, 40, seed=0)
            if pack.name not in installed:  # a BFCL spec names its skill only once loaded
                with Memory(home) as memory:
                    install_pack(memory, pack)
            name = pack.name
        t = time.perf_counter()
        log(f"night {name}")
        if args.regate and not out["nights"]:
            r = regate(home, args.regate, name, gate)
        else:
            r = learn_now(home, cfg, skill=name, gate_config=gate, log=log)
        night = night_record(home, r)
        night["skill"], night["wall_s"] = name, time.perf_counter() - t
        out["nights"].append(night)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str) + "\n")
        log(f"{name}: {r.status} ({night['wall_s']:.0f} s)")


if __name__ == "__main__":  # training runs in a spawned child that re-imports this file
    main()
