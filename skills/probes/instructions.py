"""Instruction-following probes: the model answers a prompt; rule checkers judge the reply.

Items use IFEval's shape — {"key", "prompt", "instruction_id_list", "kwargs"} — so the built-in
set (skills.probes.builtin) and an external IFEval file (`--probes ifeval_input_data.jsonl`)
share one path. A case passes when every instruction in it is followed (IFEval's strict
prompt-level accuracy). The checkers below follow IFEval's definitions, simplified where IFEval
needs NLTK or a language detector; an item with an instruction id that has no checker here
(e.g. language:response_language) is left out of the suite, and the suite's notes say how many.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from agent.prompt import PromptFormat
from skills.evaluate import SuiteResult
from skills.generation import generate_texts

_WORD = re.compile(r"\b\w+\b")


def _compare(count: int, relation: str, n: int) -> bool:
    relation = (relation or "at least").strip().lower()
    if relation == "less than":
        return count < n
    if relation == "at least":
        return count >= n
    if relation == "at most":
        return count <= n
    if relation in ("more than", "greater than"):
        return count > n
    if relation in ("exactly", "equal to"):
        return count == n
    raise ValueError(f"unknown relation {relation!r}")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if _words(s)]


def _count_word(text: str, word: str) -> int:
    return len(re.findall(r"\b" + re.escape(word) + r"\b", text, flags=re.I))


def _strip_fences(text: str) -> str:
    t = text.strip()
    t = re.sub(r"^```(?:json|Json|JSON)?\s*", "", t)
    return re.sub(r"\s*```$", "", t).strip()


def _is_json(text: str) -> bool:
    try:
        json.loads(_strip_fences(text))
    except ValueError:
        return False
    return True


def _paragraphs_stars(text: str) -> list[str]:
    return [p for p in re.split(r"\s?\*\*\*\s?", text) if p.strip()]


def _two_responses(text: str) -> bool:
    parts = [p.strip() for p in text.split("******")]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


def _sections(text: str, splitter: str) -> int:
    return len(re.split(r"\s?" + re.escape(splitter) + r"\s?\d+\s?", text)) - 1


def _nth_paragraph(text: str, num: int, nth: int, first_word: str) -> bool:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if len(paras) != num or not 1 <= nth <= num:
        return False
    words = _words(paras[nth - 1].lower())
    return bool(words) and words[0] == first_word.lower()


def _postscript(text: str, marker: str) -> bool:
    marker = marker.strip()
    if marker.lower() == "p.p.s":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker.lower() == "p.s.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return re.search(pattern, text.lower(), flags=re.M) is not None


Checker = Callable[..., bool]
CHECKERS: dict[str, Checker] = {
    "punctuation:no_comma": lambda r: "," not in r,
    "length_constraints:number_words": lambda r, num_words, relation: _compare(len(_words(r)), relation, num_words),
    "length_constraints:number_sentences": lambda r, num_sentences, relation: _compare(len(_sentences(r)), relation, num_sentences),
    "length_constraints:number_paragraphs": lambda r, num_paragraphs: len(_paragraphs_stars(r)) == num_paragraphs,
    "length_constraints:nth_paragraph_first_word": lambda r, num_paragraphs, nth_paragraph, first_word: _nth_paragraph(r, num_paragraphs, nth_paragraph, first_word),
    "keywords:existence": lambda r, keywords: all(re.search(re.escape(k), r, flags=re.I) for k in keywords),
    "keywords:forbidden_words": lambda r, forbidden_words: not any(_count_word(r, w) for w in forbidden_words),
    "keywords:frequency": lambda r, keyword, frequency, relation: _compare(_count_word(r, keyword), relation, frequency),
    "keywords:letter_frequency": lambda r, letter, let_frequency, let_relation: _compare(r.lower().count(letter.lower()), let_relation, let_frequency),
    "change_case:english_lowercase": lambda r: r == r.lower() and any(c.isalpha() for c in r),
    "change_case:english_capital": lambda r: r == r.upper() and any(c.isalpha() for c in r),
    "change_case:capital_word_frequency": lambda r, capital_frequency, capital_relation: _compare(
        sum(1 for w in _words(r) if w.isupper()), capital_relation, capital_frequency),
    "startend:end_checker": lambda r, end_phrase: r.strip().lower().endswith(end_phrase.strip().lower()),
    "startend:quotation": lambda r: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"',
    "detectable_format:json_format": _is_json,
    "detectable_format:title": lambda r: any(t.strip() for t in re.findall(r"<<([^\n]+?)>>", r)),
    "detectable_format:number_bullet_lists": lambda r, num_bullets: len(re.findall(r"^\s*[\*\-]\s+\S", r, flags=re.M)) == num_bullets,
    "detectable_format:number_highlighted_sections": lambda r, num_highlights: sum(
        1 for h in re.findall(r"\*[^\n\*]+\*", r) if h.strip("*").strip()) >= num_highlights,
    "detectable_format:multiple_sections": lambda r, section_spliter, num_sections: _sections(r, section_spliter) >= num_sections,
    "detectable_format:constrained_response": lambda r: any(
        o in r for o in ("My answer is yes.", "My answer is no.", "My answer is maybe.")),
    "detectable_content:number_placeholders": lambda r, num_placeholders: len(re.findall(r"\[.*?\]", r)) >= num_placeholders,
    "detectable_content:postscript": lambda r, postscript_marker: _postscript(r, postscript_marker),
    "combination:repeat_prompt": lambda r, prompt_to_repeat: r.strip().lower().startswith(prompt_to_repeat.strip().lower()),
    "combination:two_responses": _two_responses,
}


def check(instruction_id: str, response: str, kwargs: dict | None = None) -> bool:
    """Does `response` follow the instruction? (KeyError for an id without a checker.)"""
    args = {k: v for k, v in (kwargs or {}).items() if v is not None}
    return bool(CHECKERS[instruction_id](response, **args))


def is_instruction_item(row: dict) -> bool:
    return "prompt" in row and "instruction_id_list" in row


def supported(rows: list[dict]) -> tuple[list[dict], int]:
    """The rows all of whose instructions have checkers, and how many were left out."""
    keep = [r for r in rows if all(i in CHECKERS for i in r["instruction_id_list"])]
    return keep, len(rows) - len(keep)


def run_instructions(model, tokenizer, rows: list[dict], *, name: str = "instructions",
                     batch_size: int = 8, max_new_tokens: int = 128, model_name: str | None = None,
                     fmt: PromptFormat | None = None) -> SuiteResult:
    """Answer each prompt greedily as a user turn (no tools) and check every instruction."""
    t0 = time.perf_counter()
    fmt = fmt or PromptFormat(tokenizer)
    rows, skipped = supported(rows)
    prompts = [fmt.encode([{"role": "user", "content": r["prompt"]}]) for r in rows]
    texts = generate_texts(model, fmt, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    cases = []
    for i, (row, text) in enumerate(zip(rows, texts, strict=True)):
        kwargs = row.get("kwargs") or [{}] * len(row["instruction_id_list"])
        followed = {iid: check(iid, text, kw) for iid, kw in zip(row["instruction_id_list"], kwargs, strict=True)}
        ok = all(followed.values())
        cases.append({"id": str(row.get("key", i)), "score": 1.0 if ok else 0.0, "correct": ok,
                      "followed": followed, "request": row["prompt"], "answer": text,
                      "reason": "" if ok else "not followed: " + ", ".join(k for k, v in followed.items() if not v)})
    notes = [f"{skipped} item(s) left out: an instruction without a checker here"] if skipped else []
    return SuiteResult(name=name, kind="instructions", cases=cases, model=model_name,
                       wall_s=time.perf_counter() - t0, notes=notes)
