"""Batched decoding with a KV cache: the one loop behind training rollouts (sampled) and
evaluation (greedy).

A hand-written loop rather than `generate()`, for three reasons:
- the distribution sampled is exactly softmax(logits / T) with nucleus `top_p` (no generation
  config defaults such as top_k = 50 or a repetition penalty slipping in);
- a shared prompt prefix (the system message with every tool schema: ~300 of a skill prompt's
  ~360 tokens) is prefilled once, batch 1, and its cache repeated for each row;
- a row that has finished leaves the batch and its cache, so no compute is spent past its end
  of turn.

Layout: [shared prefix][left padding][own tokens + forced opening]; padding is masked out and
position ids count real tokens, so every row computes what it would alone.
"""

from __future__ import annotations

import copy
import inspect
import os

import torch
from transformers import DynamicCache

MIN_SHARED_PREFIX = 32  # below this, sharing saves less than the extra pass costs


def cache_kwarg(model) -> str:
    """transformers 5 names the cache argument `cache` in some releases, `past_key_values` in
    others; ask the model (through DDP and PEFT wrappers)."""
    model = getattr(model, "module", model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def common_prefix(prompts: list[list[int]]) -> int:
    """Length of the longest prefix every prompt shares, leaving each at least one own token."""
    if not prompts:
        return 0
    return max(min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1), 0)


def shared_prefix_len(prompts: list[list[int]], minimum: int = MIN_SHARED_PREFIX) -> int:
    """`common_prefix`, but 0 when shorter than `minimum` or for a single prompt (nothing to
    share it with)."""
    if len(prompts) < 2:
        return 0
    k = common_prefix(prompts)
    return k if k >= minimum else 0


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def prefill(model, ids: list[int], cache: DynamicCache | None = None) -> DynamicCache:
    """The cache of one sequence (batch 1)."""
    inner = getattr(model, "module", model)
    cache = cache if cache is not None else DynamicCache(config=inner.config)
    device = inner.device
    model(input_ids=torch.tensor([ids], device=device),
          position_ids=torch.arange(len(ids), device=device).unsqueeze(0),
          use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cache})
    return cache


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
def decode(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    stop_ids: set[int] | list[int],
    pad_id: int = 0,
    forced: list[list[int]] | None = None,
    temperature: float,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    min_shared_prefix: int | None = MIN_SHARED_PREFIX,
    prefix: tuple[int, DynamicCache] | None = None,
) -> list[list[int]]:
    """One completion per prompt: forced opening + new tokens, through the first stop token
    (included) or until the completion is `max_new_tokens` long.

    `prefix=(K, cache)`: the cache of the prompts' common first K tokens, computed by the caller
    once for many calls (it is copied, not changed); else the prompts' shared prefix (at least
    `min_shared_prefix` tokens; None: no sharing) is prefilled here."""
    B = len(prompts)
    forced = forced or [[] for _ in range(B)]
    out = [list(f) for f in forced]
    budget = [max_new_tokens - len(f) for f in forced]
    inner = getattr(model, "module", model)
    device = inner.device
    stop = torch.tensor(sorted(set(stop_ids)) or [-1], device=device)

    rows = [i for i in range(B) if budget[i] > 0]
    if not rows:
        return out
    active = torch.tensor(rows, device=device, dtype=torch.long)
    contexts = [prompts[i] + forced[i] for i in rows]
    if prefix is not None:
        K, cache = prefix[0], copy.deepcopy(prefix[1])
        if K and len(rows) > 1:
            cache.batch_repeat_interleave(len(rows))
    else:
        K = 0 if min_shared_prefix is None else shared_prefix_len(contexts, min_shared_prefix)
        cache = DynamicCache(config=inner.config)
        if K:
            prefill(model, contexts[0][:K], cache)
            cache.batch_repeat_interleave(len(rows))
    L = max(len(c) for c in contexts) - K
    ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), K + L), dtype=torch.long)
    mask[:, :K] = 1
    for j, c in enumerate(contexts):
        ids[j, L - len(c) + K:] = torch.tensor(c[K:], dtype=torch.long)
        mask[j, K + L - len(c) + K:] = 1
    ids, mask = ids.to(device), mask.to(device)
    step_pos = positions(mask)[:, K:]

    kw = cache_kwarg(model)
    step_ids = ids
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
