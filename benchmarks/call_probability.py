"""Could the agent decide "call or answer" by the model's probability of opening a call, instead of
greedy's argmax token? Greedy compares the single opening token against the single likeliest
word of an answer, whose mass is split over many first words; a rule "call only when
P(reply opens with <tool_call>) >= tau" would compare the call against every answer at once.

For each version of a home: P(<tool_call> | prompt) (teacher-forced, every opening token) on the
tool-restraint requests that need no tool and on every skill's held-out requests, all with the
served tools offered, beside whether greedy constrained decoding (what the gate and the agent
do) opened a call. A useful tau keeps the skills' calls (p >= tau) and drops restraint's.

    python benchmarks/call_probability.py --home /work/nightly/shipped --versions v0002,v0004,v0006 \\
        --out benchmarks/results/call_probability.json

Prints a table per version and writes every case as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from agent.decode import Request, common_prefix, complete, prefill  # noqa: E402
from agent.prompt import CALL_OPEN, PromptFormat  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.probes import default_probes  # noqa: E402
from skills.probes.restraint import RestraintProbe  # noqa: E402

TAUS = (0.2, 0.3, 0.5)


def cases(home: str, per_skill: int, restraint_limit: int) -> tuple[list[dict], list[dict]]:
    """(tools, [{kind, request, messages}]) as the gate's tool_restraint suite and skill suites
    ask them, every request with the served tools."""
    with Memory(home) as mem:
        probes, _ = default_probes(home, sets=("tool_restraint",), limits={"tool_restraint": restraint_limit},
                                   memory=mem)
        (rp,) = [p for p in probes if isinstance(p, RestraintProbe)]
        out = [{"kind": "restraint", "request": r["question"],
                "messages": [{"role": "user", "content": r["question"]}]} for r in rp.requests]
        for s in mem.list_skills():
            for c in mem.eval_cases(s["name"])[:per_skill]:
                last = c["messages"][-1].get("content")
                out.append({"kind": s["name"], "request": last if isinstance(last, str) else "",
                            "messages": c["messages"]})
    return rp.tools, out


@torch.no_grad()
def opening_probability(model, prompts: list[list[int]], opening: list[int]) -> list[float]:
    """P(opening | prompt) per prompt; the prompts' shared prefix (the tool schemas) runs once."""
    k = common_prefix(prompts)
    shared = prefill(model, prompts[0][:k]) if k else None
    out = []
    for p in prompts:
        cache = copy.deepcopy(shared) if shared is not None else None
        rest = p[k:] + opening
        logits = model(input_ids=torch.tensor([rest]), position_ids=torch.arange(k, k + len(rest)).unsqueeze(0),
                       past_key_values=cache, use_cache=cache is not None).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        n = len(p) - k
        out.append(float(sum(logp[n - 1 + j, t] for j, t in enumerate(opening)).exp()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True, help="a home whose models/ holds the versions")
    ap.add_argument("--versions", required=True, help="comma-separated versions (e.g. v0002,v0004)")
    ap.add_argument("--per-skill", type=int, default=12, help="held-out requests per skill")
    ap.add_argument("--restraint-limit", type=int, default=21, help="BFCL irrelevance requests (as the gate's)")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tools, items = cases(args.home, args.per_skill, args.restraint_limit)
    result: dict = {"home": args.home, "tools": len(tools), "versions": {}}
    for v in args.versions.split(","):
        path = f"{args.home}/models/{v}"
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        fmt = PromptFormat(tok)
        prompts = [fmt.encode(c["messages"], tools) for c in items]
        probs = opening_probability(model, prompts, tok(CALL_OPEN, add_special_tokens=False)["input_ids"])
        done = complete(model, fmt, [Request(prompt=p, tools=tools, max_new_tokens=8) for p in prompts],
                        batch_size=16)
        rows = [{**{k: c[k] for k in ("kind", "request")}, "p_open": p, "greedy_called": CALL_OPEN in d.text}
                for c, p, d in zip(items, probs, done, strict=True)]
        result["versions"][v] = rows
        print(f"\n{v} ({len(tools)} tools offered)")
        print(f"{'requests':<26}{'n':>4}{'called':>8}{'median p':>10}" + "".join(f"{'kept τ=' + str(t):>12}" for t in TAUS))
        for kind in dict.fromkeys(r["kind"] for r in rows):
            sel = [r for r in rows if r["kind"] == kind]
            called = [r["p_open"] for r in sel if r["greedy_called"]]
            med = f"{statistics.median(called):.2f}" if called else "-"
            kept = "".join(f"{sum(p >= t for p in called):>12}" for t in TAUS)
            print(f"{kind[:25]:<26}{len(sel):>4}{len(called):>8}{med:>10}{kept}")
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
