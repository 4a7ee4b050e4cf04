"""Recall: which stored demonstrations are most like a new request (FTS5, BM25).

A demonstration is indexed by three texts: what the user asked (its user turns), what was done
(tool names and string arguments), and one token naming its skill, so "within one skill" is an
FTS5 AND that only visits that skill's rows. The query is the user's free text turned into an
OR of quoted terms, so no user input is read as FTS5 syntax.

What makes BM25 slow on a large memory is scoring every row that matches any query term, and
frequent terms match a large share of the rows while adding little to the score (low IDF). So
the terms are taken rarest first while the rows they match stay under a budget (ROW_BUDGET),
which bounds the work per recall; a term that occurs in very many demonstrations is dropped
once rarer terms have found enough candidates; when the kept terms find fewer than k
demonstrations (a small skill), every term is used after all. Stop words are dropped first.
`exact=True` scores with every term.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TERM = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 32
ROW_BUDGET = 10_000  # rows scored per recall, at most (unless the rarest term alone has more)
# bm25 column weights: (prompt_text, calls_text, skill_key). The request is what a new request
# resembles; the skill token only filters.
WEIGHTS = (1.0, 0.4, 0.0)
TEXT_COLUMNS = "{prompt_text calls_text}"

STOPWORDS = frozenset(
    """a about after all also am an and any are as at be been before but by can could did do does
    for from get give had has have he her here him his how i if in into is it its just let me
    my no not now of on one or our out please she so some than that the their them then there
    these they this those to up us was we were what when where which while who why will with
    would you your""".split()
)


def query_terms(text: str) -> list[str]:
    """Distinct lower-cased words of the request, stop words removed (kept if nothing else)."""
    terms = list(dict.fromkeys(t.lower() for t in TERM.findall(text or "")))
    return ([t for t in terms if t not in STOPWORDS] or terms)[:MAX_TERMS]


def term_expression(term: str) -> str:
    return f'{TEXT_COLUMNS} : "{term}"'


def match_expression(terms: list[str], skill_id: int | None = None, exclude: Iterable[int] = ()) -> str | None:
    """An FTS5 MATCH expression: any of the terms in the texts, optionally within one skill and
    outside the skills `exclude` (ids)."""
    if not terms:
        return None
    quoted = " OR ".join(f'"{t}"' for t in terms)  # \w+ words: no quote can occur inside
    expr = f"{TEXT_COLUMNS} : ({quoted})"
    if skill_id is not None:
        expr = f'skill_key : "{skill_key(skill_id)}" AND ({expr})'
    keys = " OR ".join(f'"{skill_key(i)}"' for i in sorted(set(exclude)))
    return f"({expr}) NOT skill_key : ({keys})" if keys else expr


def skill_key(skill_id: int) -> str:
    """The token the schema's generated column `skill_key` holds ('skill' || skill_id)."""
    return f"skill{skill_id}"


def choose_terms(doc_freq: dict[str, int], budget: int = ROW_BUDGET) -> tuple[list[str], list[str]]:
    """(kept, dropped): rarest first while the matched rows stay within budget; terms that
    match nothing are dropped; the rarest matching term is always kept."""
    ranked = sorted((n, t) for t, n in doc_freq.items() if n > 0)
    kept: list[str] = []
    total = 0
    for n, t in ranked:
        if kept and total + n > budget:
            break
        kept.append(t)
        total += n
    return kept, [t for _, t in ranked if t not in kept]


def prompt_text(messages: list[dict]) -> str:
    """The user turns of a conversation: what a similar future request will share."""
    return "\n".join(m["content"] for m in messages if m.get("role") == "user" and m.get("content"))


def calls_text(tool_calls: list[dict], content: str | None) -> str:
    """Tool names (snake/camel parts split by the tokenizer) and the string argument values."""
    parts: list[str] = []
    for call in tool_calls:
        parts.append(call["name"])
        parts.extend(_strings(call["arguments"]))
    if content:
        parts.append(content)
    return "\n".join(parts)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
