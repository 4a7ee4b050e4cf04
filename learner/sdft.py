"""Self-Distillation Fine-Tuning (docs/ARCHITECTURE.md, "SDFT"): what SDFT adds to the shared
training step.

Per prompt, one on-policy rollout from the current student (temperature 1.0, top_p 1.0). The
teacher — the same base weights, as the EMA adapter, with adapters disabled, or the live
student — reads its own prompt (the demonstration in context) followed by the same completion
tokens, under no_grad. The loss at each trained completion position is the full-vocabulary
divergence between the teacher's and the student's next-token distributions.

Options (LearnConfig): a forced tool-call opening for tool-call demonstrations (never trained on;
the masked leading tokens are counted after it), a fraction λ of rollouts sampled from the
teacher on its own prompt, the number of masked leading tokens.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from agent.decode import decode, shared_prefix_len
from learner.batch import completion_hidden, frozen_prefix, pack, rollout_groups
from learner.divergence import token_divergence
from learner.examples import EncodedExample
from learner.lora import (
    STUDENT,
    TEACHER,
    adapter_pairs,
    ema_update,
    merged_adapter,
    teacher_context,
)


@dataclass
class Targets:
    """What a micro-batch trains toward: completion tokens per row and where its loss starts."""

    completions: list[list[int]]
    starts: list[int]  # first trained completion index per row
    teacher_hidden: torch.Tensor | None = None  # [B, C, H], SDFT only
    completion_ids: torch.Tensor | None = None  # [B, C] once packed (set by the training step)
    stats: dict = field(default_factory=dict)

    def select(self, rows: list[int]) -> Targets:
        """The targets of some rows (before the teacher pass and packing)."""
        return Targets([self.completions[i] for i in rows], [self.starts[i] for i in rows])


class SDFTObjective:
    name = "sdft"

    def __init__(self, peft_model, cfg, stop_ids: set[int], pad_id: int, origin=None):
        self.model = peft_model  # unwrapped: rollouts and the teacher pass need no DDP sync
        # a frozen model that teaches the rows marked teacher="origin" (retention with the base as
        # teacher); its hidden states go through the student's head, which LoRA never touches
        self.origin = origin
        if origin is not None and not torch.equal(origin.get_output_embeddings().weight,
                                                  peft_model.get_output_embeddings().weight):
            raise ValueError("the retention teacher's output head differs from the student's: its hidden "
                             "states cannot be read through the student's head (LoRA must not target lm_head)")
        self.cfg = cfg
        self.stop_ids = stop_ids
        self.pad_id = pad_id
        self.pairs = adapter_pairs(peft_model) if cfg.teacher == "ema" else []
        # prefix keys/values of teachers whose weights never change during the run (the adapter
        # switched off, the origin), by prefix: computed once per run, not once per step
        self.frozen_prefixes: dict[bool, dict] = {True: {}, False: {} if cfg.teacher == "base" else None}

    def rollouts(self, batch: list[EncodedExample], generator: torch.Generator | None,
                 prefixes: dict | None = None) -> tuple[list[list[int]], list[bool]]:
        """One completion per example (forced opening included); which rows came from the teacher.
        Decoded one prefix group at a time (learner.batch.rollout_groups): one call when the
        batch shares its prompt prefix, as a single skill's batch does. `prefixes`: a dict that
        receives each student group's shared-prefix keys/values (learner.batch.frozen_prefix),
        for a training pass that takes no gradient through them to read instead of running the
        prefix again."""
        cfg = self.cfg
        n = len(batch)
        if cfg.teacher_rollout_fraction > 0:
            u = torch.rand(n, generator=generator, device=generator.device if generator else "cpu")
            from_teacher = (u < cfg.teacher_rollout_fraction).tolist()
        else:
            from_teacher = [False] * n
        completions: list[list[int]] = [[] for _ in range(n)]
        for teacher_rows in (False, True):
            rows = [i for i in range(n) if from_teacher[i] == teacher_rows]
            if not rows:
                continue
            prompts = [batch[i].teacher_prompt_ids if teacher_rows else batch[i].prompt_ids for i in rows]
            with self._sampling_weights(teacher_rows):
                for group in rollout_groups(prompts, cfg.min_shared_prefix):
                    shared = None
                    if prefixes is not None and not teacher_rows and cfg.min_shared_prefix is not None:
                        contexts = [prompts[j] + batch[rows[j]].forced_ids for j in group]
                        K = shared_prefix_len(contexts, cfg.min_shared_prefix)
                        if K:
                            key = tuple(contexts[0][:K])
                            if key not in prefixes:
                                prefixes[key] = frozen_prefix(self.model, list(key))
                            shared = (K, prefixes[key])
                    got = decode(
                        self.model,
                        [prompts[j] for j in group],
                        forced=[batch[rows[j]].forced_ids for j in group],
                        max_new_tokens=cfg.max_new_tokens,
                        stop_ids=self.stop_ids,
                        pad_id=self.pad_id,
                        temperature=cfg.temperature,
                        top_p=cfg.top_p,
                        generator=generator,
                        min_shared_prefix=cfg.min_shared_prefix,
                        prefix=shared,
                    )
                    for j, c in zip(group, got, strict=True):
                        completions[rows[j]] = c
        return completions, from_teacher

    @contextlib.contextmanager
    def _eval_mode(self):
        """Rollouts and the teacher pass run in eval mode; the training mode comes back after."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _sampling_weights(self, teacher_rows: bool):
        """The weights rollouts are sampled from: the student, or the teacher for its λ share;
        adapters merged into the base for the duration (LearnConfig.merged_rollouts)."""
        kind = self.cfg.teacher if teacher_rows else "live"
        if not self.cfg.merged_rollouts:
            return teacher_context(self.model, kind)
        if kind == "base":
            return teacher_context(self.model, "base")
        return merged_adapter(self.model, TEACHER if kind == "ema" else STUDENT)

    def targets(self, batch: list[EncodedExample], generator: torch.Generator | None = None,
                teacher: bool = True, prefixes: dict | None = None) -> Targets:
        """Rollouts for the batch, and (unless `teacher=False`: the training step runs the
        teacher group by group, `add_teacher`) the teacher's hidden states on them.
        `prefixes`: see `rollouts`."""
        with self._eval_mode():
            completions, from_teacher = self.rollouts(batch, generator, prefixes)
        starts = [len(e.forced_ids) + self.cfg.skip_first for e in batch]
        targets = Targets(completions, starts, stats={"teacher_rollouts": sum(from_teacher)})
        if teacher:
            self.add_teacher(batch, targets)
        return targets

    def add_teacher(self, batch: list[EncodedExample], targets: Targets) -> None:
        """The teacher's final hidden states at the completion positions (its own prompt, the
        same completion tokens), under no_grad."""
        # rows taught by the origin (when there is one) and by the teacher of cfg.teacher: one pass
        # each, stitched into the [B, C, H] the loss reads (positions past a row's completion are
        # masked there); a batch with one teacher is one pass, used as it is
        origin = [self.origin is not None and e.teacher == "origin" for e in batch]
        parts = [(flag, [i for i, o in enumerate(origin) if o == flag]) for flag in (False, True)]
        parts = [(flag, rows) for flag, rows in parts if rows]
        C = max(1, max(len(c) for c in targets.completions))
        hidden = None
        for by_origin, rows in parts:
            teacher = pack([batch[i].teacher_prompt_ids for i in rows], [targets.completions[i] for i in rows],
                           self.pad_id, self.model.device, self.cfg.min_shared_prefix)
            with torch.no_grad():
                if by_origin:
                    h = completion_hidden(self.origin, teacher, self.frozen_prefixes[True])
                else:
                    with self._eval_mode(), teacher_context(self.model, self.cfg.teacher):
                        h = completion_hidden(self.model, teacher, self.frozen_prefixes[False])
            if len(parts) == 1:
                hidden = h
            else:
                if hidden is None:
                    hidden = h.new_zeros((len(batch), C, h.shape[-1]))
                hidden[rows, :h.shape[1]] = h
        targets.teacher_hidden = hidden

    def token_loss(self, student_logits: torch.Tensor, sl: slice, targets: Targets, head) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = head(targets.teacher_hidden[:, sl])
        return token_divergence(student_logits, teacher_logits, self.cfg.divergence, self.cfg.jsd_alpha)

    def after_step(self) -> None:
        if self.cfg.teacher == "ema":
            ema_update(self.model, self.cfg.ema_alpha, self.pairs)
