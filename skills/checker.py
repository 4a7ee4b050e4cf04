"""Judging a model's tool calls against a held-out case (docs/ARCHITECTURE.md, "Judging a
call"; BFCL's AST checker).

`expected` uses BFCL's possible-answer convention: each argument maps to the list of acceptable
values, and "" in that list means the argument may be left out. Acceptable values that are dicts
are themselves in that form (key -> list of acceptable values, "" = may be omitted), recursively,
which is how BFCL writes nested-object arguments; acceptable lists are literal lists whose elements
are compared with the same rules. One rule set for every value, so a case reads the same at any
depth.

Deliberate differences from BFCL: strings are compared after trimming and case-folding only (BFCL
also strips spaces and ",./-_*^"), and there is no "variable" escape for type mismatches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memory.toolschema import function_schema, tool_name


@dataclass(frozen=True)
class CheckResult:
    """Whether the calls are right, and if not, the first reason found (for reports)."""

    correct: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.correct


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def value_matches(value: Any, acceptable: Any) -> bool:
    """True when a generated value equals one acceptable value under the checker's rules."""
    if isinstance(acceptable, str):
        return isinstance(value, str) and value.strip().casefold() == acceptable.strip().casefold()
    if isinstance(acceptable, bool):
        return isinstance(value, bool) and value is acceptable
    if _is_number(acceptable):
        return _is_number(value) and value == acceptable
    if acceptable is None:
        return value is None
    if isinstance(acceptable, list):
        return (
            isinstance(value, list)
            and len(value) == len(acceptable)
            and all(value_matches(v, a) for v, a in zip(value, acceptable, strict=True))
        )
    if isinstance(acceptable, dict):
        return isinstance(value, dict) and _dict_error(value, acceptable) is None
    return False


def _dict_error(value: dict, options: dict) -> str | None:
    """Why a nested object does not match a possible-answer dict; None when it does."""
    for key in value:
        if key not in options:
            return f"unexpected key {key!r}"
    for key, allowed in options.items():
        if key not in value:
            if "" not in allowed:
                return f"missing key {key!r}"
        elif not any(value_matches(value[key], a) for a in allowed):
            return f"key {key!r}: {value[key]!r} is not one of {allowed!r}"
    return None


def call_error(generated: Any, expected: dict, tool: dict) -> str | None:
    """Why one generated call does not satisfy one expected call; None when it does."""
    if not isinstance(generated, dict):
        return f"a call must be an object, got {type(generated).__name__}"
    name = expected["name"]
    if generated.get("name") != name:
        return f"called {generated.get('name')!r}, expected {name!r}"
    args = generated.get("arguments")
    if not isinstance(args, dict):
        return f"{name}: arguments must be an object, got {type(args).__name__}"
    params = function_schema(tool).get("parameters", {})
    props = params.get("properties", {})
    options = expected.get("arguments", {})
    for req in params.get("required", []):
        if req not in args:
            return f"{name}: required argument {req!r} is missing"
    for arg in args:
        if arg not in props:
            return f"{name}: {arg!r} is not a parameter of the tool"
        if arg not in options:
            return f"{name}: argument {arg!r} was not expected"
    for arg, allowed in options.items():
        if arg not in args:
            if "" not in allowed:
                return f"{name}: argument {arg!r} is missing"
            continue
        if not any(value_matches(args[arg], a) for a in allowed):
            shown = [a for a in allowed if a != ""]
            return f"{name}: {arg}={args[arg]!r} is not one of {shown!r}"
    return None


def _perfect_matching(ok: list[list[bool]]) -> list[int] | None:
    """Kuhn's augmenting paths: assign each expected call j a distinct generated call, or None."""
    n = len(ok)
    owner: list[int | None] = [None] * n  # generated index -> expected index

    def augment(j: int, seen: set[int]) -> bool:
        for g in range(n):
            if ok[g][j] and g not in seen:
                seen.add(g)
                if owner[g] is None or augment(owner[g], seen):
                    owner[g] = j
                    return True
        return False

    for j in range(n):
        if not augment(j, set()):
            return None
    return owner  # type: ignore[return-value]


def check_calls(generated: list, expected: list[dict], tools: list[dict]) -> CheckResult:
    """Are `generated` calls exactly the `expected` ones, in any order?

    Raises ValueError when an expected call names a tool missing from `tools`: that is a broken
    case, not a wrong answer.
    """
    by_name = {tool_name(t): t for t in tools}
    for exp in expected:
        if exp["name"] not in by_name:
            raise ValueError(f"expected call names {exp['name']!r}, which is not among the tools")
    if not isinstance(generated, list):
        return CheckResult(False, f"calls must be a list, got {type(generated).__name__}")
    if len(generated) != len(expected):
        return CheckResult(False, f"made {len(generated)} call(s), expected {len(expected)}")
    if len(expected) == 1:
        err = call_error(generated[0], expected[0], by_name[expected[0]["name"]])
        return CheckResult(err is None, err or "")
    errors = [
        [call_error(g, e, by_name[e["name"]]) for e in expected] for g in generated
    ]
    if _perfect_matching([[err is None for err in row] for row in errors]) is not None:
        return CheckResult(True)
    for j, exp in enumerate(expected):
        if all(row[j] is not None for row in errors):
            why = "; ".join(f"call {g}: {row[j]}" for g, row in enumerate(errors))
            return CheckResult(False, f"no call matches expected call {j} ({exp['name']}): {why}")
    return CheckResult(False, "calls match individually but no one-to-one assignment exists")
