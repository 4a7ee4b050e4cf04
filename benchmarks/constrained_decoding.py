"""Schema-constrained tool calls vs free decoding, on the real model: accuracy, invalid calls and
their reasons, tokens/s; plus the grammar library choice (llguidance vs xgrammar) on our schemas.

    SDFT_AGENT_HOME=/work/homes/constrain flock /tmp/sdft-heavy.lock \\
        .venv/bin/python benchmarks/constrained_decoding.py [--cases 10] [--versions base,VERSION]

Suites: every bundled skill pack and three BFCL live_multiple functions (needs
`pip install --no-deps bfcl-eval==2026.3.23`), `--cases` held-out cases each (seeded sample).
Versions: the base model and the newest learned version in the home (or `--versions`). Each
(version, suite) is evaluated greedily through skills.evaluate with constraints on and off.
Throughput: greedy completions of the first 8 unit_convert prompts at batch 1 and batch 8,
constrained and free interleaved, best of `--repeat` (the machine is shared).
Library comparison: each suite's tool set compiled by both libraries (the auto grammar: free
text or a call), every expected call of the suite replayed token by token (mask time per token,
accepted?), and bad variants of each (a float for an integer, a value outside an enum, an
undeclared argument, a missing required one, padded whitespace) that must be refused.
xgrammar is looked up on PYTHONPATH (installed with --no-deps; skipped when absent).
Writes benchmarks/results/constrained_decoding.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.constrain import JSON_OPTIONS, grammars_for, lark_grammar  # noqa: E402
from agent.decode import Request, complete  # noqa: E402
from agent.loading import load  # noqa: E402
from agent.prompt import PromptFormat, call_block  # noqa: E402
from memory.models import ModelStore  # noqa: E402
from memory.toolschema import function_schema  # noqa: E402
from skills.bfcl import in_schema_order  # noqa: E402
from skills.evaluate import evaluate_skill  # noqa: E402
from skills.pack import SkillPack, bundled_packs, first_choice  # noqa: E402

OUT = Path(__file__).parent / "results" / "constrained_decoding.json"
BFCL_FUNCTIONS = ["Weather_1_GetWeather", "Events_3_FindEvents", "Movies_3_FindMovies"]
REASONS = [  # (category, pattern in the harness's reason / parser's error), first match wins
    ("unterminated block", r"unterminated"),
    ("malformed JSON", r"malformed JSON|must be a JSON object|must be a JSON object"),
    ("unknown tool", r"unknown tool"),
    ("undeclared argument", r"not a parameter"),
    ("missing required argument", r"required argument is missing"),
    ("value outside enum", r"is not one of"),
    ("wrong type", r"is not of type"),
]


def reason_of(error: str) -> str:
    return next((name for name, pat in REASONS if re.search(pat, error)), "other schema error")


def suites(n: int, seed: int) -> list[tuple[str, list[dict], list[dict]]]:
    """[(name, tools, cases)]: bundled packs, then BFCL functions (when the data is installed)."""
    out = []
    rng = random.Random(seed)
    for path in bundled_packs():
        pack = SkillPack.load(path)
        out.append((pack.name, pack.tools, rng.sample(pack.eval, min(n, len(pack.eval)))))
    try:
        from skills.bfcl import import_bfcl

        for fn in BFCL_FUNCTIONS:
            pack = import_bfcl("live_multiple", function=fn, train=0, eval=n, seed=seed)
            out.append((f"bfcl:{fn}", pack.tools, pack.eval))
    except Exception as exc:  # noqa: BLE001 - reported, the rest still runs
        print(f"BFCL suites skipped: {exc}", file=sys.stderr)
    return out


def accuracy_rows(model, tok, version: str, suite_list, batch_size: int) -> list[dict]:
    rows = []
    for name, tools, cases in suite_list:
        for constrain in (False, True):
            r = evaluate_skill(model, tok, cases, tools, name=name, batch_size=batch_size,
                               model_name=version, constrain=constrain)
            invalid = [c for c in r.cases if c["invalid"]]
            no_call = [c for c in r.cases if not c["invalid"] and not c["calls"]]
            reasons: dict[str, int] = {}
            for c in invalid:
                key = reason_of(c["invalid"][0]["error"])
                reasons[key] = reasons.get(key, 0) + 1
            rows.append({"version": version, "suite": name, "constrained": constrain, "n": r.n,
                         "accuracy": r.value, "invalid": len(invalid) / r.n, "no_call": len(no_call) / r.n,
                         "invalid_reasons": reasons, "wall_s": r.wall_s})
            print(f"  {version:>22} {name:<28} {'on ' if constrain else 'off'} acc {r.value:6.1%}  "
                  f"invalid {len(invalid) / r.n:6.1%}  {reasons or ''}", flush=True)
    return rows


def throughput(model, fmt, tools, prompts, repeat: int, max_new_tokens: int) -> dict:
    """Generated tokens per second, greedy, at batch 1 (one request at a time) and batch 8."""
    best: dict[str, float] = {}
    tokens: dict[str, int] = {}
    for _ in range(repeat):
        for bs in (1, 8):
            for constrain in (False, True):
                reqs = [Request(prompt=p, tools=tools, max_new_tokens=max_new_tokens, constrain=constrain)
                        for p in prompts]
                t0 = time.perf_counter()
                if bs == 1:
                    done = [complete(model, fmt, [r])[0] for r in reqs]
                else:
                    done = complete(model, fmt, reqs, batch_size=bs)
                dt = time.perf_counter() - t0
                n = sum(len(c.ids) for c in done)
                key = f"batch{bs}_{'on' if constrain else 'off'}"
                tps = n / dt
                if tps > best.get(key, 0):
                    best[key], tokens[key] = tps, n
    out = {k: {"tokens_per_s": v, "tokens": tokens[k]} for k, v in best.items()}
    for bs in (1, 8):
        off, on = best[f"batch{bs}_off"], best[f"batch{bs}_on"]
        out[f"batch{bs}_cost"] = 1 - on / off
    return out


def _bad_variants(tool: dict, args: dict) -> list[tuple[str, dict | str]]:
    """Calls of `tool` that must be refused, made from a valid `args`."""
    props = function_schema(tool)["parameters"].get("properties", {})
    required = function_schema(tool)["parameters"].get("required", [])
    out: list[tuple[str, dict | str]] = [("undeclared argument", {**args, "zzz_extra": 1})]
    for k, spec in props.items():
        if spec.get("type") == "integer" and k in args:
            out.append(("float for integer", {**args, k: float(args[k]) if isinstance(args[k], int) else 1.0}))
            break
    for k, spec in props.items():
        if "enum" in spec and k in args:
            out.append(("value outside enum", {**args, k: "zz_not_in_enum"}))
            break
    if required and required[0] in args:
        out.append(("missing required", {a: v for a, v in args.items() if a != required[0]}))
    return out


def library_rows(tok, fmt, suite_list, n_cases: int) -> list[dict]:
    eot = fmt.end_of_turn_id
    rows = []
    libs = {"llguidance": _LlgRunner(tok, eot)}
    try:
        libs["xgrammar"] = _XgrRunner(tok, eot)
    except ImportError as exc:
        print(f"xgrammar not importable ({exc}); library comparison has llguidance only", file=sys.stderr)
    for name, tools, cases in suite_list:
        good, bad = [], []
        for case in cases[:n_cases]:
            by_name = {function_schema(t)["name"]: t for t in tools}
            # in the schema's property order: the grammar emits properties in declared order
            calls = [{"name": c["name"], "arguments": in_schema_order(function_schema(by_name[c["name"]]),
                                                                       first_choice(c.get("arguments", {})))}
                     for c in case["expected"]]
            good.append("\n".join(call_block(c) for c in calls))
            for label, args in _bad_variants(by_name[calls[0]["name"]], calls[0]["arguments"]):
                bad.append((label, call_block({"name": calls[0]["name"], "arguments": args})))
            padded = call_block(calls[0]).replace('": ', '":   ', 1)
            bad.append(("padded whitespace", padded))
        for lib, runner in libs.items():
            t0 = time.perf_counter()
            runner.compile(tools)
            compile_ms = 1000 * (time.perf_counter() - t0)
            accepted, mask_s, steps = 0, 0.0, 0
            for text in good:
                ok, dt, k = runner.replay(tok(text, add_special_tokens=False)["input_ids"] + [eot])
                accepted += ok
                mask_s += dt
                steps += k
            refused: dict[str, list[int]] = {}
            for label, text in bad:
                ok, _, _ = runner.replay(tok(text, add_special_tokens=False)["input_ids"] + [eot])
                r = refused.setdefault(label, [0, 0])
                r[0] += not ok
                r[1] += 1
            rows.append({"library": lib, "suite": name, "compile_ms": compile_ms,
                         "mask_us_per_token": 1e6 * mask_s / max(steps, 1),
                         "expected_accepted": f"{accepted}/{len(good)}",
                         "bad_refused": {k: f"{a}/{b}" for k, (a, b) in refused.items()}})
            print(f"  {lib:<10} {name:<28} compile {compile_ms:7.1f} ms  mask {rows[-1]['mask_us_per_token']:7.1f} µs/token  "
                  f"accepted {accepted}/{len(good)}  refused {rows[-1]['bad_refused']}", flush=True)
    return rows


class _LlgRunner:
    def __init__(self, tok, eot):
        import llguidance
        import llguidance.torch as llt
        import torch

        self.llg, self.llt, self.torch = llguidance, llt, torch
        self.grammars = grammars_for(tok, eot)
        self.ll_tok = self.grammars.ll_tokenizer

    def compile(self, tools):
        g = self.llg.LLMatcher.grammar_from_lark(lark_grammar(tools, "auto"))
        self.proto = self.llg.LLMatcher(self.ll_tok, g, log_level=0)

    def replay(self, ids):
        m = self.proto.deep_copy()
        mask = self.llt.allocate_token_bitmask(1, self.ll_tok.vocab_size)
        dt = 0.0
        for k, t in enumerate(ids):
            t0 = time.perf_counter()
            self.llt.fill_next_token_bitmask(m, mask, 0)
            dt += time.perf_counter() - t0
            if not (mask[0, t // 32] >> (t % 32)) & 1 or not m.consume_token(t):
                return False, dt, k + 1
        return True, dt, len(ids)


class _XgrRunner:
    """xgrammar's structural tag for the same language: free text, or `<tool_call>` blocks
    with a name and JSON arguments per tool."""

    def __init__(self, tok, eot):
        import xgrammar as xgr

        self.xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok), stop_token_ids=[eot])
        self.compiler = xgr.GrammarCompiler(self.info)

    def compile(self, tools):
        tags = []
        for t in tools:
            fn = function_schema(t)
            tags.append({"type": "tag", "begin": f'<tool_call>\n{{"name": "{fn["name"]}", "arguments": ',
                         "content": {"type": "json_schema", "json_schema": fn.get("parameters") or {"type": "object"}},
                         "end": "}\n</tool_call>"})
        tag = {"type": "structural_tag", "format": {"type": "triggered_tags", "triggers": ["<tool_call>"],
                                                    "tags": tags, "at_least_one": False, "stop_after_first": False}}
        self.compiled = self.compiler.compile_structural_tag(json.dumps(tag))

    def replay(self, ids):
        m = self.xgr.GrammarMatcher(self.compiled)
        mask = self.xgr.allocate_token_bitmask(1, self.info.vocab_size)
        dt = 0.0
        for k, t in enumerate(ids):
            t0 = time.perf_counter()
            m.fill_next_token_bitmask(mask)
            dt += time.perf_counter() - t0
            if not (mask[0, t // 32] >> (t % 32)) & 1 or not m.accept_token(t):
                return False, dt, k + 1
        return True, dt, len(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", default=os.environ.get("SDFT_AGENT_HOME"))
    ap.add_argument("--versions", default=None, help="comma-separated; default: base and the newest learned version")
    ap.add_argument("--cases", type=int, default=10, help="held-out cases per suite")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2, help="throughput runs (best kept)")
    ap.add_argument("--speed-tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"

    t_all = time.perf_counter()
    store = ModelStore(args.home, quiet=True)
    infos = store.versions()
    if args.versions:
        versions = args.versions.split(",")
    else:
        base = [v.version for v in infos if v.kind == "base"][:1]
        learned = [v.version for v in infos if v.kind != "base"][-1:]
        versions = base + learned
    print(f"versions: {versions} (learned: {'yes' if len(versions) > 1 else 'none in this home'})")
    suite_list = suites(args.cases, args.seed)
    print(f"suites: {[(n, len(c)) for n, _, c in suite_list]}")

    result: dict = {"versions": versions, "cases_per_suite": args.cases, "json_options": JSON_OPTIONS,
                    "threads": None, "accuracy": [], "throughput": {}, "libraries": []}
    fmt = None
    for i, version in enumerate(versions):
        model, tok = load(version, store=store)
        import torch

        result["threads"] = torch.get_num_threads()
        fmt = PromptFormat(tok)
        if i == 0:
            print("grammar libraries, on our schemas (SmolLM2 tokenizer):")
            result["libraries"] = library_rows(tok, fmt, suite_list, args.cases)
            _, tools, cases = next(s for s in suite_list if s[0] == "unit_convert")
            prompts = [fmt.encode(c["messages"], tools) for c in cases[:8]]
            print("throughput (greedy, tokens/s):")
            result["throughput"] = throughput(model, fmt, tools, prompts, args.repeat, args.speed_tokens)
            for k, v in result["throughput"].items():
                print(f"  {k:<14} {v if isinstance(v, float) else v['tokens_per_s']:.3f}")
        print(f"accuracy, {version}:")
        result["accuracy"] += accuracy_rows(model, tok, version, suite_list, args.batch_size)
        del model
    result["wall_s"] = time.perf_counter() - t_all
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print_table(result)
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)")


def print_table(result: dict) -> None:
    print("\n| version | suite | n | accuracy off → on | invalid off → on | invalid reasons (off) |")
    print("|---|---|---|---|---|---|")
    rows = result["accuracy"]
    for off in (r for r in rows if not r["constrained"]):
        on = next(r for r in rows if r["constrained"] and r["suite"] == off["suite"] and r["version"] == off["version"])
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(off["invalid_reasons"].items())) or "-"
        print(f"| {off['version']} | {off['suite']} | {off['n']} | {off['accuracy']:.0%} → {on['accuracy']:.0%} "
              f"| {off['invalid']:.0%} → {on['invalid']:.0%} | {reasons} |")
    tp = result["throughput"]
    if tp:
        print("\n| batch | tokens/s free | tokens/s constrained | cost |")
        print("|---|---|---|---|")
        for bs in (1, 8):
            print(f"| {bs} | {tp[f'batch{bs}_off']['tokens_per_s']:.1f} | {tp[f'batch{bs}_on']['tokens_per_s']:.1f} "
                  f"| {tp[f'batch{bs}_cost']:+.1%} |")


if __name__ == "__main__":
    main()
