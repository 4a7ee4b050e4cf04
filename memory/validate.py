"""Checking what goes into the episodic memory before any row is written.

Every error names the offending field as a path ("demonstration.tool_calls[0].arguments.city")
so a skill author can find it in their pack. Argument checking is memory.toolschema's (the same
rules the agent's parser and the skill loader use); this module adds the conversation shape,
the skill membership of calls and the size limits.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from memory.toolschema import argument_errors

ROLES = ("system", "user", "assistant", "tool")
OUTCOMES = ("success", "failure", "unknown")
SOURCES = ("live", "taught", "imported")

MESSAGE_KEYS = frozenset({"role", "content", "tool_calls", "name", "tool_call_id"})
CALL_KEYS = frozenset({"name", "arguments", "id"})

# Size limits. A demonstration is a training example and a few-shot prompt: it has to fit a
# context window many times over, so it is bounded far below an episode.
MAX_MESSAGES = 200
MAX_TOOL_CALLS = 32
MAX_TEXT_CHARS = 32_000
MAX_DEMO_BYTES = 128 * 1024
MAX_EPISODE_BYTES = 1024 * 1024


class ValidationError(ValueError):
    """Bad input for the memory; `errors` lists every problem, each starting with its field."""

    def __init__(self, errors: list[str] | str):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))

    def prefixed(self, prefix: str) -> ValidationError:
        """The same errors located inside something bigger (a file line, an episode)."""
        return ValidationError([f"{prefix}{e}" for e in self.errors])


def dumps(value: Any, where: str, *, canonical: bool = False) -> str:
    """Compact JSON for a column. Key order is kept (a schema's property order is what the model
    is shown); `canonical` sorts keys, giving one spelling per value for fingerprints."""
    try:
        return json.dumps(value, sort_keys=canonical, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{where}: not JSON-serialisable ({exc})") from None


def fingerprint(*parts: Any) -> str:
    """sha256 of the canonical JSON of `parts`: the identity used to store duplicates once
    (so {"a": 1, "b": 2} and {"b": 2, "a": 1} are the same demonstration)."""
    return hashlib.sha256(dumps(list(parts), "value", canonical=True).encode()).hexdigest()


def _text(value: Any, where: str, errors: list[str], *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        errors.append(f"{where}: expected a string, got {type(value).__name__}")
    elif len(value) > MAX_TEXT_CHARS:
        errors.append(f"{where}: {len(value)} characters, the limit is {MAX_TEXT_CHARS}; shorten it")


def call_errors(calls: Any, where: str) -> list[str]:
    """Shape of a list of tool calls [{"name": str, "arguments": {...}}] (membership not checked)."""
    if not isinstance(calls, list):
        return [f"{where}: expected a list of tool calls, got {type(calls).__name__}"]
    errors: list[str] = []
    if len(calls) > MAX_TOOL_CALLS:
        errors.append(f"{where}: {len(calls)} tool calls, the limit is {MAX_TOOL_CALLS}")
    for i, call in enumerate(calls):
        at = f"{where}[{i}]"
        if not isinstance(call, dict):
            errors.append(f"{at}: expected an object {{\"name\", \"arguments\"}}, got {type(call).__name__}")
            continue
        for key in sorted(set(call) - CALL_KEYS):
            errors.append(f"{at}.{key}: unknown field (allowed: {', '.join(sorted(CALL_KEYS))})")
        name = call.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.append(f"{at}.name: a non-empty string is required")
        args = call.get("arguments", None)
        if not isinstance(args, dict):
            hint = " (decode it with json.loads first)" if isinstance(args, str) else ""
            errors.append(f"{at}.arguments: expected a JSON object, got {type(args).__name__}{hint}")
    return errors


def message_errors(messages: Any, where: str) -> list[str]:
    """Shape of a conversation in the project's message vocabulary (DESIGN.md §4)."""
    if not isinstance(messages, list):
        return [f"{where}: expected a list of messages, got {type(messages).__name__}"]
    if not messages:
        return [f"{where}: at least one message is required"]
    errors: list[str] = []
    if len(messages) > MAX_MESSAGES:
        errors.append(f"{where}: {len(messages)} messages, the limit is {MAX_MESSAGES}")
    for i, msg in enumerate(messages):
        at = f"{where}[{i}]"
        if not isinstance(msg, dict):
            errors.append(f"{at}: expected an object with a role, got {type(msg).__name__}")
            continue
        for key in sorted(set(msg) - MESSAGE_KEYS):
            errors.append(f"{at}.{key}: unknown field (allowed: {', '.join(sorted(MESSAGE_KEYS))})")
        role = msg.get("role")
        if role not in ROLES:
            errors.append(f"{at}.role: must be one of {', '.join(ROLES)} (got {role!r})")
        has_calls = bool(msg.get("tool_calls"))
        if "tool_calls" in msg:
            if role != "assistant":
                errors.append(f"{at}.tool_calls: only assistant messages call tools")
            errors.extend(call_errors(msg["tool_calls"], f"{at}.tool_calls"))
        # An assistant turn that only calls tools may have no text.
        _text(msg.get("content"), f"{at}.content", errors, optional=role == "assistant" and has_calls)
        for key in ("name", "tool_call_id"):
            if key in msg:
                _text(msg[key], f"{at}.{key}", errors)
    return errors


