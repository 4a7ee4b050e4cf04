"""Retention self-distillation: while a run learns a new skill, pull the student back toward the
champion on prompts whose answers should not change (docs/ARCHITECTURE.md, "Retention
during training").

The champion is the weights the LoRA sits on, so its distribution is the same model with the
adapter disabled: no second copy of the weights.

- kl (on-policy): the student samples an answer to each retention prompt; at every position of
  that sample the loss is the full-vocabulary forward KL(champion ‖ student). This is SDFT's
  training step with the base teacher and a teacher prompt equal to the student's, so it reuses
  SDFTObjective; nothing is masked (there is no teacher phrasing to avoid copying).
- self_replay (off-policy, cheaper): cross-entropy on the champion's own greedy answers to the
  same prompts, computed once before the first step.

Both are weighted β beside the new-skill loss (LearnConfig.retention_beta). Before the first
step the adapter is zero, so the student is the champion and the KL is exactly 0.

Retention prompts: everyday requests (skills.retention), the same asked with installed tools
offered (requests that need none), tool-sounding requests no installed tool serves (a share,
LearnConfig.retention_task_share), and the prompts of earlier skills' demonstrations. Which tools
(LearnConfig.retention_tool_sets): "served", every installed tool in one system prompt exactly as
the agent serves (Memory.served_tools), for every prompt asked with tools; "each", one skill's
tools per prompt. Restraint must hold in the served context, which "each" never shows the model
(with it restraint fell 97 → 68% over six nights); and prompts that share one system prompt share
its computation (learner.batch), so the term's cost no longer grows with the number of tool sets.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import torch

from agent.decode import decode
from agent.prompt import PromptFormat
from learner.batch import completion_hidden, pack, prefix_groups, rollout_groups
from learner.divergence import upcast
from learner.examples import EncodedExample, Example
from learner.lora import teacher_context
from learner.sdft import SDFTObjective
from learner.sft import SFTObjective


@dataclass
class RetentionPrompt:
    messages: list[dict]
    tools: list[dict] | None
    source: str  # everyday | everyday+tools | task+tools | demo:<skill>


def build_pool(cfg, everyday: list[list[dict]], tool_sets: list[list[dict]],
               earlier: list[RetentionPrompt], tasks: list[list[dict]] | None = None) -> list[RetentionPrompt]:
    """A seeded pool of `cfg.retention_prompts` prompts: a share from earlier skills'
    demonstrations, a share of the rest (cfg.retention_task_share) tool-sounding requests no
    installed tool serves (`tasks`, always asked with tools offered), the rest everyday requests,
    a share of those asked with one of `tool_sets` offered (cycled in order, so the first set
    comes most often; one set: all of them with it)."""
    rng = random.Random(cfg.seed * 31 + 7)
    n = cfg.retention_prompts
    n_demo = min(len(earlier), round(n * cfg.retention_demo_share))
    pool = rng.sample(earlier, n_demo)
    sets = [s for s in tool_sets if s]
    tasks = tasks if sets else []
    n_task = min(len(tasks or []), round((n - n_demo) * cfg.retention_task_share))
    chosen = rng.sample(everyday, min(len(everyday), n - n_demo - n_task))
    if n_task:
        pool += [RetentionPrompt(m, sets[k % len(sets)], "task+tools")
                 for k, m in enumerate(rng.sample(tasks, n_task))]
    n_tools = round(len(chosen) * cfg.retention_tools_share) if sets else 0
    for k, messages in enumerate(chosen):
        if k < n_tools:
            pool.append(RetentionPrompt(messages, sets[k % len(sets)], "everyday+tools"))
        else:
            pool.append(RetentionPrompt(messages, None, "everyday"))
    rng.shuffle(pool)
    return pool


def pool_from_memory(memory, cfg, new_examples: list[Example]) -> list[RetentionPrompt]:
    """The run's retention pool; earlier demonstrations are those a previous run used. Tools
    offered (cfg.retention_tool_sets): "served", every installed tool as the agent serves them,
    for everyday prompts asked with tools and earlier demonstrations alike; "each", everyday
    prompts cycle the skills being learned first, then the other installed skills, and an
    earlier demonstration offers its own skill's tools."""
    from skills.retention import everyday_messages, task_messages

    if cfg.retention_tool_sets == "served":
        served = memory.served_tools()
        tool_sets = [served]

        def tools_of(skill: str) -> list[dict] | None:
            return served or None
    else:
        learning = list(dict.fromkeys(e.skill for e in new_examples if e.skill))
        others = [s["name"] for s in memory.list_skills() if s["name"] not in learning]
        tool_sets = [memory.tools_for(s) for s in learning + others]

        def tools_of(skill: str) -> list[dict] | None:
            return memory.tools_for(skill) or None
    new_ids = {e.demo_id for e in new_examples}
    earlier = [RetentionPrompt(list(d["messages"]), tools_of(d["skill"]), f"demo:{d['skill']}")
               for d in memory.demonstrations() if d.get("used_in_runs") and d["id"] not in new_ids]
    served = memory.served_tools()
    everyday = everyday_messages()
    tasks = task_messages(served) if cfg.retention_task_share > 0 else []
    if cfg.retention_corpus == "fetched":
        from skills.retention_corpus import fetched_messages

        scored = [m["content"] for s in memory.list_skills() for case in memory.eval_cases(s["name"])
                  for m in case["messages"] if m.get("role") == "user"]
        chat, requests = fetched_messages(memory.home, served, scored)
        everyday += chat
        tasks += requests if cfg.retention_task_share > 0 else []
    return build_pool(cfg, everyday, tool_sets, earlier, tasks)


