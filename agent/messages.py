"""LangChain messages <-> the project's message dicts (memory.records.Message's vocabulary):
what PromptFormat renders, what memory stores, and what the chat model and the agent loop hand
each other. Split from agent.chat_model, which re-exports these names.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import tool_call
from langchain_core.utils.function_calling import convert_to_openai_tool

from agent.prompt import CALL_CLOSE, CALL_OPEN
from memory.toolschema import function_schema

_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
          "system": "system", "tool": "tool", "function": "tool"}

def text_of(content: Any) -> str:
    """The text of a message's content (a string, or content blocks of which text is kept)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
    return "".join(parts)


def to_dicts(messages: Sequence[BaseMessage]) -> list[dict]:
    """langchain messages -> the project's message dicts (what PromptFormat renders and what
    memory stores). An invalid call is kept as the raw block the model wrote, so a repair turn
    shows the model its own mistake. System messages that open the conversation one after the
    other become one (joined by a blank line): the project allows one system message, first; a
    system message later on is still refused where the conversation is checked."""
    out: list[dict] = []
    names: dict[str | None, str] = {}
    for m in messages:
        if isinstance(m, AIMessage):
            content = text_of(m.content)
            raw = [f"{CALL_OPEN}\n{c.get('args') or ''}\n{CALL_CLOSE}" for c in m.invalid_tool_calls]
            if raw:
                content = "\n".join([content, *raw] if content else raw)
            d: dict = {"role": "assistant", "content": content}
            if m.tool_calls:
                d["tool_calls"] = [{"name": c["name"], "arguments": c["args"]} for c in m.tool_calls]
                names.update({c.get("id"): c["name"] for c in m.tool_calls})
            out.append(d)
        elif isinstance(m, (ToolMessage, FunctionMessage)):
            d = {"role": "tool", "content": text_of(m.content)}
            name = m.name or names.get(getattr(m, "tool_call_id", None))
            if name:
                d["name"] = name
            out.append(d)
        elif isinstance(m, (SystemMessage, HumanMessage, ChatMessage)):
            role = _ROLES.get(m.role if isinstance(m, ChatMessage) else m.type)
            if role is None:
                raise ValueError(f"unsupported chat role {m.role!r}")
            text = text_of(m.content)
            if role == "system" and out and all(o["role"] == "system" for o in out):
                out[0]["content"] = f"{out[0]['content']}\n\n{text}"
                continue
            out.append({"role": role, "content": text})
        else:
            raise ValueError(f"unsupported message type {type(m).__name__}")
    return out


def from_dicts(messages: Sequence[dict]) -> list[BaseMessage]:
    """The project's message dicts -> langchain messages (call ids made up, results matched to
    calls in order)."""
    out: list[BaseMessage] = []
    pending: list[str] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "system":
            out.append(SystemMessage(content))
        elif role == "user":
            out.append(HumanMessage(content))
        elif role == "assistant":
            calls = [tool_call(name=c["name"], args=c.get("arguments", {}), id=new_call_id())
                     for c in m.get("tool_calls") or []]
            pending = [c["id"] for c in calls]
            out.append(AIMessage(content=content, tool_calls=calls))
        elif role == "tool":
            call_id = pending.pop(0) if pending else new_call_id()
            out.append(ToolMessage(content, tool_call_id=call_id, name=m.get("name")))
        else:
            raise ValueError(f"unknown role {role!r}")
    return out


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def tool_schemas(tools: Sequence[Any]) -> list[dict]:
    """Flat OpenAI function schemas for langchain tools, Pydantic models, functions or dicts."""
    return [function_schema(convert_to_openai_tool(t)) for t in tools]
