"""The SFT baseline: the same examples, LoRA, optimiser and training step as SDFT; only the
targets and the loss differ. The target is the demonstration's completion tokens (through the
end-of-turn token), the loss cross-entropy on every one of them (no masked leading tokens: the
first-tokens mask is part of SDFT's method, against copying teacher phrasing)."""

from __future__ import annotations

import torch

from learner.divergence import token_cross_entropy
from learner.examples import EncodedExample
from learner.sdft import Targets


class SFTObjective:
    name = "sft"

    def __init__(self, peft_model, cfg, stop_ids: set[int], pad_id: int):
        self.model = peft_model
        self.cfg = cfg
        self.pad_id = pad_id

    def targets(self, batch: list[EncodedExample], generator: torch.Generator | None = None,
                teacher: bool = True, prefixes: dict | None = None) -> Targets:
        return Targets([list(e.completion_ids) for e in batch], [0] * len(batch))

    def add_teacher(self, batch: list[EncodedExample], targets: Targets) -> None:
        pass  # no teacher

    def token_loss(self, student_logits: torch.Tensor, sl: slice, targets: Targets, head) -> torch.Tensor:
        return token_cross_entropy(student_logits, targets.completion_ids[:, sl])

    def after_step(self) -> None:
        pass