def encode_pool(pool: list[RetentionPrompt], fmt: PromptFormat) -> list[EncodedExample]:
    """Token ids for each prompt; the teacher reads the student's own prompt. Everyday prompts
    may be taught by the origin (the base, when the run has one); an earlier skill's
    demonstration prompt always by the champion."""
    out = []
    for p in pool:
        ids = fmt.encode(p.messages, p.tools)
        out.append(EncodedExample(example=None, prompt_ids=ids, completion_ids=[], teacher_prompt_ids=ids,
                                  forced_ids=[], teacher="origin" if p.source.startswith(("everyday", "task")) else "champion"))
    return out


def kl_config(cfg):
    """The SDFT settings that make its step the retention KL."""
    return replace(cfg, method="sdft", teacher="base", divergence="forward", skip_first=0,
                   max_new_tokens=cfg.retention_max_new_tokens, temperature=cfg.retention_temperature,
                   top_p=1.0, teacher_rollout_fraction=0.0, force_tool_prefix=False, sft_warmup_steps=0)


@torch.no_grad()
def champion_answers(model, encoded: list[EncodedExample], cfg, stop_ids: set[int], pad_id: int) -> None:
    """Fill each prompt's completion with the champion's greedy answer (self-replay targets).
    Call with the adapter off or before it is attached: the weights are then the champion's."""
    was = model.training
    model.eval()
    try:
        chunks = [[encoded[j] for j in group[i:i + cfg.batch_size]]  # a prompt prefix per call where it can
                  for group in rollout_groups([e.prompt_ids for e in encoded], cfg.min_shared_prefix)
                  for i in range(0, len(group), cfg.batch_size)]
        for chunk in chunks:
            got = decode(model, [e.prompt_ids for e in chunk], max_new_tokens=cfg.retention_max_new_tokens,
                         stop_ids=stop_ids, pad_id=pad_id, temperature=0.0,
                         min_shared_prefix=cfg.min_shared_prefix)
            for e, c in zip(chunk, got, strict=True):
                e.completion_ids = c
    finally:
        model.train(was)


def retention_objective(peft_model, cfg, stop_ids: set[int], pad_id: int, origin=None):
    """The objective of the retention micro-batch (cfg.retention must not be "none"). `origin`:
    the base model that teaches everyday prompts (retention_teacher="base"; None: the champion)."""
    if cfg.retention == "kl":
        return SDFTObjective(peft_model, kl_config(cfg), stop_ids, pad_id, origin=origin)
    if cfg.retention == "self_replay":
        return SFTObjective(peft_model, cfg, stop_ids, pad_id)
    raise ValueError(f"no retention objective for retention={cfg.retention!r}")


def retention_batch(step: int, n_pool: int, cfg, rank: int = 0, world: int = 1) -> list[int]:
    """Pool indices for optimizer step `step` on process `rank`: the pool read in a seeded
    order, `retention_batch` prompts per process per step, wrapping around."""
    order = torch.randperm(n_pool, generator=torch.Generator().manual_seed(cfg.seed * 104729 + 11)).tolist()
    start = (step * world + rank) * cfg.retention_batch
    return [order[(start + i) % n_pool] for i in range(cfg.retention_batch)]


FOCUS_CHUNK = 16  # prompts per scoring pass: the served system prompt's keys/values are repeated per row


