"""The evaluation harness: a model answers a skill's held-out cases; the checker judges each call.

Greedy and batched (skills.generation), with no demonstrations in context unless `recall` > 0:
then the k demonstrations memory recalls for the case's request are put before it as earlier
exchanges, laid out by the agent's own `agent.loop.demonstration_messages`. Every case keeps what was
generated and why it was judged as it was, so a report can show the failures, and the gate can
pair the outcomes of two models case by case.

A `SuiteResult` is the common shape of every evaluation (skills here, general probes in
skills.probes): one score per case, keyed by a stable case id, plus the suite's summary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from agent.decode import default_constrain, default_grounding
from agent.grounding import drop_invented
from agent.loop import demonstration_messages  # the agent's own few-shot layout, shared
from agent.prompt import PromptFormat, call_block, call_json
from skills.checker import check_calls
from skills.generation import generate_texts
from skills.pack import first_choice

Recaller = Callable[[list[dict], int], list[dict]]

ACCURACY = "accuracy"


@dataclass
class SuiteResult:
    """One suite evaluated on one model: per-case scores (1/0 for pass/fail suites)."""

    name: str
    kind: str  # "skill" | "multiple_choice" | "instructions" | "drift"
    cases: list[dict]  # each {"id": str, "score": float, "request": str, "answer": str, ...}
    metric: str = ACCURACY
    higher_is_better: bool = True
    model: str | None = None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    constrained: bool | None = None  # tool calls decoded under the schema grammar (None: not recorded)

    @property
    def n(self) -> int:
        return len(self.cases)

    @property
    def binary(self) -> bool:
        return self.metric == ACCURACY

    @property
    def value(self) -> float:
        """The suite's figure: accuracy (fraction) or mean score."""
        return sum(c["score"] for c in self.cases) / self.n if self.cases else float("nan")

    @property
    def correct(self) -> int:
        return sum(1 for c in self.cases if c["score"] >= 1.0)

    def scores(self) -> dict[str, float]:
        return {c["id"]: c["score"] for c in self.cases}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["value"] = self.value
        d["n"] = self.n
        if self.binary:
            d["accuracy"] = self.value
            d["correct"] = self.correct
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SuiteResult:
        return cls(**{k: d[k] for k in ("name", "kind", "cases", "metric", "higher_is_better",
                                        "model", "wall_s", "notes", "constrained") if k in d})


def user_text(messages: list[dict]) -> str:
    """What the user asked in a conversation (the query recall searches with)."""
    return "\n".join(m.get("content") or "" for m in messages if m["role"] == "user")


def with_demonstrations(messages: list[dict], demos: list[dict]) -> list[dict]:
    """The case's conversation with demonstrations put first (after its system message)."""
    if not demos:
        return list(messages)
    system = [m for m in messages[:1] if m["role"] == "system"]
    return [*system, *demonstration_messages(demos), *messages[len(system):]]


def memory_recaller(memory, skill: str) -> Recaller:
    """Recall from a memory.store.Memory, restricted to `skill` (what the agent's recall finds)."""

    def recall(messages: list[dict], k: int) -> list[dict]:
        return memory.recall(user_text(messages), k=k, skill=skill)

    return recall


def answer_budget(fmt: PromptFormat, cases: list[dict], slack: int = 32) -> int:
    """Tokens enough for the longest expected answer plus `slack`: a model that is right
    finishes well inside it, and one that rambles costs no more than that."""
    longest = 0
    for case in cases:
        text = "\n".join(call_block({"name": c["name"], "arguments": first_choice(c.get("arguments", {}))})
                         for c in case["expected"])
        longest = max(longest, len(fmt.tokenizer(text, add_special_tokens=False)["input_ids"]))
    return longest + slack


