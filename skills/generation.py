"""Batched greedy generation for evaluation: a shared prompt prefix computed once, stop at end of
turn, finished rows dropped.

Evaluation generates for tens to hundreds of prompts that mostly share their opening: the system
message with every tool schema is ~300 of a skill prompt's ~360 tokens. Prefill is then most of
the cost, so the common prefix runs once (batch 1), its KV cache is repeated for each batch, and
only the rest of each prompt is prefilled. A batch is laid out [prefix][padding][own tokens],
padding masked out and positions continuing the prefix's, so each row computes what it would
alone. Prompts are sorted by length, so a batch holds similar lengths; results come back in the
caller's order. Greedy makes a run reproducible, which a paired comparison of two models needs.

A hand-written loop rather than `generate()`: the shared prefix cache, and a row that has
finished leaves the batch and its cache, so no compute is spent past its end of turn.
"""

from __future__ import annotations

import copy
import inspect

import torch
from transformers import DynamicCache

from agent.prompt import PromptFormat


def cache_kwarg(model) -> str:
    """transformers 5 names the cache argument `cache` in some releases, `past_key_values` in
    others; ask the model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def common_prefix(prompts: list[list[int]]) -> int:
    """Length of the longest prefix every prompt shares, leaving each at least one own token."""
    if not prompts:
        return 0
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


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
    kw = cache_kwarg(model)
    n_prefix = common_prefix(prompts)
    prefix_cache = DynamicCache(config=model.config)
    if n_prefix:
        model(input_ids=torch.tensor([prompts[0][:n_prefix]], device=model.device), use_cache=True,
              logits_to_keep=1, **{kw: prefix_cache})
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        rows = _greedy(model, kw, prefix_cache, n_prefix, [prompts[i][n_prefix:] for i in idx],
                       max_new_tokens, fmt.end_of_turn_id)
        for i, row in zip(idx, rows, strict=True):
            out[i] = row
    return out


def _greedy(model, kw: str, prefix_cache, n_prefix: int, suffixes: list[list[int]],
            max_new_tokens: int, stop_id: int) -> list[list[int]]:
    B, dev = len(suffixes), model.device
    width = max(len(s) for s in suffixes)
    ids = torch.zeros((B, width), dtype=torch.long)
    mask = torch.zeros((B, n_prefix + width), dtype=torch.long)
    mask[:, :n_prefix] = 1
    pos = torch.full((B, width), n_prefix, dtype=torch.long)
    for r, s in enumerate(suffixes):
        ids[r, width - len(s):] = torch.tensor(s)
        mask[r, n_prefix + width - len(s):] = 1
        pos[r, width - len(s):] = torch.arange(n_prefix, n_prefix + len(s))
    ids, mask, pos = ids.to(dev), mask.to(dev), pos.to(dev)
    cache = copy.deepcopy(prefix_cache)
    if n_prefix and B > 1:
        cache.batch_repeat_interleave(B)
    out: list[list[int]] = [[] for _ in suffixes]
    active = torch.arange(B, device=dev)
    step_ids, step_pos = ids, pos
    while max_new_tokens > 0:
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos, use_cache=True,
                       logits_to_keep=1, **{kw: cache}).logits[:, -1]
        tokens = logits.argmax(-1)
        done = tokens == stop_id
        for j, (row, tok) in enumerate(zip(active.tolist(), tokens.tolist(), strict=True)):
            if tok != stop_id:
                out[row].append(tok)
            if len(out[row]) >= max_new_tokens:
                done[j] = True
        if done.all():
            break
        if done.any():  # finished rows leave the batch and the cache
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            active, tokens, mask, step_pos = active[keep], tokens[keep], mask[keep], step_pos[keep]
        step_ids = tokens.unsqueeze(-1)
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
    return out


def generate_texts(model, fmt: PromptFormat, prompts: list[list[int]], **kwargs) -> list[str]:
    """generate_batch, decoded (special tokens dropped)."""
    return [fmt.tokenizer.decode(ids, skip_special_tokens=True) for ids in generate_batch(model, fmt, prompts, **kwargs)]
