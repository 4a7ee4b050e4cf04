"""Learn the demonstrations not yet learned into a candidate version, end to end:

    unlearned demonstrations (or the ids a learning run hands over) → examples → train (SDFT or SFT) → merge → candidate vNNNN
    (left unpromoted) → demonstrations marked used by the run

Everything is recorded on the run's row in memory.db as it happens (phase, per-step metrics,
candidate version, final status). The retention gate and promotion come after, elsewhere.
Under `accelerate launch` / `torchrun` every process trains its share; only the main process
writes to memory.db and the model store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from accelerate import Accelerator

from agent.loading import load
from agent.prompt import PromptFormat
from learner.config import LearnConfig, shipped_config
from learner.early_stop import split_holdout
from learner.examples import examples_from_demonstrations
from learner.lora import adapter_state, lora_config
from learner.merge import save_candidate
from learner.retention import pool_from_memory
from learner.train import Plan, plan_steps, train
from memory.demonstrations import ATTEMPTS
from memory.models import ModelStore
from memory.store import Memory


@dataclass
class LearnOutcome:
    demonstrations: list[int]
    parent: str | None
    plan: Plan | None = None
    run_id: int | None = None
    candidate: str | None = None
    summary: dict = field(default_factory=dict)
    dry_run: bool = False


def retention_origin(store, parent: str, cfg: LearnConfig, device: str):
    """The frozen base model that teaches everyday retention prompts (retention_teacher "base"),
    or None: the champion teaches (the setting says so, the retention is not KL, or the champion
    is the base itself, whose adapter-off copy is the same weights)."""
    if cfg.retention != "kl" or cfg.retention_teacher != "base":
        return None
    base = store.lineage(parent)[-1]
    if base == parent:
        return None
    origin, _ = load(base, store=store, device=device)
    origin.eval()
    origin.requires_grad_(False)
    return origin


def demo_tools_for(memory, cfg: LearnConfig):
    """The tools offered with each demonstration trained on (LearnConfig.demo_tools): its own
    skill's, or every installed tool as the agent serves them — one list for every skill, so
    a demonstration teaches which tool among all of them, in the system prompt where the
    retention prompts teach when to call none."""
    if cfg.demo_tools == "own":
        return memory.tools_for
    served = memory.served_tools()
    return lambda skill: served


def learn_candidate(
    home=None,
    cfg: LearnConfig | None = None,
    *,
    skill: str | None = None,
    version: str | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    progress: bool = True,
    accelerator: Accelerator | None = None,
    run_id: int | None = None,
    demonstration_ids: list[int] | None = None,
    attempts: int = ATTEMPTS,
) -> LearnOutcome:
    """Train on the unlearned demonstrations (of `skill`, or all) starting from `version` (the
    champion by default) and save the result as a new, unpromoted version.

    With `dry_run`, build the examples and the plan and stop: nothing is trained or written.
    Returns an outcome with no demonstrations when there is nothing new to learn.
    `run_id`: record on this existing run (learner.run owns its status; it is left 'running'
    with the candidate set) instead of starting and finishing one here. `cfg.replay`: also train
    on a seeded sample of this many demonstrations runs that landed learned (`rehearsal`), so a
    run rehearses older skills; only the new ones are marked used.
    `demonstration_ids`: train on exactly these (learner.run hands over what it selected, so what
    arrives meanwhile is not part of the run) instead of selecting the unlearned ones here.
    `attempts`: a demonstration that this many blocked or failed runs have tried is not selected
    (memory.demonstrations.UNLEARNED).
    """
    cfg = cfg or shipped_config()
    with Memory(home) as memory:
        return _learn(memory, ModelStore(home, quiet=True), cfg, skill, version, limit, dry_run,
                      progress, accelerator, run_id, demonstration_ids, attempts)


def rehearsal(memory: Memory, cfg: LearnConfig, exclude: set[int]) -> list[dict]:
    """`cfg.replay` demonstrations runs that landed trained on (a sample seeded by cfg.seed), none
    of `exclude` (the run's own). A blocked or failed run's demonstrations are not rehearsed: the
    champion never learned them, and rehearsing them every night taught a half-learned skill's
    calls for requests that need none (memory.demonstrations.LEARNED)."""
    if not cfg.replay:
        return []
    import random

    old = [d for d in memory.learned_demonstrations() if d["id"] not in exclude]
    return random.Random(cfg.seed).sample(old, min(cfg.replay, len(old)))


def _learn(memory, store, cfg, skill, version, limit, dry_run, progress, accelerator,
           run_id=None, demonstration_ids=None, attempts=ATTEMPTS) -> LearnOutcome:
    if demonstration_ids is None:
        demos = memory.unlearned_demonstrations(skill, limit, attempts)
    else:
        demos = memory.demonstrations(ids=list(demonstration_ids))
    parent = store.resolve(version).version
    ids = [d["id"] for d in demos]
    if not demos:
        return LearnOutcome([], parent, dry_run=dry_run)
    demos = demos + rehearsal(memory, cfg, set(ids))

    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    model, tokenizer = load(parent, store=store, device=str(accelerator.device))
    examples = examples_from_demonstrations(demos, PromptFormat(tokenizer), demo_tools_for(memory, cfg))
    # with replay_batch the steps are the new demonstrations' (rehearsal rides along in each batch)
    plan = plan_steps(len(ids) if cfg.replay_batch else len(examples), cfg, accelerator.num_processes)
    outcome = LearnOutcome(ids, parent, plan, dry_run=dry_run)
    if dry_run:
        return outcome

    main = accelerator.is_main_process
    own_run = run_id is None
    if own_run:
        run_id = memory.start_run(cfg.method, cfg.to_dict(), skill=skill, demonstration_ids=ids) if main else None
    outcome.run_id = run_id
    try:
        if main:
            memory.update_run(run_id, base_version=parent, phase="train",
                              metrics={"demonstrations": len(ids), "planned_steps": plan.total_steps})
        on_step = (lambda m: memory.update_run(run_id, metrics=m)) if main else None
        # no memorising: a slice of the new demonstrations is held out to stop on; retention
        # prompts pull the student back toward the champion, or the base for everyday prompts
        # (learner.early_stop, learner.retention)
        fresh, held = split_holdout(examples[:len(ids)], cfg.holdout_fraction, cfg.seed)
        retention = pool_from_memory(memory, cfg, examples[:len(ids)]) if cfg.retention != "none" else None
        origin = retention_origin(store, parent, cfg, str(accelerator.device)) if retention else None
        result = train(model, tokenizer, fresh, cfg, accelerator=accelerator, progress=progress, on_step=on_step,
                       heldout=held, retention=retention, origin=origin, rehearsal=examples[len(ids):])
        del origin
        outcome.summary = result.summary
        accelerator.wait_for_everyone()
        if main:
            memory.update_run(run_id, phase="merge", metrics=result.summary)
            outcome.candidate = save_candidate(
                store, parent, adapter_state(result.model), lora_config(cfg),
                method=cfg.method, demonstrations=ids, metrics=result.summary,
                config=cfg.to_dict(), learn_run_id=run_id,
                notes=f"{cfg.method} on {len(ids)} demonstration(s)" + (f" of {skill}" if skill else ""),
            )
            memory.update_run(run_id, candidate_version=outcome.candidate, phase="candidate")
            memory.mark_used(ids, run_id)
            if own_run:
                memory.finish_run(run_id, "succeeded", metrics=result.summary)
        accelerator.wait_for_everyone()
    except BaseException as exc:
        if main and run_id is not None and own_run:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            memory.finish_run(run_id, status, error=f"{type(exc).__name__}: {exc}")
        raise
    return outcome
