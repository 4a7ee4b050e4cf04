"""Recall: which stored demonstrations are most like a new request (FTS5, BM25).

A demonstration is indexed by two texts: what the user asked (its user turns) and what was done
(tool names and string arguments). The query is the user's free text, turned into an OR of
quoted terms so no user input is read as FTS5 syntax. Very common words are dropped first:
they carry no topic, and every row they match must be scored, which is what makes recall slow
on a large memory.
"""

from __future__ import annotations

import re

TERM = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 32
# bm25 column weights: (prompt_text, calls_text). The request is what a new request resembles.
WEIGHTS = (1.0, 0.4)

STOPWORDS = frozenset(
    """a about after all also am an and any are as at be been before but by can could did do does
    for from get give had has have he her here him his how i if in into is it its just let me
    my no not now of on one or our out please she so some than that the their them then there
    these they this those to up us was we were what when where which while who why will with
    would you your""".split()
)


def match_expression(text: str) -> str | None:
    """An FTS5 MATCH expression for free text, or None when it has no searchable word."""
    terms = list(dict.fromkeys(t.lower() for t in TERM.findall(text or "")))
    topical = [t for t in terms if t not in STOPWORDS] or terms
    if not topical:
        return None
    return " OR ".join(f'"{t}"' for t in topical[:MAX_TERMS])


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
