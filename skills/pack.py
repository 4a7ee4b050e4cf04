"""Skill packs: the JSON file a user hands the agent to teach it a tool (DESIGN.md §4).

A pack is validated whole before anything uses it, and an invalid pack is rejected with every
error at once (each naming the item index and field), so an author fixes a file in one pass
instead of one error per try.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from memory.files import write_text_atomic
from memory.toolschema import ToolSchemaError, check_tool_schema
from memory.validate import ValidationError, check_demonstration
from memory.validate import message_errors as memory_message_errors

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PACK_KEYS = ("name", "description", "tools", "demonstrations", "eval")
DEMO_KEYS = ("messages", "tool_calls", "content")
CASE_KEYS = ("messages", "expected")


class PackError(ValueError):
    """An invalid skill pack; `.errors` lists every problem found."""

    def __init__(self, errors: list[str], source: str | None = None):
        self.errors = list(errors)
        where = f" {source}" if source else ""
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"invalid skill pack{where} ({len(self.errors)} error(s)):\n{lines}")


@dataclass
class SkillPack:
    """One skill: its tools, demonstrations to learn from, and held-out eval cases."""

    name: str
    description: str
    tools: list[dict]
    demonstrations: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Any, source: str | None = None) -> SkillPack:
        """Validate `d` and build a pack; raise PackError listing all problems."""
        errors = validate_pack(d)
        if errors:
            raise PackError(errors, source)
        d = copy.deepcopy(d)
        tools = [check_tool_schema(t) for t in d["tools"]]
        return cls(d["name"], d["description"], tools, d["demonstrations"], d["eval"])

    @classmethod
    def load(cls, path: str | os.PathLike) -> SkillPack:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PackError([f"not valid JSON: {exc}"], str(path)) from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "tools": self.tools,
            "demonstrations": self.demonstrations,
            "eval": self.eval,
        }

    def validate(self) -> None:
        """Re-check a pack built or edited in code; raise PackError when it is invalid."""
        errors = validate_pack(self.to_dict())
        if errors:
            raise PackError(errors, self.name)

    def dumps(self) -> str:
        """Stable text form (the bundled packs are byte-for-byte reproducible through it)."""
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        path = Path(path)
        self.validate()
        write_text_atomic(path, self.dumps())
        return path


# ---------------------------------------------------------------- validation


def validate_pack(d: Any) -> list[str]:
    """Every reason `d` is not a valid pack; empty when it is valid."""
    if not isinstance(d, dict):
        return [f"pack: expected an object, got {type(d).__name__}"]
    errors: list[str] = []
    errors += [f"{k}: unknown field (known: {', '.join(PACK_KEYS)})" for k in d if k not in PACK_KEYS]
    name = d.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        errors.append(f"name: must match {NAME_RE.pattern} (got {name!r})")
    if not isinstance(d.get("description"), str):
        errors.append("description: a string is required")
    tools, broken = _validate_tools(d.get("tools"), errors)
    demos = d.get("demonstrations")
    if not isinstance(demos, list):
        errors.append("demonstrations: a list is required")
        demos = []
    for i, demo in enumerate(demos):
        _validate_demo(demo, f"demonstrations[{i}]", str(name), tools, broken, errors)
    cases = d.get("eval")
    if not isinstance(cases, list):
        errors.append("eval: a list is required")
        cases = []
    for i, case in enumerate(cases):
        _validate_case(case, f"eval[{i}]", tools, broken, errors)
    _check_no_leak(demos, cases, errors)
    return errors


def _validate_tools(tools: Any, errors: list[str]) -> tuple[dict[str, dict], set[str]]:
    """Check each tool schema; return the valid ones by name (for checking calls) and the names
    of the invalid ones (calls of those are not checked: the schema error is the one to fix)."""
    if not isinstance(tools, list) or not tools:
        errors.append("tools: a non-empty list is required")
        return {}, set()
    by_name: dict[str, dict] = {}
    broken: set[str] = set()
    for i, tool in enumerate(tools):
        try:
            flat = check_tool_schema(tool, where=f"tools[{i}]")
        except ToolSchemaError as exc:
            errors.append(str(exc))
            fn = tool.get("function") or tool if isinstance(tool, dict) else {}
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                broken.add(fn["name"])
            continue
        if flat["name"] in by_name:
            errors.append(f"tools[{i}].name: duplicate tool name {flat['name']!r}")
        by_name[flat["name"]] = flat
    return by_name, broken


def conversation_errors(messages: Any, where: str = "messages") -> list[str]:
    """Every reason `messages` cannot precede an assistant turn to learn or to judge: memory's
    message rules (so whatever a pack holds, the memory accepts) plus "ends with user or tool"."""
    errors = memory_message_errors(messages, where)
    if not errors and messages[-1].get("role") not in ("user", "tool"):
        errors.append(
            f"{where}[{len(messages) - 1}].role: must be 'user' or 'tool', the turn the assistant "
            f"answers (got {messages[-1].get('role')!r})"
        )
    return errors


def _check_call(call: Any, at: str, tools: dict[str, dict], broken: set[str], errors: list[str]) -> dict | None:
    """Common shape of an expected call; return its tool when it names one of the pack."""
    if not isinstance(call, dict):
        errors.append(f"{at}: expected an object, got {type(call).__name__}")
        return None
    errors += [f"{at}.{k}: unknown field (known: name, arguments)" for k in call if k not in ("name", "arguments")]
    name = call.get("name")
    if name not in tools:
        if name not in broken:
            errors.append(f"{at}.name: {name!r} is not a tool of this pack (tools: {', '.join(tools)})")
        return None
    if not isinstance(call.get("arguments"), dict):
        errors.append(f"{at}.arguments: an object is required")
        return None
    return tools[name]


def _validate_demo(
    demo: Any, where: str, skill: str, tools: dict[str, dict], broken: set[str], errors: list[str]
) -> None:
    """memory.validate's own demonstration check, so an installed pack is never refused."""
    if not isinstance(demo, dict):
        errors.append(f"{where}: expected an object, got {type(demo).__name__}")
        return
    errors += [f"{where}.{k}: unknown field (known: {', '.join(DEMO_KEYS)})" for k in demo if k not in DEMO_KEYS]
    calls = demo.get("tool_calls")
    skip = tuple(
        f"{where}.tool_calls[{k}]"
        for k, c in enumerate(calls if isinstance(calls, list) else [])
        if isinstance(c, dict) and c.get("name") in broken
    )
    try:
        check_demonstration(skill, tools, demo.get("messages"), calls, demo.get("content"), where)
    except ValidationError as exc:
        errors += [
            e.replace("; add it with add_skill first", "")
            for e in exc.errors
            if not (skip and e.startswith(skip))
        ]


def _validate_case(case: Any, where: str, tools: dict[str, dict], broken: set[str], errors: list[str]) -> None:
    if not isinstance(case, dict):
        errors.append(f"{where}: expected an object, got {type(case).__name__}")
        return
    errors += [f"{where}.{k}: unknown field (known: {', '.join(CASE_KEYS)})" for k in case if k not in CASE_KEYS]
    errors += conversation_errors(case.get("messages"), f"{where}.messages")
    expected = case.get("expected")
    if not isinstance(expected, list) or not expected:
        errors.append(f"{where}.expected: a non-empty list of calls is required")
        return
    for k, call in enumerate(expected):
        at = f"{where}.expected[{k}]"
        tool = _check_call(call, at, tools, broken, errors)
        if tool is not None:
            _validate_expected_args(call["arguments"], tool, f"{at}.arguments", errors)


def expected_argument_errors(tool: dict, options: Any) -> list[str]:
    """Every reason `options` (argument -> acceptable values) is not a well-formed expectation
    for `tool` (flat OpenAI form); empty when it is. Paths start at "arguments"."""
    if not isinstance(options, dict):
        return ["arguments: an object is required"]
    errors: list[str] = []
    _validate_expected_args(options, tool, "arguments", errors)
    return errors


def _validate_expected_args(options: dict, tool: dict, at: str, errors: list[str]) -> None:
    """Each argument: a parameter of the tool, a non-empty list of values valid for it."""
    params = tool["parameters"]
    props = params.get("properties", {})
    required = params.get("required", [])
    for req in required:
        if req not in options:
            errors.append(f"{at}.{req}: required argument has no acceptable values")
    for arg, allowed in options.items():
        if arg not in props:
            errors.append(f"{at}.{arg}: not a parameter of {tool['name']!r} (known: {', '.join(sorted(props)) or 'none'})")
            continue
        _validate_options(allowed, props[arg], f"{at}.{arg}", errors, optional_ok=arg not in required)


def _validate_options(allowed: Any, schema: dict, at: str, errors: list[str], optional_ok: bool) -> None:
    if not isinstance(allowed, list) or not allowed:
        errors.append(f"{at}: a non-empty list of acceptable values is required")
        return
    if "" in allowed and not optional_ok:
        errors.append(f"{at}: \"\" (may be omitted) is not allowed for a required argument")
    if all(v == "" for v in allowed):
        errors.append(f"{at}: lists only \"\"; leave the argument out of expected instead")
    validator = Draft202012Validator(schema)
    for n, value in enumerate(allowed):
        if value == "":
            continue
        literal = _first_literal(value, f"{at}[{n}]", errors)
        if literal is _BAD:
            continue
        for err in validator.iter_errors(literal):
            sub = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in err.absolute_path)
            errors.append(f"{at}[{n}]{sub}: {err.message}")


_BAD = object()


def _first_literal(value: Any, at: str, errors: list[str]) -> Any:
    """A possible-answer value turned into one concrete value (nested dicts: first choices)."""
    if isinstance(value, list):
        items = [_first_literal(v, f"{at}[{n}]", errors) for n, v in enumerate(value)]
        return _BAD if any(x is _BAD for x in items) else items
    if isinstance(value, dict):
        out = {}
        for key, allowed in value.items():
            if not isinstance(allowed, list) or not allowed:
                errors.append(f"{at}.{key}: nested objects list acceptable values per key (a non-empty list)")
                return _BAD
            if "" in allowed:
                continue  # may be omitted: the concrete value leaves it out
            lit = _first_literal(allowed[0], f"{at}.{key}", errors)
            if lit is _BAD:
                return _BAD
            out[key] = lit
        return out
    return value


def first_choice(options: dict) -> dict:
    """The concrete call arguments an expected-argument map stands for: first acceptable value
    of each argument, omitting those that may be left out ("" listed). Used to turn ground truth
    into a demonstration."""
    out = {}
    for arg, allowed in options.items():
        if "" in allowed:
            continue
        out[arg] = _first_literal(next(v for v in allowed if v != ""), arg, [])
    return out


def _norm_messages(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return json.dumps(
        [
            (m.get("role"), " ".join(str(m.get("content", "")).split()).casefold())
            for m in messages
            if isinstance(m, dict)
        ]
    )


def _check_no_leak(demos: list, cases: list, errors: list[str]) -> None:
    """A held-out case that is also a demonstration measures memory, not skill."""
    seen = {}
    for i, demo in enumerate(demos):
        if isinstance(demo, dict):
            seen.setdefault(_norm_messages(demo.get("messages")), i)
    for i, case in enumerate(cases):
        if isinstance(case, dict):
            j = seen.get(_norm_messages(case.get("messages")))
            if j is not None:
                errors.append(f"eval[{i}].messages: same conversation as demonstrations[{j}] (held-out cases must not be demonstrations)")


# ---------------------------------------------------------------- bundled packs


def bundled_packs() -> list[Path]:
    """The packs shipped with the package, sorted by name."""
    folder = Path(str(resources.files("skills") / "packs"))
    return sorted(folder.glob("*.json"))


def bundled_pack(name: str) -> Path:
    """Path of the bundled pack called `name`; LookupError naming the known packs otherwise."""
    for path in bundled_packs():
        if path.stem == name:
            return path
    known = ", ".join(p.stem for p in bundled_packs()) or "none"
    raise LookupError(f"no bundled skill pack {name!r} (known: {known})")
