"""Packing (prompt, completion) pairs into one batch, and reading the model's last hidden states
at the positions that predict completion tokens.

Layout, every row:  [shared prefix] [rest of prompt | completion | right padding]

Rows are right-padded only, so no query position is left with nothing to attend to and no
padding sits between the shared prefix and a row; the hidden states predicting each row's
completion are gathered from where that row's completion starts. (Sampling left-pads as usual.)

The shared prefix is the longest run of tokens every prompt of the batch starts with — for one
skill, the system message with all its tool schemas, most of a prompt. It is run once (batch 1)
and its keys/values are repeated for every row, so the batch's prompt compute and activation
memory fall from B × prompt to prefix + B × (prompt − prefix). Gradients flow through the shared
pass as through any other (repeat is differentiable). Below `MIN_SHARED_PREFIX` tokens, or for a
batch of one, there is no shared part and each row is run whole. Position ids count real
tokens, so every row sees the positions of its unpadded sequence.
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from agent.decode import MIN_SHARED_PREFIX, cache_kwarg, positions, prefill, shared_prefix_len


@dataclass
class Packed:
    input_ids: torch.Tensor  # [B, W]: each row after the shared prefix, right-padded
    attention_mask: torch.Tensor  # [B, K + W]: shared prefix included
    position_ids: torch.Tensor  # [B, W]
    predictor_index: torch.Tensor  # [B, C]: column in input_ids whose output predicts completion token j
    completion_len: int  # C (padded)
    completion_ids: torch.Tensor  # [B, C], padding = pad id
    completion_mask: torch.Tensor  # [B, C] bool, real completion tokens
    prefix_ids: list[int] = field(default_factory=list)  # K shared leading prompt tokens


def prefix_groups(prompts: list[list[int]], minimum: int | None = MIN_SHARED_PREFIX) -> list[list[int]]:
    """Rows of a batch split into groups that share most of their prompt, to be run one group at
    a time: a batch mixing skills shares only a generic header, so run whole it would pay for
    every row's own tool schemas at once (compute and activation memory); group by group, each
    schema is run once and the peak is the largest group's.

    Rows sorted by their tokens sit next to those they share most with; a group ends where two
    neighbours share fewer than half of the shorter prompt (or fewer than `minimum` tokens).
    One group (all rows, in order) when prefix sharing is off or everything shares."""
    rows = list(range(len(prompts)))
    if minimum is None or len(rows) < 2:
        return [rows]
    order = sorted(rows, key=lambda i: prompts[i])
    groups = [[order[0]]]
    for a, b in zip(order, order[1:], strict=False):
        shared = len(os.path.commonprefix([prompts[a], prompts[b]]))
        if shared >= max(minimum, min(len(prompts[a]), len(prompts[b])) // 2):
            groups[-1].append(b)
        else:
            groups.append([b])
    return sorted(sorted(g) for g in groups)


def rollout_groups(prompts: list[list[int]], minimum: int | None = MIN_SHARED_PREFIX) -> list[list[int]]:
    """`prefix_groups` for sampling, one decode call per group so each prefills its shared prefix
    once (a batch mixing system prompts, e.g. retention prompts with and without tools, shares
    none when decoded whole). Rows that share with no other row are decoded together, last: there
    is nothing to share either way, and one call costs fewer decode steps than one per row."""
    groups = prefix_groups(prompts, minimum)
    if len(groups) == 1:
        return groups
    alone = sorted(g[0] for g in groups if len(g) == 1)
    return [g for g in groups if len(g) > 1] + ([alone] if alone else [])


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int,
         device: torch.device | str = "cpu", min_shared_prefix: int | None = MIN_SHARED_PREFIX) -> Packed:
    """`min_shared_prefix=None` turns prefix sharing off."""
    if len(prompts) != len(completions):
        raise ValueError("one completion per prompt")
    K = 0 if min_shared_prefix is None else shared_prefix_len(prompts, min_shared_prefix)
    prefix, rest = prompts[0][:K], [p[K:] for p in prompts]
    B = len(prompts)
    C = max(1, max(len(c) for c in completions))
    W = max(len(p) + len(c) for p, c in zip(rest, completions, strict=True))
    ids = torch.full((B, W), pad_id, dtype=torch.long)
    mask = torch.zeros((B, K + W), dtype=torch.long)
    mask[:, :K] = 1
    completion_ids = torch.full((B, C), pad_id, dtype=torch.long)
    completion_mask = torch.zeros((B, C), dtype=torch.bool)
    index = torch.zeros((B, C), dtype=torch.long)
    for i, (p, c) in enumerate(zip(rest, completions, strict=True)):
        row = p + c
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, K:K + len(row)] = 1
        completion_ids[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        completion_mask[i, :len(c)] = True
        index[i] = (len(p) - 1 + torch.arange(C)).clamp(max=W - 1)
    mask = mask.to(device)
    return Packed(ids.to(device), mask, positions(mask)[:, K:], index.to(device), C,
                  completion_ids.to(device), completion_mask.to(device), list(prefix))


def trained_mask(completion_mask: torch.Tensor, starts: list[int]) -> torch.Tensor:
    """Completion positions that carry loss: real tokens at index ≥ start (per row)."""
    idx = torch.arange(completion_mask.shape[1], device=completion_mask.device)
    start = torch.tensor(starts, device=completion_mask.device).unsqueeze(1)
    return completion_mask & (idx.unsqueeze(0) >= start)


MEMO_PREFIXES = 4  # prefixes a `prefix_cache` memo keeps (a served system prompt: ~120 MB at 135M)


class PrefixCache(DynamicCache):
    """A shared prefix's keys/values. While `frozen`, every call reads it and none extends it:
    `update` returns prefix + the new keys/values without storing them, so a layer that gradient
    checkpointing re-runs in the backward pass sees exactly the cache its first run saw."""

    frozen = False

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if not self.frozen:
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        layer = self.layers[layer_idx]
        return torch.cat([layer.keys, key_states], dim=-2), torch.cat([layer.values, value_states], dim=-2)


def prefix_cache(model, prefix: list[int], rows: int, memo: dict | None = None, grad: bool = True) -> PrefixCache:
    """Keys/values of `prefix`, computed once (differentiably), repeated for `rows` rows, then
    frozen: the training pass reads it without extending it.

    `memo`: a dict kept by the caller for a model whose weights do not change between calls (a
    frozen teacher): a prefix met before is copied from it instead of being run again — a
    run's retention prompts share one long served system prompt, every step. `grad=False`: the
    prefix is run without a graph, so no gradient flows through its keys/values (the rows still
    get theirs): the cheap form of a step whose shared prefix is most of the compute."""
    key = tuple(prefix)
    if memo is not None and key in memo:
        cache = copy.deepcopy(memo[key])
    else:
        inner = getattr(model, "module", model)  # the config lives on the unwrapped model
        cache = PrefixCache(config=inner.config)
        with _checkpointing_paused(model), torch.no_grad() if not grad else contextlib.nullcontext():
            prefill(model, prefix, cache)  # not re-run in backward (checkpointing paused): its cache grows
        if memo is not None:
            while len(memo) >= MEMO_PREFIXES:  # the oldest goes (dicts keep insertion order)
                memo.pop(next(iter(memo)))
            memo[key] = copy.deepcopy(cache)
    cache.batch_repeat_interleave(rows)
    cache.frozen = True
    return cache


@torch.no_grad()
def frozen_prefix(model, prefix: list[int]) -> PrefixCache:
    """A prefix's keys/values (batch 1) without a graph, in the form a `prefix_cache` memo keeps
    and `agent.decode.decode(prefix=…)` reads: the rollouts' prefill, handed on to a training
    pass that takes no gradient through the prefix."""
    inner = getattr(model, "module", model)
    return prefill(model, prefix, PrefixCache(config=inner.config))


def _checkpointed_layers(model) -> list:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]


@contextlib.contextmanager
def _checkpointing_paused(model):
    layers = _checkpointed_layers(model)
    for m in layers:
        m.gradient_checkpointing = False
    try:
        yield
    finally:
        for m in layers:
            m.gradient_checkpointing = True


@contextlib.contextmanager
def _checkpointing_with_cache(model):
    """transformers drops the cache of a checkpointed layer (a growing cache would be extended
    twice by the backward re-run); a frozen PrefixCache is safe to keep."""
    layers = _checkpointed_layers(model)
    for m in layers:
        m._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for m in layers:
            del m._can_checkpoint_with_cache  # back to the class's False


def completion_hidden(model, packed: Packed, memo: dict | None = None, prefix_grad: bool = True) -> torch.Tensor:
    """[B, C, H] final hidden states at the positions whose next-token distributions are the
    completion tokens' (the head is applied later, in chunks). Works with gradient checkpointing
    on (the shared prefix's activations are then kept, the rows' recomputed). `memo`, and
    `prefix_grad` (`grad` there): see `prefix_cache`."""
    extra = {}
    if packed.prefix_ids:
        extra = {cache_kwarg(model): prefix_cache(model, packed.prefix_ids, packed.input_ids.shape[0], memo,
                                                     prefix_grad)}
    with _checkpointing_with_cache(model) if extra else contextlib.nullcontext():
        out = model(
            input_ids=packed.input_ids,
            attention_mask=packed.attention_mask,
            position_ids=packed.position_ids,
            use_cache=False,  # a given cache is read all the same; nothing new is kept
            output_hidden_states=True,
            logits_to_keep=1,  # the head runs later, on completion positions only, in chunks
            **extra,
        )
    hidden = out.hidden_states[-1]
    index = packed.predictor_index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index)
