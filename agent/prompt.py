"""The prompt format: (messages, tools) → text → tokens, and generated text → tool calls.

The ONE module where the agent (serving), the learner (training) and the evaluation harness turn
conversations into tokens, so a student prompt at training time is byte-identical to the prompt
the agent sends at inference (docs/ARCHITECTURE.md, "The prompt format").

Messages use one vocabulary throughout the project:
    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"name": str, "arguments": {...}}]   # assistant only, optional
     "name": str}                                         # tool only, optional

Two template kinds:
- native: the tokenizer's chat template takes `tools=` (Qwen2.5's does). Tools, calls and tool
  results are passed to the template as it expects them.
- fallback: the template knows only role/content (SmolLM2's). Then the tool schemas go into the
  system message, each call is written as `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`
  in the assistant's content (the same shape Qwen2.5 uses natively), and tool results go back
  as a user turn wrapped in `<tool_response>…</tool_response>`.
Both kinds parse the same way, because both emit the same `<tool_call>` blocks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from memory.records import role_errors
from memory.toolschema import argument_errors, function_schema, tool_name

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESULT_OPEN, RESULT_CLOSE = "<tool_response>", "</tool_response>"
DEFAULT_SYSTEM = "You are a helpful assistant."
FALLBACK_TOOLS_HEADER = (
    "You can use these tools. Their JSON schemas are listed between <tools> and </tools>:\n<tools>\n"
)
FALLBACK_TOOLS_FOOTER = (
    "\n</tools>\n\nTo use a tool, reply with one block per call, exactly like this:\n"
    '<tool_call>\n{"name": "<tool name>", "arguments": {<argument names and values>}}\n</tool_call>\n'
    "Otherwise reply in plain text."
)
_CALL_RE = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.S)
# the tool an unterminated block (cut off by the answer budget) opened with
_OPENED_NAME_RE = re.compile(r'^\s*\{\s*"name"\s*:\s*"([^"]*)"')


def call_json(call: dict) -> str:
    """The one JSON spelling of a call (what Qwen2.5's template writes: default separators)."""
    return json.dumps({"name": call["name"], "arguments": call.get("arguments", {})}, ensure_ascii=False)


def argument_list(arguments: dict) -> str:
    """Arguments as a person reads them in a call: `location="Vallejo, CA", max_price=12`."""
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())


def call_block(call: dict) -> str:
    return f"{CALL_OPEN}\n{call_json(call)}\n{CALL_CLOSE}"


@dataclass
class InvalidCall:
    """A call the model tried to make that cannot be executed, and why."""

    raw: str
    error: str
    name: str | None = None
    arguments: Any = None


@dataclass
class Parsed:
    content: str
    calls: list[dict] = field(default_factory=list)  # [{"name", "arguments"}], all valid
    invalid: list[InvalidCall] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.invalid


