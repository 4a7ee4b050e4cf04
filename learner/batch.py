"""Packing (prompt, completion) pairs into one batch, and reading the model's last hidden states
at the positions that predict completion tokens.

Layout, every row:  [left padding | prompt | completion | right padding]
so the completion sits in the same C columns for every row (columns P … P+C−1) whatever the
prompt lengths, for the student's prompt and the teacher's alike. Position ids count real tokens
only, so a left-padded row sees the same positions as the unpadded sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Packed:
    input_ids: torch.Tensor  # [B, P + C]
    attention_mask: torch.Tensor  # [B, P + C]
    position_ids: torch.Tensor  # [B, P + C]
    prompt_len: int  # P (padded)
    completion_len: int  # C (padded)
    completion_ids: torch.Tensor  # [B, C], padding = pad id
    completion_mask: torch.Tensor  # [B, C] bool, real completion tokens


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int,
         device: torch.device | str = "cpu") -> Packed:
    if len(prompts) != len(completions):
        raise ValueError("one completion per prompt")
    P = max(len(p) for p in prompts)
    C = max(1, max(len(c) for c in completions))
    B = len(prompts)
    ids = torch.full((B, P + C), pad_id, dtype=torch.long)
    mask = torch.zeros((B, P + C), dtype=torch.long)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        mask[i, P - len(p):P] = 1
        if c:
            ids[i, P:P + len(c)] = torch.tensor(c, dtype=torch.long)
            mask[i, P:P + len(c)] = 1
    ids, mask = ids.to(device), mask.to(device)
    return Packed(ids, mask, positions(mask), P, C, ids[:, P:], mask[:, P:].bool())


def trained_mask(completion_mask: torch.Tensor, starts: list[int]) -> torch.Tensor:
    """Completion positions that carry loss: real tokens at index ≥ start (per row)."""
    idx = torch.arange(completion_mask.shape[1], device=completion_mask.device)
    start = torch.tensor(starts, device=completion_mask.device).unsqueeze(1)
    return completion_mask & (idx.unsqueeze(0) >= start)


def completion_hidden(model, packed: Packed) -> torch.Tensor:
    """[B, C, H] final hidden states at columns P−1 … P+C−2, i.e. the positions whose next-token
    distributions are the completion tokens' (the head is applied later, in chunks)."""
    out = model(
        input_ids=packed.input_ids,
        attention_mask=packed.attention_mask,
        position_ids=packed.position_ids,
        use_cache=False,
        output_hidden_states=True,
        logits_to_keep=1,  # the head runs later, on completion positions only, in chunks
    )
    P, C = packed.prompt_len, packed.completion_len
    return out.hidden_states[-1][:, P - 1:P + C - 1]
