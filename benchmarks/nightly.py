"""Skills learned one per night through the product's own path: does retention self-distillation
keep what the champion could do while a new tool is learned?

For each arm, from a fresh home holding only the base model: night i installs skill i (its
demonstrations and held-out cases), then runs `learn_now` (the nightly job: lease, training in a
child process, merge, the retention gate, promote or block). Everything is read back from what
the product recorded: the gate's summary (every suite, champion against candidate, its decision
and reasons) and the run's metrics (steps, held-out and train losses, why this method, wall time).

    flock /tmp/sdft-heavy.lock python benchmarks/nightly.py --base-home /work/homes/learner \\
        --skills unit_convert,date_math,catalog --arm sft --arm self_replay:retention=self_replay \\
        --arm kl:retention=kl --out benchmarks/results/continual2

An arm is NAME or NAME:FIELD=VALUE,FIELD=VALUE (LearnConfig fields over the shipped defaults;
`replay=N` rehearses N earlier demonstrations). Writes <out>/nightly.json after
every night, and at the end <out>/nightly.md (tables) and <out>/nightly.png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learner.config import parse_settings, shipped_config  # noqa: E402
from learner.gate import GateConfig  # noqa: E402
from learner.run import learn_now  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.install import install_pack  # noqa: E402
from skills.pack import SkillPack, bundled_pack  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_skill(spec: str, eval_n: int, train_n: int, seed: int) -> SkillPack:
    """SPEC is a bundled pack's name or bfcl:FUNCTION[+siblings]; SPEC@TRAIN/EVAL overrides the sizes."""
    if "@" in spec:
        spec, _, sizes = spec.partition("@")
        train_n, eval_n = (int(x) for x in sizes.split("/"))
    if spec.startswith("bfcl:"):
        from skills.bfcl import import_bfcl

        function, plus, _ = spec[5:].partition("+siblings")
        return import_bfcl("live_multiple", function=function, train=train_n, eval=eval_n, seed=seed,
                           siblings=bool(plus))
    pack = SkillPack.load(bundled_pack(spec))
    rng = random.Random(seed)
    if len(pack.eval) > eval_n:
        pack.eval = [pack.eval[i] for i in sorted(rng.sample(range(len(pack.eval)), eval_n))]
    if len(pack.demonstrations) > train_n:
        pack.demonstrations = [pack.demonstrations[i] for i in sorted(rng.sample(range(len(pack.demonstrations)), train_n))]
    return pack


def split_replay(text: str) -> str:
    """Arms written before replay was a LearnConfig field said `replay_n=N`: read it as `replay=N`."""
    return ",".join("replay=" + p.split("=", 1)[1] if p.startswith("replay_n=") else p
                    for p in text.split(",") if p)


def night_record(home: Path, result) -> dict:
    memory = Memory(home)
    run = memory.run(result.run_id) if result.run_id else {}
    metrics = run.get("metrics", {}) if run else {}
    summary = {}
    if result.report:
        folder = Path(result.report).parent
        if (folder / "summary.json").exists():
            summary = json.loads((folder / "summary.json").read_text())
    keep = ("steps", "planned_steps", "cross_entropy_last", "train_loss_final", "heldout_loss_initial",
            "heldout_loss_final", "heldout_best_step", "early_stopped_at", "retention_kl_last",
            "retention_ce_last", "retention_s", "seconds", "why_method", "method_choice", "retention", "prepare_s")
    return {
        "status": result.status,
        "reasons": result.reasons,
        "timings": result.timings,
        "candidate": result.candidate,
        "champion_after": ModelStore(home, quiet=True).champion_name(),
        "train": {k: metrics[k] for k in keep if k in metrics},
        "suites": summary.get("suites", []),
        "since": summary.get("since", []),  # the gate's cumulative comparisons (against base / learner)
        "accuracies": summary.get("accuracies", {}),
        "gate_wall_s": summary.get("wall_s"),
        "report": result.report,
    }


def row_of(night: dict) -> dict:
    """What the product holds after the night: the candidate's figures if it was promoted,
    else the champion's (it stayed)."""
    side = "candidate" if night["status"] == "promoted" else "champion"
    return {s["name"]: s[side] for s in night["suites"]}


def bwt(matrix: list[list[float | None]]) -> float | None:
    T = len(matrix)
    if T < 2:
        return None
    diffs = [matrix[T - 1][i] - matrix[i][i] for i in range(T - 1)
             if matrix[T - 1][i] is not None and matrix[i][i] is not None]
    return sum(diffs) / len(diffs) if diffs else None


def tables(result: dict) -> str:
    skills = result["skills"]
    lines = []
    for arm, r in result["arms"].items():
        nights = r["nights"]
        if not nights:
            continue
        general = [s["name"] for s in nights[0]["suites"] if s["role"] == "probe"]
        base = {s["name"]: s["champion"] for s in nights[0]["suites"]}
        matrix = [[row_of(n).get(s) for s in skills] for n in nights]
        b = bwt(matrix)
        final = [v for v in matrix[-1] if v is not None]
        lines.append(f"**{arm}** ({r['settings'] or 'shipped'}; final average {100 * sum(final) / max(len(final), 1):.1f}%, "
                     f"BWT {'n/a' if b is None else f'{100 * b:+.1f} points'})\n")
        lines.append("| after night | decision | train s | gate s | steps | held-out CE | train CE | "
                     + " | ".join(skills) + " | " + " | ".join(general) + " |")
        lines.append("|---" * (7 + len(skills) + len(general)) + "|")
        lines.append("| base | | | | | | | " + " | ".join(f"{100 * base[s]:.0f}%" if s in base else "" for s in skills)
                     + " | " + " | ".join(_fmt(g, base.get(g)) for g in general) + " |")
        for skill, n, row in zip(skills, nights, matrix, strict=False):
            t = n["train"]
            vals = row_of(n)
            lines.append(f"| {skill} | {n['status']} | {n['timings'].get('train_s', 0):.0f} | {n['timings'].get('gate_s', 0):.0f} | "
                         f"{t.get('steps', '')} | {_num(t.get('heldout_loss_final'))} | {_num(t.get('train_loss_final'))} | "
                         + " | ".join("" if v is None else f"{100 * v:.0f}%" for v in row) + " | "
                         + " | ".join(_fmt(g, vals.get(g)) for g in general) + " |")
        lines.append("")
        for n, skill in zip(nights, skills, strict=False):
            if n["status"] != "promoted":
                lines.append(f"- night {skill}: {n['status']}: " + "; ".join(n["reasons"]))
        lines.append("")
    return "\n".join(lines)


