"""The training loop, shared by SDFT and SFT, under `accelerate`.

    for each optimizer step:
        for each micro-batch of this process's share of the step's examples:
            targets  = objective.targets(batch)           # SDFT: rollouts + teacher hidden states
                                                          # SFT:  the demonstration tokens
            hidden   = student's final hidden states at completion positions (one forward)
            loss     = Σ_chunks objective.token_loss(head(hidden[:, chunk])) · weights
            backward (chunk by chunk into hidden, then once through the model)
        clip grad-norm, AdamW step, cosine schedule step, objective.after_step()  # EMA teacher

Run by `accelerate launch` or `torchrun`, the same code is DDP: every process takes its own
slice of each step's examples and gradients are averaged. Gradient accumulation is done here
(no_sync on all but the last micro-batch), so leave accelerate's own accumulation at 1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from agent.prompt import PromptFormat
from learner.batch import completion_hidden, pack, prefix_groups, trained_mask
from learner.config import LearnConfig
from learner.divergence import chunked_backward, sequence_weights
from learner.examples import EncodedExample, Example, encode_example
from learner.lora import attach_lora
from learner.sdft import SDFTObjective
from learner.sft import SFTObjective

OBJECTIVES = {"sdft": SDFTObjective, "sft": SFTObjective}


@dataclass
class Plan:
    n_examples: int
    world: int
    per_step: int  # examples per optimizer step, all processes together
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


@dataclass
class TrainResult:
    model: object  # the PEFT model (unwrapped), student adapter active
    plan: Plan
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def plan_steps(n_examples: int, cfg: LearnConfig, world: int = 1) -> Plan:
    if n_examples < 1:
        raise ValueError("nothing to learn: no examples")
    per_step = cfg.batch_size * cfg.grad_accum * world
    spe = math.ceil(n_examples / per_step)
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * spe
    return Plan(n_examples, world, per_step, spe, total, math.ceil(cfg.warmup_ratio * total))


def step_batches(step: int, plan: Plan, cfg: LearnConfig, rank: int, seed: int) -> list[list[int]]:
    """This process's micro-batches (example indices) for optimizer step `step`.

    The examples form one stream: epoch e is a permutation seeded by (seed, e); step s takes the
    next `per_step` of the stream, so the last step of an epoch runs into the next one rather
    than shrinking. Micro-batch j of process r is the ((j·world + r))-th slice of `batch_size`.
    """
    n = plan.n_examples
    orders: dict[int, list[int]] = {}

    def at(k: int) -> int:
        epoch = k // n
        if epoch not in orders:
            g = torch.Generator().manual_seed(seed * 7919 + epoch)
            orders[epoch] = torch.randperm(n, generator=g).tolist() if cfg.shuffle else list(range(n))
        return orders[epoch][k % n]

    start = step * plan.per_step
    bs = cfg.batch_size
    return [[at(start + (j * plan.world + rank) * bs + i) for i in range(bs)] for j in range(cfg.grad_accum)]


def micro_step(objective, wrapped, peft_model, batch: list[EncodedExample], n_sequences: int,
               cfg: LearnConfig, pad_id: int, generator=None,
               backward: Callable | None = None, no_sync: Callable | None = None) -> dict:
    """Targets, then teacher pass, student forward, chunked loss and backward for one
    micro-batch, one prefix group at a time (learner.batch.prefix_groups; one group unless the
    batch mixes prompts). Gradients accumulate over the groups; `no_sync()` (DDP) wraps every
    group's backward but the last, so one all-reduce is made per micro-batch. Returns sums."""
    t0 = time.perf_counter()
    targets = objective.targets(batch, generator, teacher=False)  # SDFT: the rollouts, whole batch
    t1 = time.perf_counter()
    head = peft_model.get_output_embeddings()
    groups = prefix_groups([e.prompt_ids for e in batch], cfg.min_shared_prefix)
    sums = {"loss": 0.0, "token_loss_sum": 0.0, "trained_tokens": 0, "completion_tokens": 0}
    teacher_s = 0.0
    for g, rows in enumerate(groups):
        sub_batch = [batch[i] for i in rows]
        sub = targets.select(rows) if len(groups) > 1 else targets
        tg = time.perf_counter()
        objective.add_teacher(sub_batch, sub)
        teacher_s += time.perf_counter() - tg
        packed = pack([e.prompt_ids for e in sub_batch], sub.completions, pad_id, peft_model.device,
                      cfg.min_shared_prefix)
        sub.completion_ids = packed.completion_ids
        mask = trained_mask(packed.completion_mask, sub.starts)
        weights = sequence_weights(mask, n_sequences)
        token_sum = torch.zeros((), device=packed.input_ids.device)

        def chunk_loss(logits, sl, sub=sub, mask=mask, weights=weights):
            nonlocal token_sum
            per_token = objective.token_loss(logits, sl, sub, head)
            token_sum = token_sum + (per_token.detach() * mask[:, sl]).sum()
            return (per_token * weights[:, sl]).sum()

        last = g == len(groups) - 1
        with nullcontext() if last or no_sync is None else no_sync():
            wrapped.train()
            hidden = completion_hidden(wrapped, packed)
            loss = chunked_backward(hidden, head, chunk_loss, cfg.chunk_size, backward)
        sub.teacher_hidden = None  # free it before the next group
        sums["loss"] += loss.item()
        sums["token_loss_sum"] += token_sum.item()
        sums["trained_tokens"] += int(mask.sum())
        sums["completion_tokens"] += int(packed.completion_mask.sum())
    t2 = time.perf_counter()
    return {
        **sums,
        "sequences": len(batch),
        "prefix_groups": len(groups),
        "targets_s": t1 - t0 + teacher_s,
        "train_s": t2 - t1 - teacher_s,
        **targets.stats,
    }


