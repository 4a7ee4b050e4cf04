"""The training loop, shared by SDFT and SFT, under `accelerate`.

    before the first step (the model is still the champion): per-skill method choice
    (method="auto", learner.competence); self-replay targets (learner.retention)
    for each optimizer step:
        retention micro-batch (optional, weight β): KL to the champion on the student's own
            samples of retention prompts, or cross-entropy on the champion's answers
        for each micro-batch of this process's share of the step's examples (split by method):
            targets  = objective.targets(batch)           # SDFT: rollouts + teacher hidden states
                                                          # SFT:  the demonstration tokens
            hidden   = student's final hidden states at completion positions (one forward)
            loss     = Σ_chunks objective.token_loss(head(hidden[:, chunk])) · weights
            backward (chunk by chunk into hidden, then once through the model)
        clip grad-norm, AdamW step, cosine schedule step, objective.after_step()  # EMA teacher
        every eval_every steps (optional): held-out demonstrations' loss; stop when it stalls

Run by `accelerate launch` or `torchrun`, the same code is DDP: every process takes its own
slice of each step's examples and gradients are averaged. Gradient accumulation is done here
(no_sync on all but the last backward of a step), so leave accelerate's own accumulation at 1.
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

from agent.prompt import CALL_OPEN, PromptFormat
from learner.batch import completion_hidden, pack, prefix_groups, trained_mask
from learner.competence import choose_methods
from learner.config import LearnConfig
from learner.divergence import chunked_backward, sequence_weights
from learner.early_stop import EarlyStopper, mean_cross_entropy
from learner.examples import EncodedExample, Example, encode_example
from learner.lora import attach_lora
from learner.retention import (
    Focus,
    RetentionPrompt,
    champion_answers,
    encode_pool,
    retention_batch,
    retention_objective,
)
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


def _stream(n: int, seed: int, shuffle: bool) -> Callable[[int], int]:
    """Position k of an endless stream over n examples: epoch e is a permutation seeded by
    (seed, e) (in order when not shuffled)."""
    orders: dict[int, list[int]] = {}

    def at(k: int) -> int:
        epoch = k // n
        if epoch not in orders:
            g = torch.Generator().manual_seed(seed * 7919 + epoch)
            orders[epoch] = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
        return orders[epoch][k % n]

    return at


def step_batches(step: int, plan: Plan, cfg: LearnConfig, rank: int, seed: int) -> list[list[int]]:
    """This process's micro-batches (example indices) for optimizer step `step`.

    The examples form one stream: epoch e is a permutation seeded by (seed, e); step s takes the
    next `per_step` of the stream, so the last step of an epoch runs into the next one rather
    than shrinking. Micro-batch j of process r is the ((j·world + r))-th slice of `batch_size`.
    """
    at = _stream(plan.n_examples, seed, cfg.shuffle)
    start = step * plan.per_step
    bs = cfg.batch_size
    return [[at(start + (j * plan.world + rank) * bs + i) for i in range(bs)] for j in range(cfg.grad_accum)]


def rehearsal_batches(step: int, plan: Plan, cfg: LearnConfig, rank: int, seed: int, n: int) -> list[list[int]]:
    """The rehearsed examples (indices 0..n-1 of the rehearsal set) each of this process's
    micro-batches adds at `step` (cfg.replay_batch of them): a stream of their own, seeded apart
    from the new examples', laid out like step_batches."""
    if n < 1 or cfg.replay_batch < 1:
        return [[] for _ in range(cfg.grad_accum)]
    at = _stream(n, seed * 104_729 + 17, cfg.shuffle)
    k = cfg.replay_batch
    start = step * cfg.grad_accum * plan.world * k
    return [[at(start + (j * plan.world + rank) * k + i) for i in range(k)] for j in range(cfg.grad_accum)]


