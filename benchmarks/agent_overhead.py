"""What the agent costs on top of the model: one agent turn vs raw `model.generate`, same prompt,
same number of new tokens. Prints a table and writes benchmarks/results/agent_overhead.json.

    SDFT_AGENT_HOME=/tmp/h1 python benchmarks/agent_overhead.py          # the champion of that home
    python benchmarks/agent_overhead.py --repeats 3 --new-tokens 32       # shorter

One agent turn = everything `Agent.run` does for one model call: pin the version (a champion
lookup in memory.db), bind the tools, render and encode through the prompt module, langchain's
callbacks, generate, decode, parse and validate the calls, run any valid call, record the episode
in a memory. Raw = `model.generate` on the ids the agent sends (checked equal first). Both
generate exactly N tokens (min_new_tokens = max_new_tokens = N, greedy) and alternate, so drift
in the machine's speed hits both. Recall is off (0 demonstrations) so the prompts are the same.

Two estimates, because a shared 2-core machine can slow single runs many times over:
- overhead_ratio: best agent turn / best raw generate - 1 (best of N: noise only ever adds time);
  the paired median over rounds is reported beside it;
- in_turn_overhead_ms: inside each agent turn, its time minus the time spent in model.generate
  (measured in the same run, so the machine's speed cancels out), median over turns.

Goal (issue 5): overhead <= 5% of the raw generation time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from agent.chat_model import LocalChatModel
from agent.loop import Agent, AgentConfig
from agent.runtime import ModelRuntime
from memory.store import Memory
from skills.tools import implementation

RESULTS = Path(__file__).resolve().parent / "results" / "agent_overhead.json"
QUESTION = "How many days are there between 2024-01-01 and 2024-03-01?"
SKILL = "date_math"
TOOLS = json.loads((Path(__file__).resolve().parents[1] / "skills" / "packs" / "date_math.json").read_text())["tools"]


class TimedGenerate:
    """model.generate with the duration of its last call kept (both arms go through it)."""

    def __init__(self, generate):
        self.generate = generate
        self.last = 0.0
        self.inputs: list[list[int]] = []

    def __call__(self, **kwargs):
        self.inputs.append(kwargs["input_ids"][0].tolist())
        t0 = time.perf_counter()
        out = self.generate(**kwargs)
        self.last = time.perf_counter() - t0
        return out


def raw_generate(model, fmt, ids: list[int], n: int) -> int:
    with torch.inference_mode():
        x = torch.tensor([ids], device=model.device)
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, eos_token_id=fmt.end_of_turn_id, pad_token_id=fmt.tokenizer.pad_token_id)
    return out.shape[1] - x.shape[1]


def agent_turn(agent: Agent) -> int:
    ep = agent.run(QUESTION)
    assert ep.turns == 1 and ep.id is not None
    return ep.usage["output_tokens"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=None, help="model store home (default: $SDFT_AGENT_HOME)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    n = args.new_tokens

    runtime = ModelRuntime(args.home)
    loaded = runtime.current()
    model, fmt = loaded.model, loaded.fmt
    impl = implementation(SKILL)
    with tempfile.TemporaryDirectory() as scratch:
        memory = Memory(Path(scratch) / "home")  # episodes go to a scratch memory, not the store's
        memory.add_skill(SKILL, "Calendar arithmetic", TOOLS)
        llm = LocalChatModel(runtime=runtime, max_new_tokens=n, min_new_tokens=n)
        agent = Agent(llm, [(t, impl[t["name"]]) for t in memory.tools_for(SKILL)], memory=memory, skill=SKILL,
                      config=AgentConfig(recall_k=0, max_turns=1))

        # the agent must send exactly these ids (checked on every turn below)
        ids = fmt.encode([{"role": "user", "content": QUESTION}], memory.tools_for(SKILL))
        timed = model.generate = TimedGenerate(model.generate)
        load_before = os.getloadavg()
        raw_generate(model, fmt, ids, n)  # warm-up of both paths
        agent_turn(agent)
        times: dict[str, list[float]] = {"raw": [], "agent": []}
        in_turn: list[tuple[float, float]] = []  # (turn minus its generate, its generate)
        for i in range(args.repeats):
            order = ("raw", "agent") if i % 2 == 0 else ("agent", "raw")
            for kind in order:
                t0 = time.perf_counter()
                produced = raw_generate(model, fmt, ids, n) if kind == "raw" else agent_turn(agent)
                times[kind].append(time.perf_counter() - t0)
                assert produced == n, f"{kind} produced {produced} tokens, expected {n}"
                if kind == "agent":
                    in_turn.append((times[kind][-1] - timed.last, timed.last))
        load_after = os.getloadavg()
        del model.generate
        assert all(x == ids for x in timed.inputs), "the agent did not send the prompt module's ids"
        memory.close()

    paired = [a / r - 1 for a, r in zip(times["agent"], times["raw"], strict=True)]
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = best["agent"] / best["raw"] - 1
    result = {
        "model_version": loaded.version,
        "prompt_tokens": len(ids),
        "new_tokens": n,
        "repeats": args.repeats,
        "raw_s": times["raw"],
        "agent_s": times["agent"],
        "raw_best_s": best["raw"],
        "agent_best_s": best["agent"],
        "raw_median_s": med["raw"],
        "agent_median_s": med["agent"],
        "overhead_ratio": ratio,  # best agent turn / best raw generate - 1
        "overhead_ms": (best["agent"] - best["raw"]) * 1000,
        "paired_median_ratio": statistics.median(paired),  # median over rounds of agent/raw - 1
        "in_turn_overhead_ms": statistics.median(o for o, _ in in_turn) * 1000,  # turn minus its generate
        "in_turn_overhead_ratio": statistics.median(o / g for o, g in in_turn),
        "goal": 0.05,
        "passes": ratio <= 0.05,
        "load_average_before_after": [load_before[0], load_after[0]],
        "torch_threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cores": os.cpu_count()},
    }
    table = Table("", "best s", "median s", "tokens/s (best)", "runs (s)",
                  title=f"one agent turn vs raw generate — {loaded.version}, {len(ids)} prompt + {n} new tokens")
    for kind in ("raw", "agent"):
        table.add_row(kind, f"{best[kind]:.3f}", f"{med[kind]:.3f}", f"{n / best[kind]:.1f}",
                      " ".join(f"{t:.2f}" for t in times[kind]))
    console = Console()
    console.print(table)
    verdict = "[green]passes[/]" if result["passes"] else "[red]fails[/]"
    console.print(f"overhead (best of {args.repeats}): {result['overhead_ms']:.1f} ms, ratio {ratio:+.2%} (goal ≤ 5%): "
                  f"{verdict}; paired median {result['paired_median_ratio']:+.2%}; inside a turn, outside "
                  f"generate: {result['in_turn_overhead_ms']:.1f} ms ({result['in_turn_overhead_ratio']:.2%}); "
                  f"load average {load_before[0]:.2f} → {load_after[0]:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
