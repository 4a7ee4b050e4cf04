"""Batched sampling for rollouts: left-padded prompts, a KV cache, stop at end of turn.

A hand-written loop rather than `generate()`, for two reasons: the distribution sampled is
exactly softmax(logits / T) with nucleus `top_p` (no generation-config defaults such as
top_k = 50 or a repetition penalty slipping in), and a row that has finished is dropped from
the batch and its cache, so no compute is spent generating past its end of turn.

An optional forced opening per row (e.g. "<tool_call>") is prefilled with the prompt; it is part
of the returned completion.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from learner.batch import MIN_SHARED_PREFIX, cache_kwarg, positions, prefix_cache, shared_prefix_len


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
    min_shared_prefix: int | None = MIN_SHARED_PREFIX,
) -> list[list[int]]:
    """One completion per prompt: forced opening + sampled tokens, through the first stop token
    (included) or until the completion is `max_new_tokens` long. The prompts' shared prefix is
    prefilled once (learner.batch)."""
    B = len(prompts)
    forced = forced or [[] for _ in range(B)]
    out = [list(f) for f in forced]
    budget = [max_new_tokens - len(f) for f in forced]
    stop = torch.tensor(sorted(set(stop_ids)), device=model.device)
    device = model.device

    rows = [i for i in range(B) if budget[i] > 0]
    if not rows:
        return out
    active = torch.tensor(rows, device=device, dtype=torch.long)
    contexts = [prompts[i] + forced[i] for i in rows]
    K = 0 if min_shared_prefix is None else shared_prefix_len(contexts, min_shared_prefix)
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
    if K:
        cache = prefix_cache(model, contexts[0][:K], len(rows), model.config, device)
    else:
        cache = DynamicCache(config=model.config)
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
