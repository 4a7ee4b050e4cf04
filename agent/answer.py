"""The answer after a tool result: a sentence a person can read, never markup or a bare payload.

A small model, shown a tool result, often echoes it (`<tool_response>\\n{"value": 8.04672, …}`)
or answers without the numbers it was given. So the model's own reply is kept only when it is
prose (no chat or tool markup, not a JSON payload) and grounded (it states every key value of the
results); otherwise the answer is written from the results themselves (`grounded_answer`). Both
rules are plain functions, so the benchmark measures exactly what users get
(benchmarks/answer_sentences.py).

Key values of a result: every scalar field of a JSON object (numbers compared by value at the
precision the answer writes them, strings case-insensitively, booleans as yes/no words), the
first string of each record in a list, or for plain-text output its numbers (the text itself
when it has none).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

# Chat/tool markup, tags, code fences and JSON braces: none belongs in a sentence for a person.
MARKUP = re.compile(r"<\|[^<>|\s]{1,40}\|>|&lt;|</?[A-Za-z_][\w-]*>|```|[{}]|\"\s*:")
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?![\w])|(?<![\w.])-?\.\d+")
_WORD = re.compile(r"[^\W\d_]{2,}")
YES_WORDS = ("yes", "true", "is in stock", "available", "in stock")
NO_WORDS = ("no", "not", "false", "out of", "unavailable")


@dataclass(frozen=True)
class Answer:
    text: str
    source: str  # "model": the model's reply was kept; "grounded": written from the results


def answer_after_tools(reply: str, results: list[dict]) -> Answer:
    """The reply a user gets after tool `results` ([{"name", "arguments"?, "content",
    "status"?}]): the model's `reply` if it is grounded prose, else a sentence from the results."""
    reply = (reply or "").strip()
    if not results:
        return Answer(reply, "model")
    if is_prose(reply) and all(is_grounded(reply, r["content"]) for r in results if r.get("status") != "error"):
        return Answer(reply, "model")
    return Answer(grounded_answer(results), "grounded")


def is_prose(text: str) -> bool:
    """Readable text: a word at least; no chat/tool markup, tags, code fences or braces; not a
    JSON payload."""
    text = (text or "").strip()
    if not text or MARKUP.search(text) or text[0] in "{[<":
        return False
    try:
        json.loads(text)
        return False  # a bare number, string or payload
    except ValueError:
        pass
    return bool(_WORD.search(text))


def is_grounded(text: str, content: str) -> bool:
    """Whether `text` states every key value of the tool output `content`."""
    return all(_states(text, v) for v in key_values(content))


def key_values(content: str) -> list[Any]:
    """The values an answer to this tool output must state (see the module docstring)."""
    data = _json(content)
    if data is _NOT_JSON:
        numbers = [_num(m) for m in _NUMBER.findall(content)]
        return numbers or ([content.strip()] if content.strip() else [])
    return _keys(data)


def grounded_answer(results: list[dict]) -> str:
    """One sentence per result, written from the result alone (nothing is invented)."""
    return " ".join(_sentence(r) for r in results)


# ---- writing ---------------------------------------------------------------------------------

def _sentence(r: dict) -> str:
    name = _human(r.get("name") or "the tool")
    args = r.get("arguments") or {}
    where = f" ({_pairs(args)})" if args else ""
    content = (r.get("content") or "").strip()
    if r.get("status") == "error":
        return _period(f"{name}{where} failed: {_plain(content)}")
    data = _json(content)
    if data is _NOT_JSON:
        return _period(f"result of {name}{where}: {_plain(content)}" if content else f"{name}{where} returned nothing")
    return _period(f"result of {name}{where}: {_phrase(data)}")


def _phrase(data: Any) -> str:
    if isinstance(data, dict):
        if not data:
            return "no details"
        return ", ".join(f"{_human(k)} {_phrase_value(v)}" for k, v in data.items())
    return _phrase_value(data)


def _phrase_value(v: Any) -> str:
    if isinstance(v, list):
        if not v:
            return "none found"
        items = [_record(x) for x in v]
        return f"{len(v)} found: " + "; ".join(items)
    if isinstance(v, dict):
        return f"({_phrase(v)})"
    return _scalar(v)


def _record(x: Any) -> str:
    if not isinstance(x, dict):
        return _phrase_value(x)
    first = next((k for k, v in x.items() if isinstance(v, str)), None)
    rest = [(k, v) for k, v in x.items() if k != first]
    head = str(x[first]) if first else ""
    tail = ", ".join(f"{_human(k)} {_phrase_value(v)}" for k, v in rest)
    return f"{head} ({tail})" if head and tail else head or tail


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None:
        return "unknown"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return _plain(str(v))


def _pairs(args: dict) -> str:
    return ", ".join(f"{_human(k)} {_phrase_value(v)}" for k, v in args.items())


def _human(key: str) -> str:
    return str(key).replace("_", " ").strip()


def _plain(text: str) -> str:
    """Text with any markup taken out and whitespace collapsed."""
    text = re.sub(r"<\|[^<>|\s]{1,40}\|>|&lt;\|?[^<>|\s]{0,40}\|>|</?tool_(?:call|response)>|</?tools>", " ", text)
    return " ".join(text.split())


def _period(text: str) -> str:
    text = text.strip()
    text = text[0].upper() + text[1:] if text else text
    return text if text.endswith((".", "!", "?")) else text + "."


# ---- checking --------------------------------------------------------------------------------

_NOT_JSON = object()


def _json(content: str) -> Any:
    try:
        return json.loads(content)
    except (ValueError, TypeError):
        return _NOT_JSON


def _keys(data: Any) -> list[Any]:
    if isinstance(data, dict):
        out: list[Any] = []
        for v in data.values():
            if isinstance(v, list):
                out += [_first_string(x) for x in v if _first_string(x) is not None]
            elif isinstance(v, dict):
                out += _keys(v)
            elif isinstance(v, bool):
                out.append(_Bool(v))
            elif v is not None:
                out.append(v)
        return out
    if isinstance(data, list):
        return [s for x in data if (s := _first_string(x)) is not None]
    if isinstance(data, bool):
        return [_Bool(data)]
    return [] if data is None else [data]


def _first_string(x: Any) -> Any:
    if isinstance(x, dict):
        return next((v for v in x.values() if isinstance(v, str)), None)
    return x if isinstance(x, (str, int, float)) and not isinstance(x, bool) else None


@dataclass(frozen=True)
class _Bool:
    value: bool


def _states(text: str, value: Any) -> bool:
    low = text.lower()
    if isinstance(value, _Bool):
        words = YES_WORDS if value.value else NO_WORDS
        return any(re.search(rf"\b{re.escape(w)}\b", low) for w in words)
    if isinstance(value, (int, float)):
        return any(_same_number(a, value) for a in _NUMBER.findall(text))
    return " ".join(str(value).lower().split()) in " ".join(low.split())


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _same_number(written: str, value: float) -> bool:
    """`written` states `value` at the precision it is written with (at least 2 decimals when the
    value has them: 8.05 states 8.04672, 8 does not)."""
    try:
        a = _num(written)
    except ValueError:
        return False
    decimals = len(written.split(".")[1]) if "." in written else 0
    value_decimals = 0 if float(value).is_integer() else min(2, _decimals(value))
    if decimals < value_decimals:
        return False
    return math.isclose(a, value, abs_tol=0.5 * 10 ** -decimals + 1e-9)


def _decimals(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 6
