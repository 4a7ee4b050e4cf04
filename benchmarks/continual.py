"""SDFT vs SFT, three skills learned one after another: does SDFT learn new tools at least as
well as SFT while forgetting less?

For each method, from the same base: learn skill 1, evaluate every skill and the general probes,
learn skill 2, evaluate, … (same demonstrations, steps, learning rate and LoRA for both; only the
loss differs). Before training, the teacher's advantage is measured per template on each skill.

    python benchmarks/continual.py --base-home /tmp/h1 --out benchmarks/results/continual

Writes <out>/continual.json, <out>/continual.png and prints the tables (Markdown) that go into
benchmarks/results/README.md. Reads the probe sets from ../shared/data/retention (benchmarks may).
"""

from __future__ import annotations

import argparse
import gc
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
SHARED = ROOT.parent / "shared" / "data" / "retention"

from agent.loading import load  # noqa: E402
from agent.prompt import PromptFormat  # noqa: E402
from learner.config import LearnConfig, parse_settings  # noqa: E402
from learner.examples import assistant_message, make_example  # noqa: E402
from learner.learn import learn_candidate  # noqa: E402
from learner.signal import teacher_signal  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.evaluate import evaluate_memory_skill  # noqa: E402
from skills.install import install_pack  # noqa: E402
from skills.pack import SkillPack, bundled_pack, first_choice  # noqa: E402
from skills.probes import DriftProbe, builtin, load_probe_file, run_probes, set_reference  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_skill(spec: str, eval_n: int, train_n: int, seed: int) -> SkillPack:
    if spec.startswith("bfcl:"):
        from skills.bfcl import import_bfcl

        pack = import_bfcl("live_multiple", function=spec[5:], train=train_n, eval=eval_n, seed=seed)
    else:
        pack = SkillPack.load(bundled_pack(spec))
    rng = random.Random(seed)
    if len(pack.eval) > eval_n:
        pack.eval = [pack.eval[i] for i in sorted(rng.sample(range(len(pack.eval)), eval_n))]
    if len(pack.demonstrations) > train_n:
        pack.demonstrations = [pack.demonstrations[i] for i in sorted(rng.sample(range(len(pack.demonstrations)), train_n))]
    return pack


def make_home(root: Path, base_folder: Path, packs: list[SkillPack]) -> Path:
    if root.exists():
        shutil.rmtree(root)
    store = ModelStore(root, quiet=True)
    store.add_folder(base_folder, "base")
    memory = Memory(root)
    for pack in packs:
        install_pack(memory, pack)
    return root


def probes_for(n: int) -> list:
    probes = [load_probe_file(SHARED / "arc_easy_val.jsonl", limit=n, name="arc_easy"),
              load_probe_file(SHARED / "piqa_val.jsonl", limit=n, name="piqa"),
              DriftProbe(builtin.DRIFT, "drift")]
    return probes


def evaluate_row(home: Path, version: str, skills: list[str], probes: list, batch: int) -> dict:
    store = ModelStore(home, quiet=True)
    model, tok = load(version, store=store, verify=False)
    memory = Memory(home)
    row = {"version": version, "skills": {}, "probes": {}, "cases": {}}
    t = time.perf_counter()
    for s in skills:
        r = evaluate_memory_skill(model, tok, memory, s, batch_size=batch, model_name=version)
        row["skills"][s] = r.value
        row["cases"][s] = [{"id": c["id"], "score": c["score"], "answer": c["answer"][:200]} for c in r.cases]
    for r in run_probes(model, tok, probes, batch_size=batch, model_name=version):
        row["probes"][r.name] = r.value
    row["eval_s"] = time.perf_counter() - t
    del model
    gc.collect()
    return row


def signal_table(base_folder: Path, packs: list[SkillPack], n: int, templates: list[str]) -> list[dict]:
    from agent.loading import load_folder

    model, tok = load_folder(base_folder)
    fmt = PromptFormat(tok)
    rows = []
    for pack in packs:
        examples = [make_example(fmt, c["messages"],
                                 assistant_message({"tool_calls": [{"name": e["name"], "arguments": first_choice(e["arguments"])} for e in c["expected"]]}),
                                 pack.tools)
                    for c in pack.eval[:n]]
        for template in templates:
            t = time.perf_counter()
            r = teacher_signal(model, tok, examples, template)
            r["skill"] = pack.name
            r["seconds"] = round(time.perf_counter() - t, 1)
            rows.append(r)
            log(f"signal {pack.name} {template}: gold gap {r['gold_gap']:+.3f}, on-policy KL {r['onpolicy_forward_kl']:.3f}, "
                f"tool-name argmax teacher {r['tool_name_argmax_teacher']} student {r['tool_name_argmax_student']}")
    return rows


