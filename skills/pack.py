"""Skill packs: the JSON file a user hands the agent to teach it a tool (docs/ARCHITECTURE.md,
"Data model").

A pack is validated whole before anything uses it (memory.records.SkillPack, the same rules the
memory applies, so whatever a pack holds the memory accepts), and an invalid pack is rejected
with every error at once, each naming the item index and field, so an author fixes a file in one
pass instead of one error per try. `SkillPack` here is the file as plain JSON data.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from memory import records
from memory.files import write_text_atomic
from memory.records import NAME_RE
from memory.toolschema import check_tool_schema
from memory.validate import ValidationError

__all__ = ["NAME_RE", "PackError", "SkillPack", "bundled_pack", "bundled_packs", "conversation_errors",
           "expected_argument_errors", "first_choice", "validate_pack"]


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


# ---------------------------------------------------------------- validation (memory.records' rules)


def validate_pack(d: Any) -> list[str]:
    """Every reason `d` is not a valid pack; empty when it is valid."""
    try:
        records.SkillPack.parse(d)
    except ValidationError as exc:
        return exc.errors
    return []


def conversation_errors(messages: Any, where: str = "messages") -> list[str]:
    """Every reason `messages` cannot precede an assistant turn to judge (an eval case's prompt)."""
    try:
        records.EvalCase.parse({"messages": messages, "expected": [{"name": "-", "arguments": {}}]})
    except ValidationError as exc:
        return [where + e.removeprefix("messages") for e in exc.errors]
    return []


def expected_argument_errors(tool: dict, options: Any) -> list[str]:
    """Every reason `options` (argument -> acceptable values) is not a well-formed expectation
    for `tool` (flat OpenAI form); empty when it is. Paths start at "arguments"."""
    if not isinstance(options, dict):
        return ["arguments: an object is required"]
    return [f"{rel}: {msg}" for rel, msg in records.expected_problems(tool, options)]


def first_choice(options: dict) -> dict:
    """The concrete call arguments an expected-argument map stands for: first acceptable value
    of each argument, omitting those that may be left out ("" listed). Used to turn ground truth
    into a demonstration."""
    out = {}
    for arg, allowed in options.items():
        if "" in allowed:
            continue
        out[arg] = records.first_literal(next(v for v in allowed if v != ""), arg, [])
    return out


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
