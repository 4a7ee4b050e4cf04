"""Demonstrations → training examples.

An example is one assistant turn to learn: the conversation before it (the student's prompt,
which may end in tool results), the tools on offer, and the demonstration — the text the model
should produce for that turn, rendered by the same prompt module the agent serves with
(agent/prompt.py), through the end-of-turn token. SFT trains on that text; SDFT shows it to the
teacher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.prompt import PromptFormat


@dataclass
class Example:
    messages: list[dict]  # the student's conversation prefix (ends before the assistant turn)
    tools: list[dict] | None
    message: dict  # the demonstrated assistant turn {"role", "content", "tool_calls"}
    completion_text: str  # PromptFormat.completion_text(message, messages, tools); ends at end of turn
    is_tool_call: bool  # the completion opens with the format's tool-call prefix
    demo_id: int | None = None
    skill: str | None = None


@dataclass
class EncodedExample:
    """Token ids for one example under one teacher template."""

    example: Example
    prompt_ids: list[int]  # student prompt: PromptFormat.encode(messages, tools)
    completion_ids: list[int]  # the demonstration's tokens (SFT target)
    teacher_prompt_ids: list[int]  # teacher prompt (never truncated)
    forced_ids: list[int]  # opening forced onto rollouts ([] when not forcing)
    # retention prompts: which model teaches this row ("champion": the adapter off; "origin": the
    # lineage's base, LearnConfig.retention_teacher)
    teacher: str = "champion"


def assistant_message(demo: dict) -> dict:
    msg: dict = {"role": "assistant", "content": demo.get("content") or ""}
    if demo.get("tool_calls"):
        msg["tool_calls"] = [{"name": c["name"], "arguments": c.get("arguments", {})} for c in demo["tool_calls"]]
    return msg


def make_example(fmt: PromptFormat, messages: list[dict], message: dict,
                 tools: list[dict] | None = None, demo_id: int | None = None,
                 skill: str | None = None) -> Example:
    if not messages or messages[-1]["role"] == "assistant":
        raise ValueError(
            f"demonstration {demo_id}: the conversation prefix must end with a user or tool turn"
        )
    text = fmt.completion_text(message, messages, tools)
    return Example(
        messages=list(messages),
        tools=tools or None,
        message=message,
        completion_text=text,
        is_tool_call=bool(message.get("tool_calls")) and text.startswith(fmt.tool_call_prefix()),
        demo_id=demo_id,
        skill=skill,
    )


def examples_from_demonstrations(
    demos: list[dict],
    fmt: PromptFormat,
    tools_for: Callable[[str | None], list[dict]] | dict | None = None,
) -> list[Example]:
    """One example per demonstration dict ({id, skill, messages, tool_calls, content}).

    `tools_for` gives the tools offered with a demonstration's skill: a callable (e.g.
    `Memory.tools_for`), a {skill: tools} dict, or None for no tools.
    """
    cache: dict = {}

    def tools_of(skill):
        if tools_for is None:
            return None
        if skill not in cache:
            cache[skill] = tools_for.get(skill) if isinstance(tools_for, dict) else tools_for(skill)
        return cache[skill]

    out = []
    for d in demos:
        if not d.get("tool_calls") and not d.get("content"):
            raise ValueError(f"demonstration {d.get('id')}: no tool calls and no content to learn")
        out.append(make_example(fmt, d["messages"], assistant_message(d), tools_of(d.get("skill")), d.get("id"),
                                d.get("skill")))
    return out


def encode_example(ex: Example, fmt: PromptFormat, template: str = "paper",
                   force_tool_prefix: bool = False) -> EncodedExample:
    from learner.teacher_templates import teacher_messages

    tok = fmt.tokenizer
    forced = []
    if force_tool_prefix and ex.is_tool_call:
        forced = tok(fmt.tool_call_prefix(), add_special_tokens=False)["input_ids"]
    completion_ids = tok(ex.completion_text, add_special_tokens=False)["input_ids"]
    if forced and completion_ids[: len(forced)] != forced:
        raise ValueError(
            "the tool-call prefix does not tokenize as the opening of the demonstration; "
            "cannot force it without changing the tokens"
        )
    return EncodedExample(
        example=ex,
        prompt_ids=fmt.encode(ex.messages, ex.tools),
        completion_ids=completion_ids,
        teacher_prompt_ids=fmt.encode(teacher_messages(ex, fmt, template), ex.tools),
        forced_ids=forced,
    )
