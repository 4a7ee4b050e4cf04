"""Our SDFT step against TRL's `trl.experimental.sdft.SDFTTrainer`, and against our SFT step.

Same model (SmolLM2-135M from the model store), same 32 tool-use prompts (the bundled skill packs'
demonstrations, tools in the prompt), same config: LoRA r=16 on all linear layers, batch 4,
64 completion tokens at temperature 1, full-vocabulary forward KL, EMA teacher (α = 0.02), the
paper's teacher template, first 3 completion tokens masked, AdamW lr 1e-4, examples in the same
(unshuffled) order, so both sides train on the same batches. Both sides read byte-identical
student and teacher prompts (checked before timing).

Every measurement runs in a fresh process (so peak RSS is that run's own), both sides import the
same libraries (TRL's datasets/pandas too, so library overhead is equal), runs alternate between
the methods, and the first optimizer step of each run is left out as warm-up. The machine may be
shared: the load average is recorded beside the numbers.

    python benchmarks/sdft_vs_trl.py --home /tmp/h1              # full comparison → results JSON
    python benchmarks/sdft_vs_trl.py --home /tmp/h1 --steps 3 --reps 1 --threads 1

Needs `pip install trl` (benchmark-only; it does not change torch).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKS = ("unit_convert", "date_math", "catalog")
RESULTS = ROOT / "benchmarks" / "results" / "sdft_vs_trl.json"
N_PROMPTS, BATCH, COMPLETION, LR, EMA, SKIP = 32, 4, 64, 1e-4, 0.02, 3


def demonstrations() -> tuple[list[dict], dict]:
    demos, tools = [], {}
    for name in PACKS:
        pack = json.loads((ROOT / "skills" / "packs" / f"{name}.json").read_text())
        tools[name] = pack["tools"]
        demos += [{**d, "skill": name, "id": len(demos) + i, "content": d.get("content")}
                  for i, d in enumerate(pack["demonstrations"][:11])]
    return demos[:N_PROMPTS], tools


def rss_now_and_peak() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB."""
    status = Path("/proc/self/status").read_text()
    kb = {k: v.split()[0] for k, v in (line.split(":", 1) for line in status.splitlines())
          if k in ("VmRSS", "VmHWM")}
    return int(kb["VmRSS"]) / 1024, int(kb["VmHWM"]) / 1024


def run_one(method: str, home: str, steps: int, threads: int) -> dict:
    """One training run in this process; returns per-step seconds and completion tokens.
    `method`: ours | sft | trl, with "-gc" for gradient checkpointing (TRL's default)."""
    method, checkpointing = method.removesuffix("-gc"), method.endswith("-gc")
    import torch
    import trl  # noqa: F401  (imported by every side, so library overhead is equal)

    from agent.loading import load
    from agent.prompt import PromptFormat
    from learner.config import LearnConfig
    from learner.examples import encode_example, examples_from_demonstrations
    from learner.train import train

    model, tok = load(home=home)
    torch.set_num_threads(threads)  # after load(), which sets the machine's core count
    fmt = PromptFormat(tok)
    demos, tools = demonstrations()
    examples = examples_from_demonstrations(demos, fmt, tools)
    rss_before, _ = rss_now_and_peak()
    if method in ("ours", "sft"):
        cfg = LearnConfig(method="sdft" if method == "ours" else "sft", max_steps=steps, batch_size=BATCH,
                          max_new_tokens=COMPLETION, lr=LR, teacher="ema", ema_alpha=EMA, divergence="forward",
                          skip_first=SKIP, seed=0, shuffle=False, gradient_checkpointing=checkpointing)
        marks = [time.process_time()]
        result = train(model, tok, examples, cfg, progress=False,
                       on_step=lambda m: marks.append(time.process_time()))
        cpu_s = [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]  # [0] includes setup: warm-up
        step_s = [h["step_s"] for h in result.history]
        tokens = [h["completion_tokens"] for h in result.history]
        parts = {"targets_s": [h["targets_s"] for h in result.history],
                 "train_s": [h["train_s"] for h in result.history]}
    else:
        step_s, cpu_s, tokens, parts = run_trl(model, tok, fmt, examples, steps,
                                               [encode_example(e, fmt) for e in examples], checkpointing)
    _, peak = rss_now_and_peak()
    return {"method": method + ("-gc" if checkpointing else ""), "step_s": step_s, "cpu_s": cpu_s, "completion_tokens": tokens, "parts": parts,
            "rss_before_train_mb": rss_before, "peak_rss_mb": peak}