def normalise_calls(calls: list[dict] | None) -> list[dict]:
    """Only what a demonstration teaches: name and arguments (call ids are per conversation)."""
    return [{"name": c["name"], "arguments": c["arguments"]} for c in calls or []]


def check_demonstration(
    skill: str,
    tools: dict[str, dict],
    messages: Any,
    tool_calls: Any,
    content: Any,
    where: str = "demonstration",
) -> tuple[list[dict], str | None]:
    """Validate one demonstration of `skill` (whose tools by name are `tools`).

    Returns the normalised (tool_calls, content); raises ValidationError listing every problem.
    """
    errors = message_errors(messages, f"{where}.messages")
    if not errors and messages[-1].get("role") not in ("user", "tool"):
        errors.append(
            f"{where}.messages[{len(messages) - 1}].role: the messages end just before the assistant "
            f"turn to learn, so the last one must be 'user' or 'tool' (got {messages[-1].get('role')!r}); "
            "move that assistant turn into tool_calls/content"
        )
    calls = [] if tool_calls is None else tool_calls
    shape = call_errors(calls, f"{where}.tool_calls")
    errors.extend(shape)
    if not shape:
        for i, call in enumerate(calls):
            tool = tools.get(call["name"])
            if tool is None:
                errors.append(
                    f"{where}.tool_calls[{i}].name: {call['name']!r} is not a tool of skill {skill!r} "
                    f"(its tools: {', '.join(sorted(tools)) or 'none'}); add it with add_skill first"
                )
                continue
            errors.extend(f"{where}.tool_calls[{i}].{e}" for e in argument_errors(tool, call["arguments"]))
    _text(content, f"{where}.content", errors, optional=True)
    content = content or None
    if not calls and content is None and not shape:
        errors.append(f"{where}: the assistant turn to learn is empty; give tool_calls or content")
    if errors:
        raise ValidationError(errors)
    calls = normalise_calls(calls)
    size = len(dumps([messages, calls, content], where).encode())
    if size > MAX_DEMO_BYTES:
        raise ValidationError(
            f"{where}: {size} bytes as JSON, the limit is {MAX_DEMO_BYTES}; shorten the conversation"
        )
    return calls, content


def check_choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ValidationError(f"{where}: must be one of {', '.join(choices)} (got {value!r})")
    return value


def check_expected(skill: str, tools: dict[str, dict], expected: Any, where: str) -> None:
    """An eval case's answer in the BFCL possible-answer convention (DESIGN.md §4)."""
    if not isinstance(expected, list) or not expected:
        raise ValidationError(f"{where}: expected a non-empty list of calls [{{\"name\", \"arguments\"}}]")
    errors: list[str] = []
    for i, call in enumerate(expected):
        at = f"{where}[{i}]"
        if not isinstance(call, dict) or not isinstance(call.get("arguments"), dict):
            errors.append(f"{at}: expected {{\"name\": str, \"arguments\": {{param: [acceptable values]}}}}")
            continue
        tool = tools.get(call.get("name"))
        if tool is None:
            errors.append(
                f"{at}.name: {call.get('name')!r} is not a tool of skill {skill!r} "
                f"(its tools: {', '.join(sorted(tools)) or 'none'})"
            )
            continue
        props = tool["parameters"].get("properties", {})
        for param, values in call["arguments"].items():
            if param not in props:
                errors.append(f"{at}.arguments.{param}: not a parameter of {tool['name']!r}")
            elif not isinstance(values, list) or not values:
                errors.append(
                    f"{at}.arguments.{param}: must be a non-empty list of acceptable values "
                    f"(BFCL convention), got {type(values).__name__}"
                )
    if errors:
        raise ValidationError(errors)
