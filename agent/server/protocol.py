"""The OpenAI chat-completions wire format as pydantic models, and its translation into the
project's message vocabulary (agent.prompt's dicts).

Requests are validated here, at the edge: a bad field gets a 400 that names it (the `param` of
the error body) instead of failing later inside the model. Unknown request fields are accepted
and ignored, as OpenAI-compatible servers do (clients send vendor extras); `n` > 1 and
non-text content parts are refused with the reason.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.server.errors import APIError
from memory.toolschema import ToolSchemaError, check_tool_schema


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- request -------------------------------------------------------------------------------

class FunctionCall(_Open):
    name: str
    arguments: str = "{}"


class ToolCall(_Open):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionTool(_Open):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(_Open):
    type: Literal["function"] = "function"
    function: FunctionTool


class NamedChoice(_Open):
    type: Literal["function"] = "function"
    function: dict[str, Any]


class StreamOptions(_Open):
    include_usage: bool = False


class ChatRequest(_Open):
    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool = True
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported (one choice per request)")
        return n

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop
        if stops is not None and (len(stops) > 4 or any(not s for s in stops)):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    def max_new_tokens(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class Feedback(_Open):
    """POST /v1/feedback: judge one completion by the id it was answered with."""

    id: str | int
    outcome: Literal["good", "bad"] | None = None
    note: str | None = None
    tool_calls: list[ToolCall | dict[str, Any]] | None = None


# ---- translation into the project's vocabulary -------------------------------------------------

def text_content(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for i, part in enumerate(content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(f"{where}[{i}]: only text content parts are supported (got type {part.get('type')!r})",
                           param=f"{where}[{i}]")
        parts.append(part["text"])
    return "".join(parts)


def parse_arguments(raw: str, where: str) -> dict:
    """A call's `arguments` string as a JSON object, or a 400 that names where it is."""
    try:
        args = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise APIError(f"{where}: the arguments are not valid JSON ({exc.msg} at position {exc.pos}): {raw[:200]!r}",
                       param=where, code="invalid_tool_call") from None
    if not isinstance(args, dict):
        raise APIError(f"{where}: the arguments must be a JSON object, got {type(args).__name__}",
                       param=where, code="invalid_tool_call")
    return args


def to_project_messages(messages: list[Message]) -> list[dict]:
    """OpenAI messages -> agent.prompt dicts. Tool results get the name of the call they answer
    (matched by tool_call_id); a malformed call or an unmatched result is a 400 naming it."""
    out: list[dict] = []
    calls_by_id: dict[str, str] = {}
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        content = text_content(m.content, f"{where}.content")
        role = "system" if m.role == "developer" else m.role
        if role == "system":
            if out:
                raise APIError(f"{where}: a system message may only come first", param=where)
            out.append({"role": "system", "content": content})
        elif role == "user":
            out.append({"role": "user", "content": content})
        elif role == "assistant":
            d: dict = {"role": "assistant", "content": content}
            if m.tool_calls:
                d["tool_calls"] = []
                for j, c in enumerate(m.tool_calls):
                    at = f"{where}.tool_calls[{j}].function.arguments"
                    d["tool_calls"].append({"name": c.function.name, "arguments": parse_arguments(c.function.arguments, at)})
                    if c.id:
                        calls_by_id[c.id] = c.function.name
            out.append(d)
        else:  # tool
            if not m.tool_call_id:
                raise APIError(f"{where}: a tool message needs the tool_call_id of the call it answers",
                               param=f"{where}.tool_call_id")
            name = calls_by_id.get(m.tool_call_id) or m.name
            if name is None:
                raise APIError(f"{where}: tool_call_id {m.tool_call_id!r} matches no earlier assistant tool call",
                               param=f"{where}.tool_call_id")
            out.append({"role": "tool", "content": content, "name": name})
    return out


def tool_schemas(tools: list[Tool] | None) -> list[dict]:
    """Flat function schemas (memory.toolschema's checks: a 400 naming the bad tool)."""
    out = []
    for i, t in enumerate(tools or []):
        try:
            out.append(check_tool_schema(t.function.model_dump(exclude_none=True), f"tools[{i}].function"))
        except ToolSchemaError as exc:
            raise APIError(str(exc), param=f"tools[{i}]") from None
    names = [t["name"] for t in out]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise APIError(f"tools: repeated function names: {', '.join(dups)}", param="tools")
    return out


def choice_of(req: ChatRequest, tools: list[dict]) -> str | None:
    """tool_choice as 'none' | 'auto' | 'required' | a function name (None: not given)."""
    choice = req.tool_choice
    if isinstance(choice, NamedChoice):
        name = choice.function.get("name")
        names = [t["name"] for t in tools]
        if name not in names:
            raise APIError(f"tool_choice names function {name!r}, which is not in tools ({', '.join(names) or 'none'})",
                           param="tool_choice")
        return name
    if choice == "required" and not tools:
        raise APIError("tool_choice 'required' needs at least one tool in tools", param="tool_choice")
    return choice


# ---- responses -----------------------------------------------------------------------------

def wire_tool_calls(calls: list[dict]) -> list[dict]:
    return [{"id": c["id"], "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]


def completion_body(response_id: str, model: str, content: str | None, calls: list[dict],
                    finish: str, usage: dict, created: int | None = None) -> dict:
    message: dict = {"role": "assistant", "content": content if content or not calls else None}
    if calls:
        message["tool_calls"] = wire_tool_calls(calls)
    return {"id": response_id, "object": "chat.completion", "created": created or int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish,
                                         "logprobs": None}],
            "usage": usage, "system_fingerprint": f"sdft-agent-{model}"}


def chunk_body(response_id: str, model: str, created: int, delta: dict | None,
               finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    body = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": choices, "system_fingerprint": f"sdft-agent-{model}"}
    if usage is not None:
        body["usage"] = usage
    return body