def run_trl(model, tok, fmt, examples, steps, encoded, trl_checkpointing=False):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    from learner.teacher_templates import PAPER_TEMPLATE

    rows = [{"prompt": fmt._fallback_messages(e.messages, e.tools) if not fmt.native_tools else e.messages,
             "privileged_context": fmt.strip_special(e.completion_text)} for e in examples]
    template = PAPER_TEMPLATE.replace("{question}", "{prompt}").replace("{demonstration}", "{privileged_context}")
    with tempfile.TemporaryDirectory() as out:
        args = SDFTConfig(
            output_dir=out, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
            num_generations=1, max_steps=steps, learning_rate=LR, lr_scheduler_type="cosine",
            warmup_steps=math.ceil(0.1 * steps), weight_decay=0.0, max_grad_norm=1.0, max_prompt_length=None,
            max_completion_length=COMPLETION, temperature=1.0, top_p=1.0, top_k=0,
            distillation_mode="full_logits", distillation_alpha=0.0, teacher_model_kind="ema",
            teacher_update_rate=EMA, num_loss_tokens_to_skip=SKIP, distillation_is_clip=None,
            teacher_prompt_template=template, logging_steps=1, report_to=[], save_strategy="no",
            use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0, shuffle_dataset=False,
            # TRL's default is True; off here as on our side (with it on, this model generates
            # without a KV cache and TRL is several times slower still)
            gradient_checkpointing=trl_checkpointing,
        )
        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
        trainer = SDFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=tok, peft_config=peft_config)
        # same tokens on both sides: student prompts, and teacher prompts (our paper template)
        assert trainer._tokenize_prompts([rows[0]["prompt"]])[0] == encoded[0].prompt_ids
        teacher = trainer.teacher_context_builder._compose_teacher_prompt(rows[0]["prompt"], rows[0]["privileged_context"])
        assert trainer._tokenize_prompts([teacher])[0] == encoded[0].teacher_prompt_ids

        tokens: list[int] = []
        gen_s: list[float] = []
        generate = trainer._generate_transformers

        def counting_generate(prompt_ids):
            t = time.perf_counter()
            p, c = generate(prompt_ids)
            gen_s.append(time.perf_counter() - t)
            tokens.append(sum(len(x) for x in c))
            return p, c

        trainer._generate_transformers = counting_generate
        step_s: list[float] = []
        cpu_s: list[float] = []

        class Timer(TrainerCallback):
            def on_step_begin(self, *a, **k):
                self.t, self.c = time.perf_counter(), time.process_time()

            def on_step_end(self, *a, **k):
                step_s.append(time.perf_counter() - self.t)
                cpu_s.append(time.process_time() - self.c)

        trainer.add_callback(Timer())
        trainer.train()
    return step_s, cpu_s, tokens, {"generate_s": gen_s}