def micro_step(objective, wrapped, peft_model, batch: list[EncodedExample], n_sequences: int,
               cfg: LearnConfig, pad_id: int, generator=None,
               backward: Callable | None = None, no_sync: Callable | None = None,
               scale: float = 1.0, prefix_grad: bool = True, opening: float = 1.0) -> dict:
    """Targets (SDFT: rollouts, decoded per prefix group too), then teacher pass, student
    forward, chunked loss and backward for one micro-batch, one prefix group at a time
    (learner.batch.prefix_groups; one group unless the batch mixes prompts, e.g. retention
    prompts with and without tools). Gradients accumulate over the groups; `no_sync()` (DDP) wraps every
    group's backward but the last, so one all-reduce is made per micro-batch. The loss is the
    mean over `n_sequences` sequences, times `scale` (the retention term's β). `prefix_grad=False`:
    no gradient through the shared prefix's keys/values (LearnConfig.retention_prefix_grad).
    `opening`: a sequence's first trained token counts as that many in its mean
    (LearnConfig.retention_opening_weight). Returns sums."""
    t0 = time.perf_counter()
    # no gradient through the prefix: the rollouts' prefill of it is the student's own pass over
    # it (the same weights, merged or not), so the training pass reads it instead of running it
    shared = {} if not prefix_grad and cfg.lora_dropout == 0 else None
    targets = objective.targets(batch, generator, teacher=False, prefixes=shared)  # SDFT: rollouts, a decode per prefix group
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
        weights = sequence_weights(mask.to(head.weight.dtype), n_sequences, opening) * scale
        token_sum = torch.zeros((), device=packed.input_ids.device)

        def chunk_loss(logits, sl, sub=sub, mask=mask, weights=weights):
            nonlocal token_sum
            per_token = objective.token_loss(logits, sl, sub, head)
            token_sum = token_sum + (per_token.detach() * mask[:, sl]).sum()
            return (per_token * weights[:, sl]).sum()

        last = g == len(groups) - 1
        with nullcontext() if last or no_sync is None else no_sync():
            wrapped.train()
            hidden = completion_hidden(wrapped, packed, shared, prefix_grad=prefix_grad)
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


LABELS = ("sft", "sdft", "retention")  # the loss terms of a step, in the order they are reported
SUM_KEYS = ("loss", "token_loss_sum", "trained_tokens", "completion_tokens", "sequences", "targets_s",
            "train_s", "teacher_rollouts", "seconds")


