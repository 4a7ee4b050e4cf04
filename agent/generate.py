"""Plain generation from a conversation: the primitive the agent loop and evaluation build on."""

from __future__ import annotations

import torch

from agent.prompt import PromptFormat


@torch.inference_mode()
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
    ids = torch.tensor([fmt.encode(messages, tools)], device=model.device)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        eos_token_id=fmt.end_of_turn_id,
        pad_token_id=tokenizer.pad_token_id,
        **sampling,
    )
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
