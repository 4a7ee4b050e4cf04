"""Open-ended answer health: everyday requests, answered greedily, read for the ways a small model
breaks after fine-tuning.

A model that learned a tool too hard stops answering people: it loops, writes markup or special
tokens (`<p> <i> <i>`, `<#HUGGESURE#>`), emits tool-call JSON where prose was asked, or collapses
to a word or two ("SmolLM" for "Say hello."). Each answer is judged healthy or not, with the
flags that fired; the suite's figure is the share of healthy answers.

The flags are deliberately coarse and each is tested on fixed texts (tests/test_gate_suites.py):
- empty: fewer than 3 words;
- loop: one line or sentence repeated 3+ times, or (20+ words) fewer than half of its word 4-grams distinct,
  or a single word making up over 40% of a 12+-word answer;
- markup: any `<|…|>` / `<#…#>` special-token debris, or 2+ HTML-like tags;
- tool_json: a `<tool_call>` block or a JSON object with "name"/"arguments" where prose was asked;
- collapsed: with the champion's answer as reference, under a quarter of its words when it had 12+.
"""

from __future__ import annotations

import json
import re
import time

from agent.prompt import PromptFormat
from skills.evaluate import SuiteResult

KIND = "open_health"
MAX_NEW_TOKENS = 96
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_SPECIAL = re.compile(r"<\|[^<>]{0,40}\|>|<#[^<>]{0,40}#>|<\|?(?:im_start|im_end|endoftext)\|?>")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]{0,10}\s*/?>")

# Everyday requests written here: explain, list, describe, greet, short letters, advice, recipes.
# None of them appears in skills.retention (what a learner may train on): tests check that.
PROMPTS = [
    "Explain how a rainbow forms.",
    "Explain what a computer virus is to a child.",
    "Explain why we have seasons.",
    "Why do prices go up over the years?",
    "Explain how a bicycle stays upright.",
    "Explain what the internet is.",
    "List four things to bring on a camping trip.",
    "List three ways to reduce stress.",
    "List five common kitchen tools.",
    "List three reasons to learn a second language.",
    "List some healthy snacks for work.",
    "List three famous painters.",
    "Describe a busy city street in the morning.",
    "Describe the taste of a lemon.",
    "Describe what a library looks like inside.",
    "Describe a thunderstorm.",
    "Describe your ideal weekend.",
    "Describe an elephant to someone who has never seen one.",
    "Say hello.",
    "Greet a customer who just walked into a bakery.",
    "Say good morning to a team starting a meeting.",
    "Welcome a new student to the class.",
    "Write a short letter to a neighbour asking them to water your plants.",
    "Write a short note congratulating a coworker on a promotion.",
    "Write a short email telling a colleague you will be late.",
    "Write a short letter inviting a friend to dinner.",
    "Write a short apology to a friend for missing their party.",
    "Give me three tips for sleeping better.",
    "How often should I water a cactus?",
    "What should I do if I feel tired in the afternoon?",
    "How do I brew coffee with a French press?",
    "How do I make a simple salad?",
    "What are good habits for saving money?",
    "Tell me a fun fact about giraffes.",
    "Tell me a short story about a lost dog.",
    "What should a beginner cook first?",
    "Why is exercise good for you?",
    "What makes a good friend?",
    "How do airplanes fly?",
    "Suggest a name for a coffee shop and say why.",
]


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def flags(answer: str, reference: str | None = None) -> list[str]:
    """The degeneracy flags that fire for `answer` ([] = healthy); `reference` is the champion's
    answer to the same request, for the length-collapse check."""
    out = []
    w = words(answer)
    lower = [x.lower() for x in w]
    if len(w) < 3:
        out.append("empty")
    segments = [" ".join(words(x.lower())) for x in re.split(r"[\n.!?]+", answer)]
    segments = [x for x in segments if x]
    loop = any(segments.count(x) >= 3 for x in set(segments))
    if len(w) >= 20:
        grams = [tuple(lower[i: i + 4]) for i in range(len(lower) - 3)]
        loop = loop or len(set(grams)) < 0.5 * len(grams)
    if len(w) >= 12:
        top = max(lower.count(x) for x in set(lower))
        loop = loop or top > 0.4 * len(w)
    if loop:
        out.append("loop")
    if _SPECIAL.search(answer) or len(_TAG.findall(answer)) >= 2:
        out.append("markup")
    if "<tool_call>" in answer or _looks_like_call(answer):
        out.append("tool_json")
    if reference is not None:
        ref = len(words(reference))
        if ref >= 12 and len(w) < 0.25 * ref:
            out.append("collapsed")
    return out


def _looks_like_call(text: str) -> bool:
    t = text.strip()
    start = t.find("{")
    if start < 0:
        return False
    try:
        obj, _ = json.JSONDecoder().raw_decode(t[start:])
    except ValueError:
        return bool(re.search(r'\{\s*"(name|arguments)"\s*:', t))
    return isinstance(obj, dict) and ("name" in obj or "arguments" in obj)


class OpenHealthProbe:
    """Everyday requests; an answer scores 1 when no degeneracy flag fires."""

    kind = KIND

    def __init__(self, name: str = "open_answers", prompts: list[str] | None = None,
                 max_new_tokens: int = MAX_NEW_TOKENS):
        self.name, self.max_new_tokens = name, max_new_tokens
        self.requests = list(PROMPTS if prompts is None else prompts)
        if not self.requests:
            raise ValueError(f"{name}: needs at least one request")

    def items_key(self) -> list:
        return [self.max_new_tokens, self.requests]

    def prompts(self, fmt: PromptFormat) -> list[list[int]]:
        return [fmt.encode([{"role": "user", "content": r}]) for r in self.requests]

    def run(self, model, tokenizer, *, batch_size: int = 8, model_name: str | None = None,
            generations=None, reference: SuiteResult | None = None, **_) -> SuiteResult:
        from skills.probes.generated import greedy_texts

        t0 = time.perf_counter()
        fmt = PromptFormat(tokenizer)
        texts = greedy_texts(model, fmt, self.prompts(fmt), self.max_new_tokens, batch_size, generations)
        return self.score(texts, reference=reference, model_name=model_name, wall_s=time.perf_counter() - t0)

    def score(self, texts: list[str], *, reference: SuiteResult | None = None,
              model_name: str | None = None, wall_s: float = 0.0) -> SuiteResult:
        refs = {c["id"]: c["answer"] for c in reference.cases} if reference is not None else {}
        cases = []
        for i, (request, text) in enumerate(zip(self.requests, texts, strict=True)):
            cid = f"o{i:02d}"
            fired = flags(text, refs.get(cid))
            cases.append({"id": cid, "score": 0.0 if fired else 1.0, "correct": not fired, "request": request,
                          "answer": text, "flags": fired, "words": len(words(text)),
                          "reason": ", ".join(fired) if fired else "healthy"})
        notes = ["length collapse judged against the champion's answers"] if reference is not None else []
        return SuiteResult(name=self.name, kind=KIND, cases=cases, model=model_name, wall_s=wall_s, notes=notes)