@torch.no_grad()
def opening_logprob(model, prompts: list[list[int]], opening: list[int], pad_id: int,
                    min_shared_prefix: int | None, head=None, memo: dict | None = None) -> list[float]:
    """log P(reply opens with `opening` | prompt) per prompt: one forward of the prompt and the
    opening's tokens, no sampling; prompts that share a system prompt run it once per call, or
    never when `memo` (learner.batch.prefix_cache's, e.g. a frozen teacher's) already holds it."""
    head = head if head is not None else model.get_output_embeddings()
    ids = torch.tensor(opening, device=model.device)
    out = [0.0] * len(prompts)
    memo = memo if memo is not None else {}  # one prefill of each shared prefix for all its chunks
    for group in prefix_groups(prompts, min_shared_prefix):
        for k in range(0, len(group), FOCUS_CHUNK):
            rows = group[k:k + FOCUS_CHUNK]
            packed = pack([prompts[i] for i in rows], [opening] * len(rows), pad_id, model.device, min_shared_prefix)
            hidden = completion_hidden(model, packed, memo, prefix_grad=False)
            logp = torch.log_softmax(upcast(head(hidden)), -1)
            got = logp.gather(-1, ids.expand(len(rows), -1).unsqueeze(-1)).squeeze(-1).sum(-1)
            for i, v in zip(rows, got.tolist(), strict=True):
                out[i] = v
    return out


class Focus:
    """Which retention prompts a step trains on when LearnConfig.retention_focus > 0: of
    `retention_focus_candidates` pool prompts (a seeded order of their own, wrapping around),
    those where the student is likeliest to open a tool call its teacher would not —
    P_student(call) − P_teacher(call) — then the seeded order's for the rest of the batch.

    The on-policy KL holds the prompts it samples on; where the student already agrees with its
    teacher its gradient is near zero, and what drifts is the prompts it does not see (night 4:
    pool prompts P(call) 0.008–0.028, gate failures at 0.1–0.3). Scoring is one forward per
    candidate without sampling; the teacher's side never changes, so it is scored once."""

    def __init__(self, objective: SDFTObjective, pool: list[EncodedExample], opening: list[int], cfg, pad_id: int):
        self.objective, self.pool, self.opening, self.cfg, self.pad_id = objective, pool, opening, cfg, pad_id
        self.teacher: dict[int, float] = {}
        self.order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg.seed * 7919 + 3)).tolist()
        self.history: list[dict] = []
        self.chosen: dict[int, int] = {}

    def _teacher_p(self, rows: list[int]) -> None:
        obj = self.objective
        missing = [i for i in rows if i not in self.teacher]
        for by_origin in (False, True):
            part = [i for i in missing if (obj.origin is not None and self.pool[i].teacher == "origin") == by_origin]
            if not part:
                continue
            prompts = [self.pool[i].teacher_prompt_ids for i in part]
            head = obj.model.get_output_embeddings()
            # the teachers' prefix keys/values the KL pass keeps for the run (they never change)
            if by_origin:
                got = opening_logprob(obj.origin, prompts, self.opening, self.pad_id, self.cfg.min_shared_prefix, head,
                                      memo=obj.frozen_prefixes[True])
            else:
                with obj._eval_mode(), teacher_context(obj.model, "base"):
                    got = opening_logprob(obj.model, prompts, self.opening, self.pad_id, self.cfg.min_shared_prefix,
                                          memo=obj.frozen_prefixes[False])
            self.teacher.update({i: math.exp(v) for i, v in zip(part, got, strict=True)})

    def candidates(self, step: int, rank: int = 0, world: int = 1) -> list[int]:
        n = min(self.cfg.retention_focus_candidates, len(self.pool))
        start = (step * world + rank) * n
        return list(dict.fromkeys(self.order[(start + i) % len(self.pool)] for i in range(n)))

    def batch(self, step: int, seeded: list[int], rank: int = 0, world: int = 1) -> list[int]:
        """The step's retention prompts: the focus's top ones, then `seeded` (without repeats).
        The teacher is scored only for the candidates the student is likeliest to call on (twice
        the focus's count; cached, it never changes): a prompt the student seldom calls on cannot
        exceed its teacher by much, and each score is a forward of the prompt."""
        k = self.cfg.retention_focus
        rows = self.candidates(step, rank, world)
        obj = self.objective
        with obj._eval_mode():
            student = opening_logprob(obj.model, [self.pool[i].prompt_ids for i in rows], self.opening, self.pad_id,
                                      self.cfg.min_shared_prefix)
        p_student = {i: math.exp(v) for i, v in zip(rows, student, strict=True)}
        likely = sorted(rows, key=lambda i: -p_student[i])[:2 * k]
        self._teacher_p(likely)
        excess = {i: p_student[i] - self.teacher[i] for i in likely}
        top = sorted(likely, key=lambda i: -excess[i])[:k]
        for i in top:
            self.chosen[i] = self.chosen.get(i, 0) + 1
        self.history.append({"step": step, "max": max(excess.values()), "chosen_min": excess[top[-1]],
                             "student_mean": sum(p_student.values()) / len(rows)})
        rest = [i for i in seeded if i not in top]
        return (top + rest)[:self.cfg.retention_batch]
