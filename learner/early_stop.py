"""No memorising: hold out a slice of the new demonstrations, watch their loss, stop when it
stops falling, and end with the adapter of the best held-out loss.

Wave 1 trained 40 demonstrations to a train cross-entropy of 0.016 and broke plain answers; the
right number of steps is where held-out demonstrations stop getting more likely, not a fixed
budget. The held-out slice comes from the run's new demonstrations only (never replayed ones,
never the gate's eval cases, which are not demonstrations at all).
"""

from __future__ import annotations

import math
import random

import torch

from learner.batch import completion_hidden, pack
from learner.divergence import token_cross_entropy


def split_holdout(examples: list, fraction: float, seed: int = 0) -> tuple[list, list]:
    """(train, held out): a seeded `fraction` of `examples`, at least one when the fraction is
    positive and at least two examples exist (so something is always trained on), order kept."""
    n = len(examples)
    if fraction <= 0 or n < 2:
        return list(examples), []
    k = min(n - 1, max(1, round(fraction * n)))
    held = set(random.Random(seed * 7 + 3).sample(range(n), k))
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


class EarlyStopper:
    """Stop after `patience` evaluations in a row that did not beat the best loss by more than
    `min_delta`. `update` returns True when training should stop."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.best_step: int | None = None
        self.bad = 0
        self.stopped_at: int | None = None

    def update(self, step: int, loss: float) -> bool:
        if loss < self.best - self.min_delta:
            self.best, self.best_step, self.bad = loss, step, 0
            return False
        self.bad += 1
        if self.bad >= self.patience:
            self.stopped_at = step
            return True
        return False

    @property
    def improved_last(self) -> bool:
        return self.bad == 0


@torch.no_grad()
def mean_cross_entropy(model, encoded: list, pad_id: int, batch_size: int = 4,
                       min_shared_prefix: int | None = None, chunk_size: int = 16) -> float:
    """Mean over examples of the per-token cross-entropy of each demonstration (teacher-forced,
    eval mode): the held-out loss, and the final train loss on the trained examples."""
    if not encoded:
        return float("nan")
    was = model.training
    model.eval()
    head = model.get_output_embeddings()
    total = 0.0
    try:
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i:i + batch_size]
            packed = pack([e.prompt_ids for e in chunk], [list(e.completion_ids) for e in chunk], pad_id,
                          model.device, min_shared_prefix)
            hidden = completion_hidden(model, packed)
            sums = torch.zeros(len(chunk), dtype=torch.float64, device=hidden.device)
            for start in range(0, hidden.shape[1], chunk_size):
                sl = slice(start, start + chunk_size)
                ce = token_cross_entropy(head(hidden[:, sl]), packed.completion_ids[:, sl])
                sums += (ce * packed.completion_mask[:, sl]).sum(-1).double()
            total += (sums / packed.completion_mask.sum(-1).clamp(min=1)).sum().item()
    finally:
        model.train(was)
    return total / len(encoded)