def summarise(runs: list[dict]) -> dict:
    """Steady state: the first step of every run is warm-up and left out."""
    secs = [s for r in runs for s in r["step_s"][1:]]
    cpus = [s for r in runs for s in r["cpu_s"][1:]]
    toks = [t for r in runs for t in r["completion_tokens"][1:]]
    return {
        "cpu_seconds_per_step_median": statistics.median(cpus),
        "completion_tokens_per_cpu_s": sum(toks) / sum(cpus),
        "runs": len(runs),
        "steps_measured": len(secs),
        "seconds_per_step_median": statistics.median(secs),
        "seconds_per_step_mean": statistics.fmean(secs),
        "completion_tokens_per_step_mean": statistics.fmean(toks),
        "completion_tokens_per_s": sum(toks) / sum(secs),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "rss_before_train_mb": max(r["rss_before_train_mb"] for r in runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=os.environ.get("SDFT_AGENT_HOME"), help="model-store home (smollm2-135m pulled)")
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps per run (the first is warm-up)")
    ap.add_argument("--reps", type=int, default=2, help="runs per method, alternated")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (1 on a shared machine)")
    ap.add_argument("--methods", default="ours,trl,ours-gc,trl-gc,sft",
                    help="ours | trl | sft; with -gc: gradient checkpointing on (TRL's default)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--run", help=argparse.SUPPRESS)  # child mode: one run, JSON on stdout
    a = ap.parse_args()
    if a.run:
        print("RESULT " + json.dumps(run_one(a.run, a.home, a.steps, a.threads)), flush=True)
        return

    methods = a.methods.split(",")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    loads = [os.getloadavg()[0]]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "TQDM_DISABLE": "1"}
    for rep in range(a.reps):
        for m in methods:
            t = time.time()
            proc = subprocess.run([sys.executable, __file__, "--run", m, "--home", a.home, "--steps", str(a.steps),
                                   "--threads", str(a.threads)],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                sys.exit(f"{m} run failed:\n{proc.stderr[-4000:]}")
            runs[m].append(json.loads(line[0][len("RESULT "):]))
            loads.append(os.getloadavg()[0])
            print(f"rep {rep} {m}: {time.time() - t:.0f} s, steps {[round(s, 1) for s in runs[m][-1]['step_s']]}, "
                  f"cpu {[round(s, 1) for s in runs[m][-1]['cpu_s']]}", flush=True)

    summary = {m: summarise(r) for m, r in runs.items()}
    out = {
        "config": {"model": "smollm2-135m (SmolLM2-135M-Instruct, float32, CPU)", "prompts": N_PROMPTS,
                   "batch": BATCH, "completion_tokens": COMPLETION, "lora": "r=16, alpha=32, all linear layers",
                   "divergence": "full-vocabulary forward KL(teacher||student)", "teacher": f"ema alpha={EMA}",
                   "skip_first": SKIP, "lr": LR, "steps_per_run": a.steps, "reps": a.reps, "threads": a.threads},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min_samples": loads, **_versions()},
        "summary": summary,
        "runs": runs,
    }
    pairs = {}
    for gc in ("", "-gc"):
        o, t = summary.get("ours" + gc), summary.get("trl" + gc)
        if o and t:
            pairs["gradient_checkpointing" if gc else "no_checkpointing"] = {
                "throughput_ratio": o["completion_tokens_per_s"] / t["completion_tokens_per_s"],
                "seconds_per_step_ratio": t["seconds_per_step_median"] / o["seconds_per_step_median"],
                "peak_rss_ratio": o["peak_rss_mb"] / t["peak_rss_mb"],
                # process CPU time (one thread): what the work costs, less swayed by other load
                "cpu_throughput_ratio": o["completion_tokens_per_cpu_s"] / t["completion_tokens_per_cpu_s"],
            }
    out["pairs"] = pairs
    # headline: TRL as it ships (gradient checkpointing on) against ours with the same setting
    head = pairs.get("gradient_checkpointing") or pairs.get("no_checkpointing")
    if head:
        out.update(head)
        out["headline_pair"] = "gradient_checkpointing" if "gradient_checkpointing" in pairs else "no_checkpointing"
    if "ours" in summary and "sft" in summary:
        out["sdft_sft_time_ratio"] = summary["ours"]["seconds_per_step_median"] / summary["sft"]["seconds_per_step_median"]
        out["sdft_sft_cpu_time_ratio"] = (summary["ours"]["cpu_seconds_per_step_median"]
                                          / summary["sft"]["cpu_seconds_per_step_median"])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(table(summary, pairs, out.get("sdft_sft_time_ratio")))


def table(summary: dict, pairs: dict, sdft_sft: float | None) -> str:
    lines = ["| run | s/step (median) | CPU s/step | completion tok/s | peak RSS MB |", "|---|---|---|---|---|"]
    for m, r in summary.items():
        lines.append(f"| {m} | {r['seconds_per_step_median']:.1f} | {r['cpu_seconds_per_step_median']:.1f} | "
                     f"{r['completion_tokens_per_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    for name, p in pairs.items():
        lines.append(f"\nours / TRL, {name.replace('_', ' ')}: throughput ×{p['throughput_ratio']:.2f}, "
                     f"step time ×{p['seconds_per_step_ratio']:.2f} faster, peak RSS ×{p['peak_rss_ratio']:.2f}")
    if sdft_sft:
        lines.append(f"SDFT / SFT step time: ×{sdft_sft:.2f}")
    return "\n".join(lines)


def _versions() -> dict:
    import peft
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "trl": trl.__version__}


if __name__ == "__main__":
    main()