class PromptFormat:
    """Render and parse for one tokenizer. Cheap to build; holds no model."""

    def __init__(self, tokenizer):
        template = tokenizer.chat_template
        if not template:
            raise ValueError(
                "the tokenizer has no chat template; a model folder needs one "
                "(tokenizer_config.json 'chat_template' or chat_template.jinja)"
            )
        self.tokenizer = tokenizer
        self.native_tools = "tools" in template and "tool_call" in template
        end = "<|im_end|>" if "<|im_end|>" in template else tokenizer.eos_token
        self.end_of_turn = end
        self.end_of_turn_id = tokenizer.convert_tokens_to_ids(end)

    # ---- rendering ------------------------------------------------------------------------

    def render(self, messages: list[dict], tools: list[dict] | None = None,
               add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages` (ending with the assistant header when asked)."""
        _check_messages(messages)
        if self.native_tools:
            msgs = [self._native_message(m) for m in messages]
            kwargs = {"tools": [{"type": "function", "function": function_schema(t)} for t in tools]} if tools else {}
        else:
            msgs = self._fallback_messages(messages, tools)
            kwargs = {}
        return self.tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )

    def encode(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """Token ids of the prompt the model continues: what the agent sends, what SDFT's
        student sees."""
        return self.tokenizer(self.render(messages, tools), add_special_tokens=False)["input_ids"]

    def completion_text(self, message: dict, messages: list[dict] | None = None,
                        tools: list[dict] | None = None) -> str:
        """What the model must generate for assistant `message` after `messages`, through the
        end-of-turn token: the training target for SFT and the demonstration SDFT's teacher sees.

        Taken from the template itself (full render minus prompt render), so it cannot drift
        from what the template would show for that turn in a later conversation.
        """
        if message.get("role", "assistant") != "assistant":
            raise ValueError("completion_text needs an assistant message")
        prefix = messages or [{"role": "user", "content": "."}]
        prompt = self.render(prefix, tools, add_generation_prompt=True)
        full = self.render([*prefix, {"role": "assistant", **message}], tools, add_generation_prompt=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template renders an assistant turn that does not extend the prompt")
        completion = full[len(prompt):]
        cut = completion.rfind(self.end_of_turn)
        return completion[: cut + len(self.end_of_turn)] if cut >= 0 else completion

    def completion_ids(self, message: dict, messages: list[dict] | None = None,
                       tools: list[dict] | None = None) -> list[int]:
        return self.tokenizer(self.completion_text(message, messages, tools),
                              add_special_tokens=False)["input_ids"]

    def tool_call_prefix(self) -> str:
        """The opening every tool-call completion starts with (for forced-opening rollouts)."""
        return CALL_OPEN

    def _native_message(self, m: dict) -> dict:
        out = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("tool_calls"):
            out["tool_calls"] = [
                {"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}}
                for c in m["tool_calls"]
            ]
        if m["role"] == "tool" and m.get("name"):
            out["name"] = m["name"]
        return out

    def _fallback_messages(self, messages: list[dict], tools: list[dict] | None) -> list[dict]:
        out: list[dict] = []
        msgs = list(messages)
        if tools:
            schemas = "\n".join(json.dumps(function_schema(t), ensure_ascii=False) for t in tools)
            section = FALLBACK_TOOLS_HEADER + schemas + FALLBACK_TOOLS_FOOTER
            if msgs and msgs[0]["role"] == "system":
                out.append({"role": "system", "content": f"{msgs[0]['content']}\n\n{section}"})
                msgs = msgs[1:]
            else:
                out.append({"role": "system", "content": f"{DEFAULT_SYSTEM}\n\n{section}"})
        for m in msgs:
            if m["role"] == "tool":
                block = f"{RESULT_OPEN}\n{m.get('content') or ''}\n{RESULT_CLOSE}"
                if out and out[-1].get("_tool_results"):
                    out[-1]["content"] += "\n" + block  # consecutive results share one turn
                else:
                    out.append({"role": "user", "content": block, "_tool_results": True})
            elif m["role"] == "assistant" and m.get("tool_calls"):
                parts = [m["content"]] if m.get("content") else []
                parts += [call_block(c) for c in m["tool_calls"]]
                out.append({"role": "assistant", "content": "\n".join(parts)})
            else:
                out.append({"role": m["role"], "content": m.get("content") or ""})
        return [{k: v for k, v in m.items() if not k.startswith("_")} for m in out]

    # ---- parsing --------------------------------------------------------------------------

    def strip_special(self, text: str) -> str:
        cut = text.find(self.end_of_turn)
        return text[:cut] if cut >= 0 else text

    def parse(self, text: str, tools: list[dict] | None = None) -> Parsed:
        return parse_tool_calls(self.strip_special(text), tools)


def parse_tool_calls(text: str, tools: list[dict] | None = None) -> Parsed:
    """Split generated text into plain content, valid calls and invalid calls with reasons.

    A call is valid when its block holds a JSON object with a string "name" naming one of
    `tools` and an "arguments" object that satisfies that tool's schema (memory.toolschema).
    With `tools` None, any well-formed call is accepted (no schema to check against).
    """
    by_name = {tool_name(t): t for t in tools} if tools is not None else None
    calls: list[dict] = []
    invalid: list[InvalidCall] = []
    for match in _CALL_RE.finditer(text):
        raw = match.group(1).strip()
        if not match.group(0).endswith(CALL_CLOSE):
            opened = _OPENED_NAME_RE.match(raw)
            invalid.append(InvalidCall(raw, f"unterminated {CALL_OPEN} block (no {CALL_CLOSE})",
                                       opened.group(1) if opened else None))
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            invalid.append(InvalidCall(raw, f"malformed JSON: {exc.msg} at position {exc.pos}"))
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            invalid.append(InvalidCall(raw, 'a call must be a JSON object with a string "name"'))
            continue
        name, args = obj["name"], obj.get("arguments", {})
        if isinstance(args, str):  # some models emit the arguments as a JSON string
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                pass
        if not isinstance(args, dict):
            invalid.append(InvalidCall(raw, '"arguments" must be a JSON object', name, args))
            continue
        if by_name is not None:
            if name not in by_name:
                known = ", ".join(sorted(by_name)) or "none"
                invalid.append(InvalidCall(raw, f"unknown tool {name!r} (known: {known})", name, args))
                continue
            errors = argument_errors(by_name[name], args)
            if errors:
                invalid.append(InvalidCall(raw, "; ".join(errors), name, args))
                continue
        calls.append({"name": name, "arguments": args})
    content = _CALL_RE.sub("", text).strip()
    return Parsed(content=content, calls=calls, invalid=invalid)


def _check_messages(messages: list[dict]) -> None:
    """Who may speak where, by memory.records' rule (the rest of a message is data here)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role', 'content'} dicts")
    errors = role_errors(messages)
    if errors:
        raise ValueError(f"messages{errors[0]}")
