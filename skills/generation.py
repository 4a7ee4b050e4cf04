"""Batched greedy generation for evaluation, on agent.decode's `complete`: the path the server
and the agent decode with, so the gate measures the decoding the agent serves with, token for
token.

Evaluation generates for tens to hundreds of prompts that mostly share their opening: the system
message with every tool schema is ~300 of a skill prompt's ~360 tokens. `complete` prefills that
common prefix once (batch 1) and repeats its cache for each batch; prompts are sorted by length
so a batch holds similar lengths; results come back in the caller's order. Greedy makes a run
reproducible, which a paired comparison of two models needs.

With `tools`, tool calls are schema-constrained unless `constrain=False` (agent.constrain).
"""

from __future__ import annotations

from agent.decode import Request, complete, default_constrain
from agent.prompt import PromptFormat


def generate_batch(
    model,
    fmt: PromptFormat,
    prompts: list[list[int]],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    tools: list[dict] | None = None,
    tool_choice: str | dict | None = "auto",
    constrain: bool | None = None,
    conversations: list[list[dict]] | None = None,
    withheld: list | None = None,
) -> list[list[int]]:
    """New token ids for each prompt, greedy, up to (without) the end-of-turn token.
    `constrain` None: agent.decode.default_constrain() (on unless SDFT_AGENT_CONSTRAIN=0).
    `conversations`: what each prompt encodes, so a call that takes no value from it is not
    made, as the agent serves (agent.grounding; agent.decode.default_grounding()). `withheld`:
    a list to fill with each prompt's withheld reply (the call that was not made), or None."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        return []
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 1:
        return [[] for _ in prompts]
    if conversations is not None and len(conversations) != len(prompts):
        raise ValueError(f"{len(conversations)} conversations for {len(prompts)} prompts")
    on = default_constrain() if constrain is None else constrain
    convs = conversations or [None] * len(prompts)
    done = complete(model, fmt, [Request(prompt=p, tools=tools, tool_choice=tool_choice, max_new_tokens=max_new_tokens,
                                         constrain=on, messages=m) for p, m in zip(prompts, convs, strict=True)],
                    batch_size=batch_size)
    if withheld is not None:
        withheld[:] = [c.withheld for c in done]
    stop = fmt.end_of_turn_id
    return [c.ids[:-1] if c.ids and c.ids[-1] == stop else c.ids for c in done]


def generate_texts(model, fmt: PromptFormat, prompts: list[list[int]], **kwargs) -> list[str]:
    """generate_batch, decoded (special tokens dropped)."""
    return [fmt.tokenizer.decode(ids, skip_special_tokens=True) for ids in generate_batch(model, fmt, prompts, **kwargs)]