def bwt(matrix: list[list[float]]) -> float | None:
    """Backward transfer: mean over i<T of R[T,i] − R[i,i] (rows: after learning skill i, 1-based)."""
    T = len(matrix) - 1
    if T < 2:
        return None
    return sum(matrix[T][i - 1] - matrix[i][i - 1] for i in range(1, T)) / (T - 1)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result["methods"])
    skills = result["skills"]
    panels = len(methods) + 1
    cols = min(3, panels)
    rows_n = -(-panels // cols)
    fig, grid = plt.subplots(rows_n, cols, figsize=(5.5 * cols, 4.2 * rows_n), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[panels:]:
        ax.axis("off")
    for ax, m in zip(axes, methods, strict=False):
        mat = result["methods"][m]["matrix"]
        ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(skills)), skills, rotation=30, ha="right")
        ax.set_yticks(range(len(mat)), ["base"] + [f"after {s}" for s in skills])
        for i, row in enumerate(mat):
            for j, v in enumerate(row):
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", color="w" if v < 0.6 else "k")
        b = result["methods"][m]["bwt"]
        ax.set_title(f"{m}: accuracy % (BWT {'n/a' if b is None else round(100 * b, 1)})", fontsize=9)
    ax = axes[len(methods)]
    probe_names = list(result["base_row"]["probes"])
    for m in methods:
        rows = [result["base_row"]] + result["methods"][m]["rows"]
        for p in probe_names:
            ax.plot(range(len(rows)), [r["probes"][p] for r in rows], marker="o", label=f"{m} {p}")
    ax.set_xticks(range(len(skills) + 1), ["base"] + skills, rotation=30, ha="right")
    ax.set_title("general probes (accuracy; drift in nats)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(result: dict) -> str:
    skills = result["skills"]
    lines = []
    for m, r in result["methods"].items():
        b = "n/a" if r["bwt"] is None else f"{100 * r['bwt']:+.1f} points"
        lines.append(f"**{m}** (BWT {b}, train {sum(x['train_s'] for x in r['rows']):.0f} s)\n")
        probes = list(result["base_row"]["probes"])
        lines.append("| after | " + " | ".join(skills) + " | " + " | ".join(probes) + " |")
        lines.append("|---" * (1 + len(skills) + len(probes)) + "|")
        for label, row in [("base", result["base_row"])] + [(s, row) for s, row in zip(skills, r["rows"], strict=False)]:
            cells = [f"{100 * row['skills'][s]:.0f}%" for s in skills]
            cells += [f"{row['probes'][p]:.3f}" if p == "drift" else f"{100 * row['probes'][p]:.0f}%" for p in probes]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Teacher signal before training (base model, gold = first acceptable call):\n")
    lines.append("| skill | template | student log-p/tok | teacher log-p/tok | gold gap | on-policy fwd KL/tok | tool-name argmax teacher / student |")
    lines.append("|---|---|---|---|---|---|---|")
    for s in result["signal"]:
        lines.append(f"| {s['skill']} | {s['template']} | {s['gold_logp_student']:.3f} | {s['gold_logp_teacher']:.3f} | "
                     f"{s['gold_gap']:+.3f} | {s['onpolicy_forward_kl']:.3f} | {s['tool_name_argmax_teacher']} / {s['tool_name_argmax_student']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-home", default=os.environ.get("SDFT_AGENT_HOME"), help="home whose champion (or --base) is the start model")
    ap.add_argument("--base", default=None, help="version in --base-home to start from (default: its champion)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "continual"))
    ap.add_argument("--work", default="/tmp/sdft-continual")
    ap.add_argument("--skills", default="unit_convert,catalog,bfcl:Events_3_FindEvents")
    ap.add_argument("--methods", default="sft,sdft", help="sft,sdft; none: only merge the --reuse files")
    ap.add_argument("--eval-n", type=int, default=20)
    ap.add_argument("--train-n", type=int, default=32)
    ap.add_argument("--probe-n", type=int, default=100)
    ap.add_argument("--signal-n", type=int, default=8)
    ap.add_argument("--templates", default="paper,previous_turn")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="LearnConfig field for both methods, e.g. --set max_steps=16 --set lr=2e-4")
    ap.add_argument("--sdft-set", action="append", default=[], metavar="FIELD=VALUE", help="LearnConfig field for SDFT only")
    ap.add_argument("--label", default=None,
                    help="name of this run's variant in the results (one method only), e.g. sdft+sft_warmup3")
    ap.add_argument("--reuse", action="append", default=[], metavar="JSON",
                    help="an earlier continual.json with the same skills and eval sets: its base row, teacher "
                         "signal and method rows are kept, not recomputed (repeatable)")
    args = ap.parse_args()

    common, sdft_only = parse_settings(args.set), parse_settings(args.sdft_set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    base_store = ModelStore(args.base_home, quiet=True)
    base_folder = base_store.resolve(args.base).path
    skill_specs = args.skills.split(",")
    packs = [load_skill(s, args.eval_n, args.train_n, seed=0) for s in skill_specs]
    skills = [p.name for p in packs]
    probes = probes_for(args.probe_n)
    t0 = time.perf_counter()

    log(f"skills {skills}; {[len(p.demonstrations) for p in packs]} demonstrations, {[len(p.eval) for p in packs]} eval cases")
    reused = [json.loads(Path(f).read_text()) for f in args.reuse]
    for f, r in zip(args.reuse, reused, strict=True):
        same = {k: (r["args"][k], vars(args)[k]) for k in ("skills", "eval_n", "train_n", "probe_n")
                if r["args"][k] != vars(args)[k]}
        if same:
            sys.exit(f"--reuse {f}: not the same experiment ({same}); rerun without --reuse")
    methods = [m for m in args.methods.split(",") if m and m != "none"]  # none: only merge --reuse files
    if not methods and not reused:
        sys.exit("nothing to do: --methods none needs --reuse files to merge")
    if args.label and len(methods) != 1:
        sys.exit("--label names the one method of this run: give --methods sft or --methods sdft with it")
    labels = {m: args.label or m for m in methods}
    homes = {m: make_home(work / m, base_folder, packs) for m in methods}
    from agent.loading import load_folder

    if methods:  # the drift probe compares against the base model
        base_model, base_tok = load_folder(base_folder)
        set_reference(probes, base_model, base_tok, "base")
        del base_model
    if reused:
        signal, base_row = reused[0]["signal"], reused[0]["base_row"]
        log("base row and teacher signal reused from " + args.reuse[0])
    else:
        signal = signal_table(base_folder, packs, args.signal_n, args.templates.split(","))
        log("evaluating the base model…")
        base_row = evaluate_row(homes[methods[0]], "base", skills, probes, args.batch)
        log(f"base: {base_row['skills']} {base_row['probes']} ({base_row['eval_s']:.0f} s)")

    result = {"skills": skills, "skill_specs": skill_specs, "base_row": base_row, "signal": signal,
              "args": vars(args), "methods": {}, "reused_from": args.reuse}
    for r in reused:
        result["methods"].update(r["methods"])
    for m in methods:
        cfg_fields = {**common, **(sdft_only if m == "sdft" else {})}
        if labels[m] in result["methods"]:
            log(f"{labels[m]}: reused")
            continue
        rows = []
        for skill in skills:
            cfg = LearnConfig(method=m, **cfg_fields)
            t = time.perf_counter()
            outcome = learn_candidate(homes[m], cfg, skill=skill, progress=False)
            train_s = time.perf_counter() - t
            ModelStore(homes[m], quiet=True).use(outcome.candidate, reason="continual experiment")
            row = evaluate_row(homes[m], outcome.candidate, skills, probes, args.batch)
            row.update(skill=skill, train_s=train_s, summary=outcome.summary, config=cfg.to_dict())
            rows.append(row)
            log(f"{labels[m]} after {skill}: {row['skills']} {row['probes']} (train {train_s:.0f} s, eval {row['eval_s']:.0f} s)")
        matrix = [[base_row["skills"][s] for s in skills]] + [[r["skills"][s] for s in skills] for r in rows]
        result["methods"][labels[m]] = {"rows": rows, "matrix": matrix, "bwt": bwt(matrix),
                                "new_skill_gain": [matrix[i + 1][i] - matrix[0][i] for i in range(len(skills))]}
        (out / "continual.json").write_text(json.dumps(result, indent=1, default=str))
    result["wall_s"] = time.perf_counter() - t0
    (out / "continual.json").write_text(json.dumps(result, indent=1, default=str))
    plot(result, out / "continual.png")
    md = markdown(result)
    (out / "continual.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
