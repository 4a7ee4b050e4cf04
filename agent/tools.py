"""The tools an agent can call, and executing one call safely.

A tool is a schema (the OpenAI function form the model is shown) plus, optionally, something to
run: a langchain tool, or a plain function called with the call's arguments as keywords. Only
registered callables ever run, with JSON arguments that passed the schema; nothing the model
writes is executed as code.

What a tool returns is data for the model, never a command: errors become text (status
"error") instead of exceptions, long outputs are cut with a notice, and the chat template's
control markers inside an output (`<|im_start|>`, `</tool_response>`, …) are defused so the
output cannot close its own block or open a system turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel

from agent.prompt import CALL_CLOSE, CALL_OPEN, RESULT_CLOSE, RESULT_OPEN, parse_tool_calls
from memory.toolschema import argument_errors, check_tool_schema, function_schema

MAX_OUTPUT_CHARS = 4000
_CHATML_MARKER = re.compile(r"<\|[^<>|\s]{1,40}\|>")
TAG_MARKERS = (CALL_OPEN, CALL_CLOSE, RESULT_OPEN, RESULT_CLOSE)


@dataclass
class Tool:
    """One callable tool: its schema and, when it can run here, how to run it."""

    schema: dict  # flat {"name", "description", "parameters"}
    fn: Callable[..., Any] | None = None
    lc_tool: BaseTool | None = None

    @property
    def name(self) -> str:
        return self.schema["name"]

    @property
    def runnable(self) -> bool:
        return self.fn is not None or self.lc_tool is not None


@dataclass
class ToolResult:
    content: str
    status: str = "success"  # success | error (ToolMessage.status)
    truncated: bool = False


def as_tool(obj: Any) -> Tool:
    """A Tool from a langchain tool, a (schema, callable) pair, a schema dict (schema only, it
    cannot run), a Pydantic model (schema only) or a typed, documented function."""
    if isinstance(obj, Tool):
        return obj
    if isinstance(obj, BaseTool):
        return Tool(function_schema(convert_to_openai_tool(obj)), lc_tool=obj)
    if isinstance(obj, tuple) and len(obj) == 2:
        schema, fn = obj
        if fn is not None and not callable(fn):
            raise TypeError(f"tool {schema!r}: the implementation is not callable")
        return Tool(check_tool_schema(schema), fn=fn)
    if isinstance(obj, dict):
        return Tool(check_tool_schema(obj))
    if isinstance(obj, type) and issubclass(obj, BaseModel):
        return Tool(function_schema(convert_to_openai_tool(obj)))
    if callable(obj):
        return Tool(function_schema(convert_to_openai_tool(obj)), fn=obj)
    raise TypeError(f"cannot make a tool of {type(obj).__name__}")


def as_tools(tools: Iterable[Any]) -> list[Tool]:
    out = [as_tool(t) for t in tools]
    names = [t.name for t in out]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"tool names must be unique; repeated: {', '.join(dups)}")
    return out


def call_error(name: Any, arguments: Any, tools: dict[str, Tool]) -> str | None:
    """Why a call cannot run (unknown tool, arguments against the schema), or None."""
    tool = tools.get(name) if isinstance(name, str) else None
    if tool is None:
        return f"unknown tool {name!r} (known: {', '.join(sorted(tools)) or 'none'})"
    errors = argument_errors(tool.schema, arguments)
    return "; ".join(errors) if errors else None


def validate_calls(calls: Any, tools: Sequence[Tool]) -> list[dict]:
    """Calls given by a person ([{"name", "arguments"}] or one such dict), checked against the
    schemas; returns them normalised or raises ValueError listing every problem."""
    if isinstance(calls, dict):
        calls = [calls]
    if not isinstance(calls, list) or not calls:
        raise ValueError('give one call {"name": …, "arguments": {…}} or a non-empty list of them')
    by_name = {t.name: t for t in tools}
    errors, out = [], []
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            errors.append(f'call {i + 1}: expected {{"name": str, "arguments": {{…}}}}')
            continue
        args = call.get("arguments", {})
        problem = call_error(call["name"], args, by_name)
        if problem:
            errors.append(f"call {i + 1} ({call['name']}): {problem}")
        else:
            out.append({"name": call["name"], "arguments": args})
    if errors:
        raise ValueError("\n".join(errors))
    return out


def calls_from_text(text: str) -> list[dict]:
    """Calls typed by a person: a JSON call, a JSON list of calls, or `<tool_call>` blocks
    (read by the prompt module's parser). Shape only; validate_calls checks the schemas."""
    text = text.strip()
    if CALL_OPEN in text:
        parsed = parse_tool_calls(text)
        if parsed.invalid:
            raise ValueError("; ".join(c.error for c in parsed.invalid))
        return parsed.calls
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at position {exc.pos}") from None
    return [value] if isinstance(value, dict) else value


def special_markers(tokenizer) -> list[str]:
    """Strings the tokenizer turns into control tokens, plus the prompt format's tags."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found.update(t.content for t in decoder.values())
    found = {m for m in found if len(m) >= 3 and not m.isalnum()}
    return sorted(found | set(TAG_MARKERS), key=len, reverse=True)


def neutralise(text: str, markers: Iterable[str] = TAG_MARKERS) -> str:
    """Break every control marker in `text` so it reads the same but tokenizes as plain text."""
    for m in markers:
        if m in text:
            text = text.replace(m, _defused(m))
    return _CHATML_MARKER.sub(lambda match: _defused(match.group(0)), text)


def _defused(marker: str) -> str:
    return "&lt;" + marker[1:] if marker.startswith("<") else marker[0] + "\u2060" + marker[1:]


def truncate(text: str, max_chars: int = MAX_OUTPUT_CHARS) -> tuple[str, bool]:
    if max_chars <= 0 or len(text) <= max_chars:
        return text, False
    notice = f"\n[output truncated: showing the first {max_chars} of {len(text)} characters]"
    return text[:max_chars] + notice, True


def output_text(value: Any) -> str:
    """A tool's return value as the text the model reads (JSON for structured values)."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseMessage):
        value = value.content
        if isinstance(value, str):
            return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def execute(
    tool: Tool,
    arguments: dict,
    *,
    max_chars: int = MAX_OUTPUT_CHARS,
    markers: Iterable[str] = TAG_MARKERS,
    config: dict | None = None,
) -> ToolResult:
    """Run one validated call. Never raises for the tool's sake: every failure is a result."""
    problem = call_error(tool.name, arguments, {tool.name: tool})
    status = "error"
    if problem:
        text = f"Error: {problem}"
    elif not tool.runnable:
        text = f"Error: tool {tool.name!r} has no implementation in this agent; it can be called but not run"
    else:
        try:
            value = tool.lc_tool.invoke(arguments, config=config) if tool.lc_tool else tool.fn(**arguments)
            text, status = output_text(value), "success"
        except Exception as exc:  # a tool's bug or refusal is information for the model
            text = f"Error: {type(exc).__name__}: {exc}"
    text, cut = truncate(neutralise(text, markers), max_chars)
    return ToolResult(text, status, cut)