def _token_key(label: str, cfg: LearnConfig) -> str:
    if label == "retention":
        return "retention_kl" if cfg.retention == "kl" else "retention_ce"
    return "divergence" if label == "sdft" else "cross_entropy"


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def train(
    model,
    tokenizer,
    examples: list[Example],
    cfg: LearnConfig,
    *,
    accelerator: Accelerator | None = None,
    progress: bool = True,
    on_step: Callable[[dict], None] | None = None,
    heldout: list[Example] | None = None,
    retention: list[RetentionPrompt] | None = None,
    origin=None,
    rehearsal: list[Example] | None = None,
) -> TrainResult:
    """Train a LoRA student on `examples`; returns the PEFT model.

    The new-skill loss is `cfg.method`'s, or with method "auto" chosen per skill by the
    competence measurement (learner.competence), run on `model` before the adapter is attached.
    `retention`: prompts for the retention term (cfg.retention kl or self_replay), one micro-batch
    of `cfg.retention_batch` of them per step, weighted `cfg.retention_beta`; `origin`: the frozen
    base model that teaches the everyday ones (cfg.retention_teacher "base"). `heldout`:
    demonstrations never trained on, whose loss is measured every `cfg.eval_every` steps; the
    run stops after `cfg.patience` evaluations without improvement and (cfg.restore_best) ends
    with the adapter of the best one. `on_step(metrics)` is called on the main process after
    every optimizer step. `rehearsal`: earlier skills' demonstrations trained beside the new ones:
    `cfg.replay_batch` of them added to every micro-batch from their own stream (the steps are
    planned on `examples` alone), or with replay_batch 0 simply more examples in the one stream.
    """
    if rehearsal and cfg.replay_batch == 0:
        examples, rehearsal = examples + rehearsal, []
    rehearsal = rehearsal or []
    n_new = len(examples)
    examples = examples + rehearsal
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)
    fmt = PromptFormat(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fmt.end_of_turn_id
    stop_ids = {fmt.end_of_turn_id} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
    generator = torch.Generator(device=accelerator.device)
    generator.manual_seed(cfg.seed * 1_000_003 + accelerator.process_index + 1)

    # Before the adapter exists the model is the champion: measure the teacher, answer as it.
    t_prep = time.perf_counter()
    methods, method_choice = choose_methods(model, tokenizer, examples, cfg, generator)
    encoded = [encode_example(ex, fmt, cfg.teacher_template, cfg.force_tool_prefix and m == "sdft")
               for ex, m in zip(examples, methods, strict=True)]
    held = [encode_example(ex, fmt, cfg.teacher_template) for ex in heldout or []]
    pool = encode_pool(retention, fmt) if retention and cfg.retention != "none" else []
    if pool and cfg.retention == "self_replay":
        champion_answers(model, pool, cfg, stop_ids, pad_id)
    prep_s = time.perf_counter() - t_prep

    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    uses_sdft = "sdft" in methods
    peft_model = attach_lora(model, cfg, teacher_adapter=uses_sdft and cfg.teacher == "ema")
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = plan_steps(n_new, cfg, accelerator.num_processes)
    scheduler = get_cosine_schedule_with_warmup(optimizer, plan.warmup_steps, plan.total_steps)
    # The scheduler stays unprepared: accelerate's wrapper would step it once per process.
    wrapped, optimizer = accelerator.prepare(peft_model, optimizer)
    objectives = {m: OBJECTIVES[m](peft_model, cfg, stop_ids, pad_id) for m in dict.fromkeys(methods)}
    warmup = SFTObjective(peft_model, cfg, stop_ids, pad_id) if uses_sdft and cfg.sft_warmup_steps > 0 else None
    keep = (retention_objective(peft_model, cfg, stop_ids, pad_id, origin=origin)
            if pool and cfg.retention_beta > 0 else None)
    focus = (Focus(keep, pool, tokenizer(CALL_OPEN, add_special_tokens=False)["input_ids"], cfg, pad_id)
             if keep is not None and cfg.retention == "kl" and cfg.retention_focus > 0 else None)

    def backward(t, g):
        accelerator.backward(t, gradient=g)

    def no_sync():
        return accelerator.no_sync(wrapped)

    result = TrainResult(peft_model, plan)
    stopper = EarlyStopper(cfg.patience, cfg.min_delta) if held else None
    best = None
    heldout_initial = None
    if stopper is not None:
        heldout_initial = mean_cross_entropy(peft_model, held, pad_id, cfg.batch_size, cfg.min_shared_prefix,
                                             cfg.chunk_size)
        stopper.update(0, heldout_initial)
        best = _snapshot(params)
    bar = tqdm(total=plan.total_steps, desc=cfg.method, unit="step", dynamic_ncols=True,
               disable=not (progress and accelerator.is_main_process))
    started = time.perf_counter()
    n_seq = cfg.batch_size * cfg.grad_accum
    world = accelerator.num_processes
    focus_s = 0.0
    for step in range(plan.total_steps):
        t0 = time.perf_counter()
        calls = []  # (label, objective, batch, n_sequences, scale): one backward each, the last synced
        if keep is not None:
            idx = retention_batch(step, len(pool), cfg, accelerator.process_index, world)
            if focus is not None:
                tf = time.perf_counter()
                idx = focus.batch(step, idx, accelerator.process_index, world)
                focus_s += time.perf_counter() - tf
            calls.append(("retention", keep, [pool[i] for i in idx], cfg.retention_batch, cfg.retention_beta))
        extra = rehearsal_batches(step, plan, cfg, accelerator.process_index, cfg.seed, len(rehearsal))
        for idx, more in zip(step_batches(step, plan, cfg, accelerator.process_index, cfg.seed), extra, strict=True):
            idx = idx + [n_new + i for i in more]  # each weighs 1/n_seq, as a new one does
            for m in objectives:
                rows = [i for i in idx if methods[i] == m]
                if not rows:
                    continue
                objective = warmup if m == "sdft" and warmup is not None and step < cfg.sft_warmup_steps else objectives[m]
                calls.append((objective.name, objective, [encoded[i] for i in rows], n_seq, 1.0))
        sums = {label: dict.fromkeys(SUM_KEYS, 0.0) for label in LABELS}
        for j, (label, objective, batch, n, scale) in enumerate(calls):
            tc = time.perf_counter()
            with nullcontext() if j == len(calls) - 1 else no_sync():
                got = micro_step(objective, wrapped, peft_model, batch, n, cfg, pad_id, generator, backward,
                                 no_sync=no_sync, scale=scale,
                                 prefix_grad=label != "retention" or cfg.retention_prefix_grad,
                                 opening=cfg.retention_opening_weight if label == "retention" else 1.0)
            got["seconds"] = time.perf_counter() - tc
            for k in SUM_KEYS:
                sums[label][k] += got.get(k, 0)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        for objective in objectives.values():
            objective.after_step()  # the EMA teacher follows the student through a warm-up too
        seconds = time.perf_counter() - t0

        local = torch.tensor([sums[label][k] for label in LABELS for k in SUM_KEYS], dtype=torch.float64,
                             device=accelerator.device)
        flat = accelerator.reduce(local, "sum").tolist()
        total = {label: dict(zip(SUM_KEYS, flat[i * len(SUM_KEYS):(i + 1) * len(SUM_KEYS)], strict=True))
                 for i, label in enumerate(LABELS)}
        skill = [total[label] for label in ("sft", "sdft")]
        completion = sum(t["completion_tokens"] for t in skill)
        metrics = {
            "step": step + 1,
            "loss": sum(t["loss"] for t in total.values()) / world,
            "grad_norm": float(grad_norm),
            "lr": lr,
            "completion_tokens": int(completion),
            "trained_tokens": int(sum(t["trained_tokens"] for t in skill)),
            "tokens_per_s": completion / seconds,
            "step_s": seconds,
            "targets_s": sum(t["targets_s"] for t in total.values()) / world,
            "train_s": sum(t["train_s"] for t in total.values()) / world,
        }
        for label in LABELS:
            t = total[label]
            if t["sequences"]:
                metrics[_token_key(label, cfg)] = t["token_loss_sum"] / max(t["trained_tokens"], 1)
        if keep is not None:
            metrics["retention_loss"] = total["retention"]["loss"] / world
            metrics["retention_tokens"] = int(total["retention"]["completion_tokens"])
            metrics["retention_s"] = total["retention"]["seconds"] / world
        if uses_sdft and cfg.teacher_rollout_fraction > 0:
            metrics["teacher_rollouts"] = int(total["sdft"]["teacher_rollouts"])
        stop = False
        if stopper is not None and ((step + 1) % cfg.eval_every == 0 or step + 1 == plan.total_steps):
            metrics["heldout_loss"] = mean_cross_entropy(peft_model, held, pad_id, cfg.batch_size,
                                                         cfg.min_shared_prefix, cfg.chunk_size)
            stop = stopper.update(step + 1, metrics["heldout_loss"])
            if stopper.improved_last:
                best = _snapshot(params)
        result.history.append(metrics)
        if accelerator.is_main_process:
            key = _token_key(methods[0], cfg)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", **{key[:3]: f"{metrics.get(key, 0):.4f}"},
                            tok_s=f"{metrics['tokens_per_s']:.0f}")
            bar.update(1)
            if on_step is not None:
                on_step(metrics)
        if stop:
            break
    bar.close()
    restored = False
    if stopper is not None and cfg.restore_best and not stopper.improved_last:
        with torch.no_grad():
            for p, saved in zip(params, best, strict=True):
                p.copy_(saved)
        restored = True
    seconds = time.perf_counter() - started
    result.summary = summarize(result.history, seconds)
    result.summary.update(
        planned_steps=plan.total_steps,
        prepare_s=prep_s,
        methods={m: methods.count(m) for m in dict.fromkeys(methods)},
        method_choice=method_choice,
        why_method={s: c["why"] for s, c in method_choice.items()},
        train_loss_final=mean_cross_entropy(peft_model, encoded, pad_id, cfg.batch_size, cfg.min_shared_prefix,
                                            cfg.chunk_size),
    )
    if stopper is not None:
        result.summary.update(
            heldout_n=len(held),
            heldout_loss_initial=heldout_initial,
            heldout_loss_final=stopper.best if restored or stopper.improved_last else result.history[-1]["heldout_loss"],
            heldout_best_step=stopper.best_step,
            early_stopped_at=stopper.stopped_at,
            restored_best=restored,
        )
    if pool:
        sources: dict[str, int] = {}
        for p in retention:
            kind = p.source.split(":")[0]
            sources[kind] = sources.get(kind, 0) + 1
        result.summary["retention"] = {"kind": cfg.retention, "beta": cfg.retention_beta, "pool": len(pool),
                                       "sources": sources, "tool_sets": cfg.retention_tool_sets,
                                       "everyday_teacher": "base" if keep is not None and origin is not None
                                       else "champion"}
        if focus is not None:
            top = sorted(focus.chosen.items(), key=lambda kv: -kv[1])[:12]
            result.summary["retention"]["focus"] = {
                "k": cfg.retention_focus, "candidates": cfg.retention_focus_candidates, "seconds": focus_s,
                "steps": focus.history,
                "most_chosen": [{"prompt": retention[i].messages[-1]["content"], "source": retention[i].source,
                                 "times": n, "teacher_p": focus.teacher[i]} for i, n in top]}
    peft_model.eval()
    return result


def summarize(history: list[dict], seconds: float) -> dict:
    if not history:
        return {"steps": 0}
    tokens = sum(h["completion_tokens"] for h in history)
    out = {
        "steps": len(history),
        "loss_first": history[0]["loss"],
        "loss_last": history[-1]["loss"],
        "loss_mean": sum(h["loss"] for h in history) / len(history),
        "completion_tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }
    for key in ("cross_entropy", "divergence", "retention_kl", "retention_ce", "heldout_loss"):
        seen = [h[key] for h in history if key in h]
        if seen:
            out[f"{key}_last"] = seen[-1]
    if any("retention_s" in h for h in history):
        out["retention_s"] = sum(h.get("retention_s", 0.0) for h in history)
    return out
