"""Grounded calls: a tool call whose arguments the conversation never mentions is not made.

A small model that has just learned tools calls them for requests they do not serve, and what it
writes then gives it away: "Thanks, that was helpful!" → `search_products(category="laptop",
max_price=100)`, "Where is the closest Italian restaurant?" → `Music_3_LookupMusic(artist="Luigi
Bop")`, "Compute the derivative of 2x" → `Music_3_LookupMusic(artist="")`. Every argument is
invented. A call the request asked for takes at least one of its values from the conversation: the
number to convert, the date, the SKU, the city, the genre (benchmarks/results/README.md, "Grounded
calls").

So a call is *grounded* when at least one of its argument values appears in the conversation's
user and tool turns — numbers by value (sign and formatting aside), words by a shared stem (the
first five letters, or the whole word when shorter; two-letter words exactly), a string's digits
as numbers ("2024-11-20" is grounded by "November 20th 2024"). A call with no arguments invents
nothing and is grounded. Values that say nothing (booleans, empty strings, "dontcare", "any")
ground nothing; a call made only of them is not grounded.

What it cannot see: a value the model translated ("notebook computers" → category "laptop": four
of catalog's forty demonstrations), and a value copied from a demonstration recalled into the
context (user turns are user turns). agent.decode applies it where the model chose to call
(tool_choice "auto") and the caller gave the conversation: an ungrounded reply is decoded again
from the same conversation without the tools, as `ask` answers.

The same test, one argument at a time, catches the filters a call invents: "I would like to see a
movie in Vallejo." → `Movies_1_FindMovies(location="Vallejo, CA", genre="Animation",
show_type="imax")`. An *optional* argument whose value the conversation never mentions is dropped
from a call that is made (`drop_invented`), so the tool applies its own default; a required one
stays (the call would not run without it). The chat model does this to every call it returns.

A value that *is* a tool's name is invented whatever the conversation says: a model that has
learned a tool copies its name into a field ("a movie in Vallejo" → `theater_name=
"Movies_1_FindMovies"`, which "movie" would otherwise ground by its stem).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from agent.prompt import parse_tool_calls
from memory.toolschema import function_schema, tool_name

STEM = 5  # letters two words must share to be the same word ("miles" ~ "mile", "reserve" ~ "reservation")
# values that carry no information of their own: they ground nothing
EMPTY = frozenset({"", "dontcare", "any", "none", "null", "n/a", "na", "unknown", "all", "default"})
_TOKEN = re.compile(r"[^\W\d_]+|\d+(?:\.\d+)?", re.UNICODE)
_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_PAIR = re.compile(r'"([^"\\]+)"\s*:\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)')


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace(",", ""))


def _number(token: str) -> float | None:
    try:
        return abs(float(token))
    except ValueError:
        return None


def _squeezed(text: str) -> str:
    """Letters and digits only, lower case: "Movies_1_FindMovies" and "movies 1 findmovies" agree."""
    return "".join(c for c in text.lower() if c.isalnum())


class Source:
    """The words and numbers of a conversation's user and tool turns, ready to check values
    against, and the names of the tools in play (a value that is one of them is invented)."""

    def __init__(self, text: str, tool_names: Iterable[str] = ()):
        tokens = _tokens(text)
        self.words = {t for t in tokens if not t[0].isdigit()}
        self.numbers = {_number(t) for t in tokens if t[0].isdigit()}
        self.tool_names = {_squeezed(n) for n in tool_names} - {""}

    @classmethod
    def of(cls, messages: Iterable[dict], tool_names: Iterable[str] = ()) -> Source:
        return cls(conversation_text(messages), tool_names)

    def has_word(self, word: str) -> bool:
        """Two words match when they share their first min(STEM, their lengths) letters, at least
        three ("mile" ~ "miles"); words of one or two letters only themselves ("km")."""
        if len(word) <= 2:
            return word in self.words
        for w in self.words:
            n = min(STEM, len(word), len(w))
            if n >= 3 and w[:n] == word[:n]:
                return True
        return False

    def value(self, v: Any) -> bool | None:
        """Whether `v` appears here; None when it says nothing (a boolean, an empty value)."""
        if v is None or isinstance(v, bool):
            return None
        if isinstance(v, int | float):
            return abs(float(v)) in self.numbers
        if isinstance(v, dict | list):
            found = [self.value(x) for x in (v.values() if isinstance(v, dict) else v)]
            return None if all(f is None for f in found) else any(f is True for f in found)
        text = str(v).strip().lower()
        if text in EMPTY:
            return None
        if _squeezed(text) in self.tool_names:
            return False
        tokens = [t for t in _tokens(text) if t not in EMPTY]
        if not tokens:
            return None
        return any(_number(t) in self.numbers if t[0].isdigit() else self.has_word(t) for t in tokens)


def conversation_text(messages: Iterable[dict]) -> str:
    """The text of the user and tool turns (what a call's arguments may be taken from)."""
    parts = []
    for m in messages:
        if m.get("role") not in ("user", "tool"):
            continue
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(content if isinstance(content, str) else json.dumps(content) if content is not None else "")
    return "\n".join(parts)


def grounded(arguments: dict, source: Source) -> bool:
    """Whether a call with these arguments takes at least one value from `source` (see the module
    docstring); a call without arguments is grounded."""
    if not arguments:
        return True
    return source.value(arguments) is True


def _required(tool: dict) -> set[str]:
    return set((function_schema(tool).get("parameters") or {}).get("required") or [])


def drop_invented(calls: list[dict], tools: list[dict], messages: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """`calls` ([{"name", "arguments"}]) without their optional arguments whose values the
    conversation never mentions (a value that says nothing, like "dontcare", stays), and what
    was dropped: [{"name", "arguments": {dropped}}], one per call that lost any, in order.
    A call naming none of `tools` is left as it is."""
    by_name = {tool_name(t): t for t in tools}
    source: Source | None = None
    kept, dropped = [], []
    for call in calls:
        tool, args = by_name.get(call.get("name")), call.get("arguments")
        if tool is None or not isinstance(args, dict) or not args:
            kept.append(call)
            continue
        source = source or Source.of(messages, by_name)
        required = _required(tool)
        gone = {k: v for k, v in args.items() if k not in required and source.value(v) is False}
        if gone:
            call = {**call, "arguments": {k: v for k, v in args.items() if k not in gone}}
            dropped.append({"name": call["name"], "arguments": gone})
        kept.append(call)
    return kept, dropped


def calls_in(text: str) -> list[tuple[str, dict]]:
    """(name, arguments) of each call in a reply: the well-formed blocks as agent.prompt parses
    them, then each block cut off at the token limit (or otherwise unreadable) by its complete
    "key": value pairs; blocks without a name are left out."""
    parsed = parse_tool_calls(text)
    out = [(c["name"], c["arguments"]) for c in parsed.calls]
    for bad in parsed.invalid:
        name = _NAME.search(bad.raw)
        if name is None:
            continue
        rest = bad.raw[name.end():]
        start = rest.find('"arguments"')
        rest = rest[start + len('"arguments"'):] if start >= 0 else ""
        out.append((json.loads(f'"{name.group(1)}"'), {k: json.loads(v) for k, v in _PAIR.findall(rest)}))
    return out


def ungrounded(text: str, messages: Iterable[dict]) -> list[str]:
    """Names of the reply's calls that take no value from the conversation (empty: every call is
    grounded, or the reply makes none)."""
    calls = calls_in(text)
    if not calls:
        return []
    source = Source.of(messages, (name for name, _ in calls))
    return [name for name, args in calls if not grounded(args, source)]