def evaluate_skill(
    model,
    tokenizer,
    cases: list[dict],
    tools: list[dict],
    *,
    name: str = "skill",
    recall: int = 0,
    recaller: Recaller | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    model_name: str | None = None,
    fmt: PromptFormat | None = None,
    constrain: bool | None = None,
) -> SuiteResult:
    """Answer every case greedily and judge its calls against `expected`.

    constrain: tool calls follow the tools' schemas (agent.constrain), as the agent serves them;
    None: agent.decode.default_constrain() (on unless SDFT_AGENT_CONSTRAIN=0). Recorded in the
    result (`constrained`, and a "decoding: …" note).

    cases: [{"messages", "expected", "id"?}] (ids default to the position). A case is right when
    the reply's calls parse, satisfy the tool schemas and match `expected` (skills.checker).
    """
    if recall and recaller is None:
        raise ValueError("recall > 0 needs a recaller (e.g. memory_recaller(memory, skill))")
    t0 = time.perf_counter()
    fmt = fmt or PromptFormat(tokenizer)
    shown = [recaller(c["messages"], recall) if recall else [] for c in cases]
    conversations = [with_demonstrations(c["messages"], d) for c, d in zip(cases, shown, strict=True)]
    prompts = [fmt.encode(m, tools) for m in conversations]
    budget = max_new_tokens or answer_budget(fmt, cases)
    constrained = default_constrain() if constrain is None else bool(constrain)
    withheld: list[str | None] = []
    texts = generate_texts(model, fmt, prompts, max_new_tokens=budget, batch_size=batch_size,
                           tools=tools, constrain=constrained, conversations=conversations, withheld=withheld)
    grounded = default_grounding()  # as the chat model serves calls: no argument the request never gave
    results = []
    for i, (case, text, demos) in enumerate(zip(cases, texts, shown, strict=True)):
        parsed = fmt.parse(text, tools)
        calls, dropped = drop_invented(parsed.calls, tools, conversations[i]) if grounded else (parsed.calls, [])
        if parsed.invalid:
            ok, reason = False, f"invalid call: {parsed.invalid[0].error}"
        else:
            verdict = check_calls(calls, case["expected"], tools)
            ok, reason = verdict.correct, verdict.reason
        results.append({
            "id": str(case.get("id", i)),
            "score": 1.0 if ok else 0.0,
            "correct": ok,
            "reason": reason,
            "request": user_text(case["messages"]),
            "answer": "\n".join(call_json(c) for c in calls) or text,
            "calls": calls,
            **({"dropped": dropped} if dropped else {}),
            "invalid": [{"raw": c.raw, "error": c.error} for c in parsed.invalid],
            "text": text,
            "expected": case["expected"],
            "recalled": [d.get("id") for d in demos],
            "prompt_tokens": len(prompts[i]),
        })
    notes = [f"recall {recall}"] if recall else []
    notes.append(f"decoding: {'constrained' if constrained else 'free'}")
    mark_withheld(results, withheld, notes)
    if n := sum(len(d["arguments"]) for c in results for d in c.get("dropped", [])):
        notes.append(f"{n} optional argument(s) not in the request were left out of the calls")
    return SuiteResult(name=name, kind="skill", cases=results, model=model_name,
                       wall_s=time.perf_counter() - t0, constrained=constrained, notes=notes)


def mark_withheld(cases: list[dict], withheld: list[str | None] | None, notes: list[str]) -> None:
    """Keep on each case the call grounded-calls decoding did not make (agent.grounding), and
    count them in the notes: the gate report shows what the model wanted to write."""
    if not withheld:
        return
    for case, w in zip(cases, withheld, strict=True):
        if w is not None:
            case["withheld"] = w
    if n := sum(w is not None for w in withheld):
        notes.append(f"{n} call(s) not grounded in the request were withheld; the reply is the answer without tools")


def evaluate_memory_skill(model, tokenizer, memory, skill: str, **kwargs) -> SuiteResult:
    """A skill stored in memory: its held-out cases and tools; recall from its demonstrations."""
    cases = memory.eval_cases(skill)
    if not cases:
        raise ValueError(f"skill {skill!r} has no held-out eval cases in memory")
    return evaluate_skill(model, tokenizer, cases, memory.tools_for(skill), name=skill,
                          recaller=memory_recaller(memory, skill), **kwargs)


def evaluate_pack(model, tokenizer, pack, **kwargs) -> SuiteResult:
    """A skill pack not (necessarily) installed: recall, when asked for, searches its own
    demonstrations through a throwaway memory, so it ranks them exactly as the agent would."""
    import tempfile

    from memory.store import Memory
    from skills.install import install_pack

    if not kwargs.get("recall"):
        return evaluate_skill(model, tokenizer, pack.eval, pack.tools, name=pack.name, **kwargs)
    with tempfile.TemporaryDirectory(prefix="sdft-eval-") as tmp, Memory(tmp) as mem:
        install_pack(mem, pack)
        return evaluate_skill(model, tokenizer, pack.eval, pack.tools, name=pack.name,
                              recaller=memory_recaller(mem, pack.name), **kwargs)