def _num(v) -> str:
    return "" if v is None else f"{v:.3f}"


def _fmt(name: str, v) -> str:
    if v is None:
        return ""
    return f"{v:.3f}" if "drift" in name else f"{100 * v:.0f}%"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a, r in result["arms"].items() if r["nights"]]
    if not arms:
        return
    general = [s["name"] for s in result["arms"][arms[0]]["nights"][0]["suites"] if s["role"] == "probe"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for arm in arms:
        nights = result["arms"][arm]["nights"]
        skills = result["skills"][:len(nights)]
        mean = [sum(row_of(n).get(s, 0) for s in skills[:i + 1]) / (i + 1) for i, n in enumerate(nights)]
        axes[0].plot(range(1, len(nights) + 1), mean, marker="o", label=arm)
        base = {s["name"]: s["champion"] for s in nights[0]["suites"]}
        kept = [sum(row_of(n).get(g, 0) - base.get(g, 0) for g in general if "drift" not in g) / max(len(general), 1)
                for n in nights]
        axes[1].plot(range(1, len(nights) + 1), kept, marker="o", label=arm)
    axes[0].set_title("mean held-out accuracy over the skills learned so far")
    axes[1].set_title("mean change of the general suites from the base")
    for ax in axes:
        ax.set_xlabel("night")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-home", default=os.environ.get("SDFT_AGENT_HOME"))
    ap.add_argument("--skills", default="unit_convert,date_math,catalog")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME[:FIELD=VALUE,...]")
    ap.add_argument("--eval-n", type=int, default=16, help="held-out cases per skill")
    ap.add_argument("--train-n", type=int, default=40, help="demonstrations per skill")
    ap.add_argument("--gate-set", action="append", default=[], metavar="FIELD=VALUE", help="GateConfig field")
    ap.add_argument("--work", default="/tmp/sdft-nightly")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "continual2"))
    ap.add_argument("--merge", action="append", default=[], metavar="JSON", help="earlier nightly.json to include")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base_folder = ModelStore(args.base_home, quiet=True).resolve(None).path
    specs = args.skills.split(",")
    packs = [load_skill(s, args.eval_n, args.train_n, seed=0) for s in specs]
    gate = GateConfig(**parse_settings(args.gate_set, config=GateConfig, what="gate"))
    result = {"skills": [p.name for p in packs], "args": vars(args), "gate": gate.to_dict(), "arms": {}}
    for f in args.merge:
        result["arms"].update(json.loads(Path(f).read_text())["arms"])
    t_all = time.perf_counter()
    for text in args.arm:
        name, _, rest = text.partition(":")
        rest = split_replay(rest)
        settings = parse_settings([p for p in rest.split(",") if p]) if rest else {}
        cfg = shipped_config(**settings)
        home = Path(args.work) / name
        if home.exists():
            shutil.rmtree(home)
        store = ModelStore(home, quiet=True)
        store.add_folder(base_folder, "base")
        # The base's per-case gate results are the same in every arm (the cache is keyed by each
        # suite's items and decoding, so an entry that does not fit is simply not found).
        shared = Path(args.work) / "_base_gate_cache"
        if shared.is_dir():
            shutil.copytree(shared, home / "cache" / "gate" / "base", dirs_exist_ok=True)
        arm = {"settings": text.partition(":")[2], "config": cfg.to_dict(), "replay": cfg.replay, "nights": []}
        result["arms"][name] = arm
        for pack in packs:
            with Memory(home) as memory:
                install_pack(memory, pack)
            t = time.perf_counter()
            log(f"{name}: night {pack.name} ({len(pack.demonstrations)} demonstrations, {len(pack.eval)} cases)")
            r = learn_now(home, cfg, skill=pack.name, gate_config=gate, log=log)
            night = night_record(home, r)
            night["wall_s"] = time.perf_counter() - t
            if (home / "cache" / "gate" / "base").is_dir():
                shutil.copytree(home / "cache" / "gate" / "base", shared, dirs_exist_ok=True)
            arm["nights"].append(night)
            log(f"{name}: {pack.name}: {r.status} ({night['wall_s']:.0f} s): "
                + ", ".join(f"{s['name']} {s['champion']:.3f}->{s['candidate']:.3f}" for s in night["suites"]))
            (out / "nightly.json").write_text(json.dumps(result, indent=1, default=str))
    result["wall_s"] = time.perf_counter() - t_all
    (out / "nightly.json").write_text(json.dumps(result, indent=1, default=str))
    md = tables(result)
    (out / "nightly.md").write_text(md + "\n")
    plot(result, out / "nightly.png")
    print(md)


if __name__ == "__main__":
    main()
