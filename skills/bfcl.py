"""Import a skill pack from the Berkeley Function Calling Leaderboard v4 data (docs/ARCHITECTURE.md,
"Judging a call").

The data ships in the PyPI package `bfcl-eval` (JSON lines under bfcl_eval/data/). One BFCL
function with many single-call queries becomes one pack: its ground truth gives demonstrations
(first acceptable value of each argument) and held-out eval cases (the full possible answers).

Decisions:
- tools = the target function only by default; the other candidate functions BFCL puts beside
  each query (distractors, different per query) are dropped, so the pack teaches one tool. With
  `siblings=True` the pack also carries the other functions of the target's own service (the
  `Service_N_` prefix BFCL's live data shares, e.g. Music_3_PlayMedia beside Music_3_LookupMusic),
  so picking the right tool among related ones is part of what is learned and judged.
- The same function appears with slightly different schemas across queries (descriptions, enum
  lists); the pack uses the most frequent one, with enum lists widened to the union over queries.
- Schemas are normalised to JSON Schema: "dict" -> "object", "float" -> "number",
  "tuple" -> "array", "any" -> no type; a parameter whose default is null also admits null
  (BFCL's answers use null as "not given").
- Queries whose ground truth or conversation does not validate against that schema are skipped
  and counted; queries with the same conversation are kept once.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from importlib import resources
from typing import Any

from memory.toolschema import ToolSchemaError, argument_errors, check_tool_schema
from skills.pack import (
    NAME_RE,
    SkillPack,
    conversation_errors,
    expected_argument_errors,
    first_choice,
)

PACKAGE = "bfcl_eval"
INSTALL = "pip install --no-deps bfcl-eval==2026.3.23"
TYPE_MAP = {"dict": "object", "float": "number", "tuple": "array"}


class BfclError(ValueError):
    """The BFCL data is missing, or cannot give the pack asked for."""


def _data_dir():
    try:
        return resources.files(PACKAGE) / "data"
    except ModuleNotFoundError:
        raise BfclError(f"the BFCL data package is not installed; install it with: {INSTALL}") from None


def _read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def categories() -> list[str]:
    """Categories whose data file ships with a possible-answer file."""
    data = _data_dir()
    answers = {p.name for p in (data / "possible_answer").iterdir()}
    names = [p.name for p in data.iterdir() if p.name in answers]
    return sorted(n.removeprefix("BFCL_v4_").removesuffix(".json") for n in names)


def load_entries(category: str = "live_multiple") -> list[dict]:
    """Queries of a category joined with their ground truth: id, question, function, ground_truth."""
    data = _data_dir()
    fname = f"BFCL_v4_{category}.json"
    if not (data / fname).is_file() or not (data / "possible_answer" / fname).is_file():
        raise BfclError(f"no BFCL category {category!r} with answers (known: {', '.join(categories())})")
    answers = {a["id"]: a["ground_truth"] for a in _read_lines(data / "possible_answer" / fname)}
    return [{**q, "ground_truth": answers[q["id"]]} for q in _read_lines(data / fname) if q["id"] in answers]


def in_schema_order(tool: dict, args: dict) -> dict:
    """Arguments in the order the schema declares them: constrained decoding (agent.constrain)
    emits object properties in that order, so a demonstration in BFCL's answer order would teach a
    call the grammar then refuses to let the model write (measured: benchmarks/constrained_decoding.py)."""
    props = list((tool.get("parameters") or {}).get("properties") or {})
    return {**{k: args[k] for k in props if k in args}, **{k: v for k, v in args.items() if k not in props}}


def _single_call(entry: dict) -> tuple[str, dict] | None:
    """(function, acceptable arguments) when the ground truth is exactly one call."""
    gt = entry["ground_truth"]
    if len(gt) != 1 or not isinstance(gt[0], dict) or len(gt[0]) != 1:
        return None
    ((name, args),) = gt[0].items()
    return name, args


def list_bfcl_functions(category: str = "live_multiple") -> list[tuple[str, int]]:
    """Functions by number of single-call queries, most first (ties by name)."""
    counts = Counter(call[0] for e in load_entries(category) if (call := _single_call(e)))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def normalize_schema(schema: Any) -> Any:
    """BFCL's schema dialect -> JSON Schema (see the module docstring)."""
    if not isinstance(schema, dict):
        return schema
    out: dict = {}
    for key, value in schema.items():
        if key == "type":
            types = [TYPE_MAP.get(t, t) for t in (value if isinstance(value, list) else [value])]
            if "any" in types:
                continue
            out["type"] = types if isinstance(value, list) else types[0]
        elif key == "properties" and isinstance(value, dict):
            out[key] = {p: normalize_schema(s) for p, s in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = normalize_schema(value)
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            out[key] = [normalize_schema(s) for s in value]
        else:
            out[key] = value
    if "default" in schema and schema["default"] is None and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def _tool_for(function: str, entries: list[dict]) -> dict:
    """The most frequent normalised schema of `function`, enums widened to the union."""
    variants = [
        {**f, "parameters": normalize_schema(f.get("parameters", {"type": "object"}))}
        for e in entries
        for f in e["function"]
        if f.get("name") == function
    ]
    if not variants:
        raise BfclError(f"no schema for {function!r} among its queries")
    counts = Counter(json.dumps(v, sort_keys=True) for v in variants)
    best = max(counts, key=lambda k: (counts[k], -list(counts).index(k)))
    tool = json.loads(best)
    props = tool.get("parameters", {}).get("properties", {})
    for v in variants:
        for p, s in v.get("parameters", {}).get("properties", {}).items():
            if p in props and "enum" in props[p] and isinstance(s, dict):
                props[p]["enum"] += [x for x in s.get("enum", []) if x not in props[p]["enum"]]
    return tool


SERVICE_RE = re.compile(r"^([A-Za-z]+_\d+)_[A-Za-z0-9]+$")


def _sibling_tools(function: str, entries: list[dict]) -> list[dict]:
    """The other functions of `function`'s service that appear in the category, by name."""
    m = SERVICE_RE.match(function)
    if not m:
        raise BfclError(f"{function!r} has no service prefix (like Music_3_ in Music_3_LookupMusic), "
                        "so it has no siblings; import it without siblings")
    prefix = m.group(1) + "_"
    names = sorted({f["name"] for e in entries for f in e["function"]
                    if f.get("name", "").startswith(prefix) and f["name"] != function})
    if not names:
        raise BfclError(f"{function!r} is the only function of service {m.group(1)} in this category; "
                        "import it without siblings")
    tools = []
    for n in names:
        try:
            tools.append(check_tool_schema(_tool_for(n, entries)))
        except ToolSchemaError as exc:
            raise BfclError(f"sibling {n!r}: its schema does not normalise to a valid one: {exc}") from None
    return tools


def _messages(entry: dict) -> list[dict]:
    """The first turn's messages (a system message included), role and content only."""
    return [{"role": m["role"], "content": m["content"]} for m in entry["question"][0]]


def _too_few(category: str, function: str, usable: int, total: int, asked: str) -> BfclError:
    top = ", ".join(f"{n} ({c})" for n, c in list_bfcl_functions(category)[:10])
    return BfclError(
        f"{function!r} has {usable} usable single-call queries in {category} "
        f"({total} in all); asked for {asked}. Functions with the most single-call queries: {top}"
    )


def import_bfcl(
    category: str = "live_multiple",
    *,
    function: str,
    train: int,
    eval: int,
    seed: int = 0,
    name: str | None = None,
    siblings: bool = False,
) -> SkillPack:
    """A pack for one BFCL function: `train` demonstrations and `eval` held-out cases, disjoint,
    chosen by a seeded shuffle of its single-call queries (with `siblings`, the other functions of
    its service are offered too)."""
    entries = load_entries(category)
    mine = sorted((e for e in entries if (c := _single_call(e)) and c[0] == function), key=lambda e: e["id"])
    asked = f"train {train} + eval {eval} = {train + eval}"
    if not mine:
        raise _too_few(category, function, 0, 0, asked)
    tool = _tool_for(function, mine)
    try:
        tool = check_tool_schema(tool)
    except ToolSchemaError as exc:
        raise BfclError(f"{function!r}: its schema does not normalise to a valid one: {exc}") from None
    usable, seen = [], set()
    for e in mine:
        args = _single_call(e)[1]
        msgs = _messages(e)
        key = json.dumps(msgs, sort_keys=True)
        if key in seen or conversation_errors(msgs) or expected_argument_errors(tool, args):
            continue
        if argument_errors(tool, first_choice(args)):
            continue
        seen.add(key)
        usable.append((msgs, args))
    if len(usable) < train + eval:
        raise _too_few(category, function, len(usable), len(mine), asked)
    random.Random(seed).shuffle(usable)
    demos = [
        {"messages": m, "tool_calls": [{"name": function, "arguments": in_schema_order(tool, first_choice(a))}]}
        for m, a in usable[:train]
    ]
    cases = [{"messages": m, "expected": [{"name": function, "arguments": a}]} for m, a in usable[train : train + eval]]
    pack_name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", function)[:64]
    if not NAME_RE.match(pack_name):
        raise BfclError(f"pack name {pack_name!r} must match {NAME_RE.pattern}; pass name=")
    description = f"{tool['description']} (BFCL v4 {category})".strip()
    tools = [tool, *(_sibling_tools(function, entries) if siblings else [])]
    pack = SkillPack.from_dict(
        {"name": pack_name, "description": description, "tools": tools, "demonstrations": demos, "eval": cases},
        source=f"BFCL {category}/{function}",
    )
    return pack
