"""Plain generation from token ids or a conversation: the primitive the agent and evaluation use.

`generate_ids` is the one place that calls `model.generate`, so the chat model, `ask` and the
overhead benchmark stop, sample and pad identically.
"""

from __future__ import annotations

import torch

from agent.prompt import PromptFormat


def sampling_kwargs(temperature: float, top_p: float = 1.0) -> dict:
    """Greedy at temperature 0, else plain sampling (top_k off, so top_p alone decides)."""
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    return {"do_sample": False}


@torch.inference_mode()
def generate_ids(
    model,
    fmt: PromptFormat,
    input_ids: list[int],
    *,
    max_new_tokens: int = 128,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    streamer=None,
    stopping_criteria=None,
) -> list[int]:
    """The new token ids after `input_ids`, ending at (and including) the end-of-turn token
    when the model wrote one."""
    ids = torch.tensor([input_ids], device=model.device)
    kwargs: dict = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "max_new_tokens": max_new_tokens,
        "eos_token_id": fmt.end_of_turn_id,
        "pad_token_id": fmt.tokenizer.pad_token_id,
        **sampling_kwargs(temperature, top_p),
    }
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    if stop:
        kwargs.update(stop_strings=list(stop), tokenizer=fmt.tokenizer)
    if streamer is not None:
        kwargs["streamer"] = streamer
    if stopping_criteria is not None:
        kwargs["stopping_criteria"] = stopping_criteria
    out = model.generate(**kwargs)
    return out[0, ids.shape[1]:].tolist()


def generate_reply(
    model,
    tokenizer,
    messages: list[dict],
    tools: list[dict] | None = None,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    fmt: PromptFormat | None = None,
) -> str:
    """The assistant's reply text (greedy when temperature is 0), stopped at end of turn."""
    fmt = fmt or PromptFormat(tokenizer)
    new = generate_ids(model, fmt, fmt.encode(messages, tools),
                       max_new_tokens=max_new_tokens, temperature=temperature)
    return tokenizer.decode(new, skip_special_tokens=True)