def train(
    model,
    tokenizer,
    examples: list[Example],
    cfg: LearnConfig,
    *,
    accelerator: Accelerator | None = None,
    progress: bool = True,
    on_step: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train a LoRA student on `examples` with `cfg.method`; returns the PEFT model.

    `on_step(metrics)` is called on the main process after every optimizer step.
    """
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)
    fmt = PromptFormat(tokenizer)
    encoded = [encode_example(ex, fmt, cfg.teacher_template, cfg.force_tool_prefix and cfg.method == "sdft")
               for ex in examples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fmt.end_of_turn_id
    stop_ids = {fmt.end_of_turn_id} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())

    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model = attach_lora(model, cfg)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = plan_steps(len(encoded), cfg, accelerator.num_processes)
    scheduler = get_cosine_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)
    # The scheduler stays unprepared: accelerate's wrapper would step it once per process.
    wrapped, optimizer = accelerator.prepare(peft_model, optimizer)
    objective = OBJECTIVES[cfg.method](peft_model, cfg, stop_ids, pad_id)
    warmup = (SFTObjective(peft_model, cfg, stop_ids, pad_id)
              if cfg.method == "sdft" and cfg.sft_warmup_steps > 0 else None)
    generator = torch.Generator(device=accelerator.device)
    generator.manual_seed(cfg.seed * 1_000_003 + accelerator.process_index + 1)

    def backward(t, g):
        accelerator.backward(t, gradient=g)

    result = TrainResult(peft_model, plan)
    bar = tqdm(total=plan.total_steps, desc=cfg.method, unit="step", dynamic_ncols=True,
               disable=not (progress and accelerator.is_main_process))
    started = time.perf_counter()
    for step in range(plan.total_steps):
        t0 = time.perf_counter()
        micro = step_batches(step, plan, cfg, accelerator.process_index, cfg.seed)
        step_objective = warmup if warmup is not None and step < cfg.sft_warmup_steps else objective
        stats = []
        for j, idx in enumerate(micro):
            sync = j == len(micro) - 1
            with nullcontext() if sync else accelerator.no_sync(wrapped):
                stats.append(micro_step(step_objective, wrapped, peft_model, [encoded[i] for i in idx],
                                        cfg.batch_size * cfg.grad_accum, cfg, pad_id, generator, backward,
                                        no_sync=lambda: accelerator.no_sync(wrapped)))
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        objective.after_step()  # the EMA teacher follows the student through a warm-up too
        seconds = time.perf_counter() - t0

        keys = ["loss", "token_loss_sum", "trained_tokens", "completion_tokens", "sequences",
                "targets_s", "train_s", "teacher_rollouts"]
        local = torch.tensor([sum(s.get(k, 0) for s in stats) for k in keys], dtype=torch.float64,
                             device=accelerator.device)
        total = dict(zip(keys, accelerator.reduce(local, "sum").tolist(), strict=True))
        world = accelerator.num_processes
        metrics = {
            "step": step + 1,
            "loss": total["loss"] / world,
            ("divergence" if step_objective.name == "sdft" else "cross_entropy"): total["token_loss_sum"] / max(total["trained_tokens"], 1),
            "grad_norm": float(grad_norm),
            "lr": lr,
            "completion_tokens": int(total["completion_tokens"]),
            "trained_tokens": int(total["trained_tokens"]),
            "tokens_per_s": total["completion_tokens"] / seconds,
            "step_s": seconds,
            "targets_s": total["targets_s"] / world,
            "train_s": total["train_s"] / world,
        }
        if cfg.method == "sdft" and cfg.teacher_rollout_fraction > 0:
            metrics["teacher_rollouts"] = int(total["teacher_rollouts"])
        result.history.append(metrics)
        if accelerator.is_main_process:
            key = "divergence" if step_objective.name == "sdft" else "cross_entropy"
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", **{key[:3]: f"{metrics[key]:.4f}"},
                            tok_s=f"{metrics['tokens_per_s']:.0f}")
            bar.update(1)
            if on_step is not None:
                on_step(metrics)
    bar.close()
    result.summary = summarize(result.history, time.perf_counter() - started)
    peft_model.eval()
    return result


def summarize(history: list[dict], seconds: float) -> dict:
    if not history:
        return {"steps": 0}
    tokens = sum(h["completion_tokens"] for h in history)
    key = "divergence" if "divergence" in history[-1] else "cross_entropy"
    return {
        "steps": len(history),
        "loss_first": history[0]["loss"],
        "loss_last": history[-1]["loss"],
        "loss_mean": sum(h["loss"] for h in history) / len(history),
        f"{key}_last": history[-1][key],
        "completion_tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }
