"""Errors for bad input, in one vocabulary: every problem names its field as a path
("demonstration.tool_calls[0].arguments.city: required argument is missing"), so a skill author
finds it in their file. The rules themselves are the typed records (memory.records); this module
turns pydantic's findings into those lines and holds the JSON helpers the store writes with.
"""

from __future__ import annotations

import hashlib
import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

# Size limits. A demonstration is a training example and a few-shot prompt: it has to fit a
# context window many times over, so it is bounded far below an episode.
MAX_MESSAGES = 200
MAX_TOOL_CALLS = 32
MAX_TEXT_CHARS = 32_000
MAX_DEMO_BYTES = 128 * 1024
MAX_EPISODE_BYTES = 1024 * 1024

ROLES = ("system", "user", "assistant", "tool")
OUTCOMES = ("success", "failure", "unknown")
SOURCES = ("live", "taught", "imported")
RULE = "sdft_rule"  # the pydantic error type our own rules raise (memory.records.problem)


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


def check_choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ValidationError(f"{where}: must be one of {', '.join(choices)} (got {value!r})")
    return value


# ---------------------------------------------------------------- pydantic → our lines


def join(where: str, loc: tuple) -> str:
    """("messages", 0, "content") under "episode" → "episode.messages[0].content"."""
    out = where
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def lines(exc: PydanticError, where: str, model: type[BaseModel], root: str | None = None) -> list[str]:
    """Every error of a pydantic validation as "<path>: <what is wrong>". `root` names the
    record itself when `where` is empty (a pack's own errors have no prefix)."""
    out: list[str] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] == RULE:
            ctx = err.get("ctx") or {}
            base = loc[: len(loc) - ctx.get("up", 0)]
            for rel, msg in ctx["problems"]:
                path = join(where, base) + rel
                out.append(f"{path or root or 'value'}: {msg}")
            continue
        path = join(where, loc) or root or "value"
        out.append(f"{path}: {_describe(err, model, loc)}")
    return out


def _describe(err: Any, model: type[BaseModel], loc: tuple) -> str:
    kind, got = err["type"], type(err.get("input")).__name__
    owner, annotation = _field_at(model, loc)
    if kind == "missing":
        return f"{_phrase(annotation)} is required"
    if kind == "extra_forbidden" and owner is not None:
        return f"unknown field (known: {', '.join(owner.model_fields)})"
    if kind == "literal_error":
        choices = typing.get_args(_unwrap(annotation))
        return f"must be one of {', '.join(map(str, choices))} (got {err.get('input')!r})"
    if kind in ("string_type", "int_type", "list_type", "dict_type", "model_type", "bool_type",
                "float_type", "model_attributes_type"):
        return f"expected {_phrase(annotation)}, got {got}"
    return err["msg"]


def _unwrap(annotation: Any) -> Any:
    """X from X | None, Annotated[X, ...] and the like."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else annotation
            if len(args) != 1:
                return annotation
        else:
            return annotation


def _field_at(model: type[BaseModel], loc: tuple) -> tuple[type[BaseModel] | None, Any]:
    """(the record that owns the last step of `loc`, that step's annotation)."""
    owner: type[BaseModel] | None = model
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            annotation = _unwrap(args[0]) if args else Any
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            owner = annotation
            field = annotation.model_fields.get(part)
            annotation = field.annotation if field is not None else Any
        else:
            owner, annotation = None, Any
    return owner, _unwrap(annotation)


def _phrase(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation) or annotation
    if origin is str:
        return "a string"
    if origin is int:
        return "an integer"
    if origin is list:
        return "a list"
    if origin is dict or (isinstance(origin, type) and issubclass(origin, BaseModel)):
        return "an object"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(annotation)))
    return "a value"


# ---------------------------------------------------------------- checks by record, for callers


def check_demonstration(skill: str, tools: dict[str, dict], messages: Any, tool_calls: Any,
                        content: Any, where: str = "demonstration") -> tuple[list[dict], str | None]:
    """A demonstration of `skill` (whose tools by name are `tools`) by memory.records'
    rules; returns its (tool_calls, content) as stored."""
    from memory.records import Demonstration

    demo = Demonstration.parse({"messages": messages, "tool_calls": tool_calls, "content": content},
                               where, skill=skill, tools=tools)
    return [c.plain() for c in demo.tool_calls], demo.content


def check_expected(skill: str, tools: dict[str, dict], expected: Any, where: str) -> None:
    """An eval case's possible answers against `skill`'s tools, by memory.records' rules."""
    from memory.records import EvalCase

    try:
        EvalCase.model_validate({"messages": [{"role": "user", "content": "."}], "expected": expected},
                                context={"skill": skill, "tools": tools})
    except PydanticError as exc:
        found = lines(exc, "", EvalCase)
        raise ValidationError([where + e.removeprefix("expected") for e in found]) from None
