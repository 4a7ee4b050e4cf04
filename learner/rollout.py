"""Batched sampling for rollouts: left-padded prompts, a KV cache, stop at end of turn.

A hand-written loop rather than `generate()`, for two reasons: the distribution sampled is
exactly softmax(logits / T) with nucleus `top_p` (no generation-config defaults such as
top_k = 50 or a repetition penalty slipping in), and a row that has finished is dropped from
the batch and its cache, so no compute is spent generating past its end of turn.

An optional forced opening per row (e.g. "<tool_call>") is prefilled with the prompt; it is part
of the returned completion.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

from learner.batch import positions


def _cache_kwarg(model) -> str:
    """transformers ≥ 5.? names the cache argument `cache`; earlier 5.x `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, V] logits → [B] token ids (greedy when temperature is 0)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # smallest set whose mass reaches top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    stop_ids: set[int] | list[int],
    pad_id: int,
    forced: list[list[int]] | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """One completion per prompt: forced opening + sampled tokens, through the first stop token
    (included) or until the completion is `max_new_tokens` long."""
    B = len(prompts)
    forced = forced or [[] for _ in range(B)]
    out = [list(f) for f in forced]
    budget = [max_new_tokens - len(f) for f in forced]
    stop = torch.tensor(sorted(set(stop_ids)), device=model.device)
    device = model.device

    contexts = [p + f for p, f in zip(prompts, forced, strict=True)]
    L = max(len(c) for c in contexts)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for i, c in enumerate(contexts):
        ids[i, L - len(c):] = torch.tensor(c, dtype=torch.long)
        mask[i, L - len(c):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = positions(mask)
    active = torch.tensor([i for i in range(B) if budget[i] > 0], device=device, dtype=torch.long)
    if len(active) == 0:
        return out
    if len(active) < B:
        ids, mask, pos = ids[active], mask[active], pos[active]

    cache = DynamicCache(config=model.config)
    kw = _cache_kwarg(model)
    step_ids, step_pos = ids, pos
    while True:
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                       use_cache=True, logits_to_keep=1, **{kw: cache}).logits[:, -1]
        tokens = sample_next(logits, temperature, top_p, generator)
        done = torch.isin(tokens, stop)
        for j, (row, tok) in enumerate(zip(active.tolist(), tokens.tolist(), strict=True)):
            out[row].append(tok)
            if len(out[row]) - len(forced[row]) >= budget[row]:
                done[j] = True
        if done.all():
            return out
        if done.any():  # drop finished rows from the batch and the cache
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            active, tokens, mask, step_pos = active[keep], tokens[keep], mask[keep], step_pos[keep]
        step_ids = tokens.unsqueeze(-1)
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
