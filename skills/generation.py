"""Batched greedy generation for evaluation: left-padded prompts, stop at end of turn.

Evaluation generates for tens to hundreds of prompts, so batching is where its time goes
(77 tok/s at batch 8 against 14.6 at batch 1 for SmolLM2-135M on this CPU). Prompts are sorted
by length before batching, so a batch holds prompts of similar length and little padding, and
the results come back in the caller's order. Greedy decoding makes a run reproducible, which a
paired comparison of two models needs.
"""

from __future__ import annotations

import torch

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
    """New token ids for each prompt, greedy, without the end-of-turn token and padding."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pad = fmt.tokenizer.pad_token_id
    if pad is None:
        pad = fmt.end_of_turn_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(prompts[i])
            ids[row, width - n:] = torch.tensor(prompts[i], dtype=torch.long)
            mask[row, width - n:] = 1
        gen = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=fmt.end_of_turn_id,
            pad_token_id=pad,
        )
        for row, i in enumerate(idx):
            new = gen[row, width:].tolist()
            if fmt.end_of_turn_id in new:
                new = new[: new.index(fmt.end_of_turn_id)]
            out[i] = new
    return out


def generate_texts(model, fmt: PromptFormat, prompts: list[list[int]], **kwargs) -> list[str]:
    """generate_batch, decoded (special tokens dropped)."""
    return [fmt.tokenizer.decode(ids, skip_special_tokens=True) for ids in generate_batch(model, fmt, prompts, **kwargs)]
