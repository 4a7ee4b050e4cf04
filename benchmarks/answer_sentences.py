"""Answers in sentences: after a tool result, does the user get readable text that states the
result? Measured on the bundled skills' held-out cases (issue 13: goal >= 90% per skill).

    SDFT_AGENT_HOME=/work/homes/server flock /tmp/sdft-heavy.lock \
        .venv/bin/python benchmarks/answer_sentences.py --per-skill 20

Each case: the user's question, the correct call (the first acceptable value of every argument
of the case's expected call), the bundled tool's real result, then the model's answer turn
(greedy, constrained decoding, the skill's tools offered, as the server generates it). Two
rates per skill, each "prose with no markup and every key value of the result" (agent.answer):
- model: the model's own answer turn;
- served: what the user gets (agent.answer.answer_after_tools: the model's answer when it
  passes, else the grounded sentence), plus an independent check that it holds no '<', '{' or
  '|>' at all.
Writes benchmarks/results/answer_sentences.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from agent.answer import answer_after_tools, is_grounded, is_prose
from agent.decode import Request, complete
from agent.loading import load
from agent.prompt import PromptFormat
from memory.models import ModelStore
from skills.tools import implementation

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "answer_sentences.json"
SKILLS = ("date_math", "unit_convert", "catalog")


def gold_call(expected: dict) -> dict:
    args = {}
    for k, values in expected["arguments"].items():
        value = next((v for v in values if v != ""), None)
        if value is not None:
            args[k] = value
    return {"name": expected["name"], "arguments": args}


def cases(skill: str, n: int) -> list[dict]:
    pack = json.loads((ROOT / "skills" / "packs" / f"{skill}.json").read_text())
    tools = implementation(skill)
    out = []
    for case in pack["eval"]:
        if len(case["expected"]) != 1:
            continue
        call = gold_call(case["expected"][0])
        try:
            result = json.dumps(tools[call["name"]](**call["arguments"]), ensure_ascii=False)
        except Exception:  # noqa: BLE001 - a case the tool refuses is not an answer case
            continue
        messages = [*case["messages"], {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "name": call["name"], "content": result}]
        out.append({"messages": messages, "tools": pack["tools"], "call": call, "result": result})
        if len(out) == n:
            break
    return out


def clean(text: str) -> bool:
    return not any(m in text for m in ("<", "{", "|>"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-skill", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    home = os.environ.get("SDFT_AGENT_HOME")
    version = ModelStore(home, quiet=True).resolve().version
    model, tok = load(version, home=home)
    fmt = PromptFormat(tok)
    rows, examples = [], []
    for skill in SKILLS:
        todo = cases(skill, args.per_skill)
        done = complete(model, fmt, [Request(prompt=fmt.encode(c["messages"], c["tools"]), tools=c["tools"],
                                             tool_choice="auto", max_new_tokens=args.max_tokens) for c in todo],
                        batch_size=8)
        model_ok = served_ok = kept = 0
        for c, d in zip(todo, done, strict=True):
            parsed = fmt.parse(d.text, c["tools"])
            reply = parsed.content if not parsed.calls else ""
            result = [{"name": c["call"]["name"], "arguments": c["call"]["arguments"], "content": c["result"]}]
            answer = answer_after_tools(reply, result)
            model_ok += is_prose(reply) and is_grounded(reply, c["result"])
            served_ok += is_prose(answer.text) and is_grounded(answer.text, c["result"]) and clean(answer.text)
            kept += answer.source == "model"
            if len(examples) < 3 * len(SKILLS) and len([e for e in examples if e["skill"] == skill]) < 3:
                examples.append({"skill": skill, "question": c["messages"][0]["content"], "result": c["result"],
                                 "model": d.text, "served": answer.text, "source": answer.source})
        n = len(todo)
        rows.append({"skill": skill, "cases": n, "model_ok": model_ok / n, "served_ok": served_ok / n,
                     "model_answer_kept": kept / n})
    table = Table(title=f"Answers after a tool result ({version}, held-out cases, greedy, constrained)")
    for col in ("skill", "cases", "model's own answer ok", "served answer ok", "model answer kept"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["skill"], str(r["cases"]), f"{r['model_ok']:.0%}", f"{r['served_ok']:.0%}",
                      f"{r['model_answer_kept']:.0%}")
    Console().print(table)
    for e in examples[:6]:
        Console().print(f"[dim]{e['skill']}[/dim] {e['question']!r}\n  model:  {e['model']!r}\n  served: {e['served']!r}")
    RESULTS.write_text(json.dumps({"model": version, "max_new_tokens": args.max_tokens, "rows": rows,
                                   "examples": examples}, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
