"""A stricter grounding rule on saved replies: every *required* argument must take its value from
the request (instead of at least one value of the call), measured before choosing it. No model
runs: the rule reads the calls the gate saved.

Made for issue 12: the wrong calls left after grounding borrow one number from the request and
invent the rest ("need headphone I can get today, no more than 400 dollars" →
`add_days(date="2023-04-10", days=400)`; "Is lp-102 in stock?" →
`convert_units(value=102, from_unit="millimeter", …)`). A rule that asks every required value to
be grounded catches those, and also every right call whose required value the model normalised
("28 gal in ml?" → `from_unit="gallon"`). Asked of free-text values only (a value the schema
enumerates must be normalised), it keeps those and catches fewer.

    python benchmarks/strict_grounding.py --home /work/nightly/grounded --home /work/chain/s30n4 \\
        --home /work/chain/g6 --out benchmarks/results/strict_grounding.json

Counts each (home, version, suite) once, as grounded_arguments.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.grounding import Source, calls_in, ungrounded  # noqa: E402
from memory.toolschema import function_schema, tool_name  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grounded_arguments import open_homes, saved_suites  # noqa: E402

RULES = ("strict", "strict_free_text")  # every required value; only those without an enum


def invents_required(calls: list[tuple[str, dict]], tools: dict[str, dict], request: str,
                     free_text_only: bool = False) -> bool:
    """Whether any call gives a required argument a value the request never mentions (with
    `free_text_only`, arguments whose schema lists the allowed values are not asked: the model
    must normalise them, "gal" → "gallon")."""
    source = Source.of([{"role": "user", "content": request}], tools)
    for name, args in calls:
        tool = tools.get(name)
        if tool is None:
            continue
        parameters = function_schema(tool).get("parameters") or {}
        required = set(parameters.get("required") or [])
        props = parameters.get("properties") or {}
        for k, v in args.items():
            if k not in required or (free_text_only and "enum" in (props.get(k) or {})):
                continue
            if source.value(v) is False:
                return True
    return False


def tally(counts: dict, calls: list[tuple[str, dict]], tools: dict[str, dict], request: str, example: dict) -> None:
    """Count under each rule whether these calls invent a required value; keep the example if any does."""
    hit = {r: invents_required(calls, tools, request, r == "strict_free_text") for r in RULES}
    for r in RULES:
        counts[r] += hit[r]
    if any(hit.values()):
        counts["examples"].append({**example, "request": request, **hit})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", action="append", required=True, help="a home whose gate reports to read (repeat)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    skills: dict[str, dict] = {}
    restraint = {"wrong_calls": 0, **dict.fromkeys(RULES, 0), "examples": []}
    for home, memory in open_homes(args.home):
        every_tool = {tool_name(t): t for t in memory.tools_for()}
        for _report, version, suite in saved_suites(home, kinds=("skill", "tool_restraint")):
            if suite["kind"] == "skill":
                row = skills.setdefault(suite["name"], {"right_calls": 0, **dict.fromkeys(RULES, 0), "examples": []})
                tools = {tool_name(t): t for t in memory.tools_for(suite["name"])}
                for c in suite["cases"]:
                    if c["correct"] and c.get("calls"):
                        row["right_calls"] += 1
                        tally(row, [(x["name"], x["arguments"]) for x in c["calls"]], tools, c["request"],
                              {"version": version, "calls": c["calls"]})
                continue
            for c in suite["cases"]:
                calls = calls_in(c.get("answer", ""))
                user = [{"role": "user", "content": c["request"]}]
                # wrong calls the present rule serves (reports older than it hold some it withholds)
                if c["correct"] or not calls or ungrounded(c["answer"], user):
                    continue
                restraint["wrong_calls"] += 1
                tally(restraint, calls, every_tool, c["request"], {"home": home.name, "version": version, "calls": calls})
    print(f"{'right calls withheld':36} {'of':>5} {'strict':>7} {'free text only':>15}")
    for name, row in skills.items():
        print(f"{name[:36]:36} {row['right_calls']:5} {row['strict']:7} {row['strict_free_text']:15}")
    total = [sum(r[k] for r in skills.values()) for k in ("right_calls", *RULES)]
    print(f"{'all skills':36} {total[0]:5} {total[1]:7} {total[2]:15}")
    print(f"{'restraint: served wrong calls caught':36} {restraint['wrong_calls']:5} {restraint['strict']:7} "
          f"{restraint['strict_free_text']:15}")
    Path(args.out).write_text(json.dumps({"homes": args.home, "skills": skills, "restraint": restraint}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
