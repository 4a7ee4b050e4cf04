"""Batched greedy generation for evaluation: a shared prompt prefix computed once, stop at end of
turn, finished rows dropped.

Evaluation generates for tens to hundreds of prompts that mostly share their opening: the system
message with every tool schema is ~300 of a skill prompt's ~360 tokens. Prefill is then most of
the cost, so the common prefix runs once (batch 1), its KV cache is repeated for each batch, and
only the rest of each prompt is prefilled. A batch is laid out [prefix][padding][own tokens],
padding masked out and positions continuing the prefix's, so each row computes what it would
alone. Prompts are sorted by length, so a batch holds similar lengths; results come back in the
caller's order. Greedy makes a run reproducible, which a paired comparison of two models needs.

The loop itself is agent.decode's, shared with training rollouts.
"""

from __future__ import annotations

import torch

from agent.decode import common_prefix, decode, prefill
from agent.prompt import PromptFormat


@torch.inference_mode()
def generate_batch(
    model,
    fmt: PromptFormat,
    prompts: list[list[int]],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> list[list[int]]:
    """New token ids for each prompt, greedy, up to (without) the end-of-turn token."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        return []
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 1:
        return [[] for _ in prompts]
    k = common_prefix(prompts)
    prefix = (k, prefill(model, prompts[0][:k])) if k else None  # once, for every batch
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    stop = fmt.end_of_turn_id
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        rows = decode(model, [prompts[i] for i in idx], max_new_tokens=max_new_tokens, stop_ids={stop},
                      temperature=0.0, prefix=prefix, min_shared_prefix=None)
        for i, row in zip(idx, rows, strict=True):
            out[i] = row[:-1] if row and row[-1] == stop else row
    return out


def generate_texts(model, fmt: PromptFormat, prompts: list[list[int]], **kwargs) -> list[str]:
    """generate_batch, decoded (special tokens dropped)."""
    return [fmt.tokenizer.decode(ids, skip_special_tokens=True) for ids in generate_batch(model, fmt, prompts, **kwargs)]
