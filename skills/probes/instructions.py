"""Instruction-following probes: the model answers a prompt; rule checkers judge the reply.

Items use IFEval's shape — {"key", "prompt", "instruction_id_list", "kwargs"} — so the built-in
set (skills.probes.builtin) and an external IFEval file (`--probes ifeval_input_data.jsonl`)
share one path. A case passes when every instruction in it is followed (IFEval's strict
prompt-level accuracy). The checkers below follow IFEval's definitions (arXiv:2311.07911 and
its released rules), written here, with two differences where IFEval needs data that is not on
PyPI (NLTK's Punkt model) or a language detector: sentences are split by rule with a list of
abbreviations, and the "English" half of the two case checkers asks for Latin letters. An item
with an instruction id that has no checker here (language:response_language) is left out of the
suite, and the suite's notes say how many.
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
# Words as NLTK's tokenizer keeps them for IFEval's capital-word count: "U.S.A", "COVID-19" are one.
_CAPITAL_TOKEN = re.compile(r"\w+(?:[-.]\w+)*")
# A period after one of these (or after a capital initial) does not end a sentence.
_ABBREVIATIONS = frozenset("mr mrs ms dr prof sr jr st mt vs etc inc ltd co corp approx dept est fig no vol".split())


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


def _continues(piece: str) -> bool:
    """Does `piece` end in an abbreviation or an initial, so its last period ends no sentence?"""
    m = re.search(r"(\w[\w.]*)\.$", piece)
    if not m:
        return False
    token = m.group(1)
    dotted = "." in token  # "p.m.", "U.S.": Punkt has learned such tokens as abbreviations
    return dotted or token.lower() in _ABBREVIATIONS or (len(token) == 1 and token.isupper() and token not in "AI")


def _sentences(text: str) -> list[str]:
    """Sentences end at . ! or ? (closing quotes/brackets may follow) before whitespace; IFEval
    uses NLTK's Punkt model, whose data cannot be fetched offline, so abbreviations are a list."""
    sentences: list[str] = []
    for piece in re.split(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+", text.strip()):
        if sentences and _continues(sentences[-1]):
            sentences[-1] += " " + piece
        else:
            sentences.append(piece)
    return [s for s in sentences if _words(s)]


def _count_word(text: str, word: str) -> int:
    return len(re.findall(r"\b" + re.escape(word) + r"\b", text, flags=re.I))


def _count_substring(text: str, keyword: str) -> int:
    """IFEval counts a keyword wherever it occurs, inside longer words too ("dog" in "dogs")."""
    return len(re.findall(re.escape(keyword), text, flags=re.I))


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


def _latin_letters(text: str, share: float = 0.9) -> bool:
    """Mostly Latin letters: IFEval also asks a language detector for English here; this keeps
    the point (an answer in another script does not pass) without a detector's model."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) >= share * len(letters)


def _star_paragraphs(text: str) -> int | None:
    """Paragraphs separated by `***`; an empty one at either end is ignored, one in the middle
    makes the answer fail (None)."""
    parts = re.split(r"\s?\*\*\*\s?", text)
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i not in (0, len(parts) - 1):
                return None
            count -= 1
    return count


def _first_word(paragraph: str) -> str:
    word = paragraph.split()[0].lstrip("'\"")
    return re.split(r"[.,?!'\"]", word, maxsplit=1)[0].lower()


def _nth_paragraph(text: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    """Paragraphs split on a blank line ("\n\n"); the count ignores empty ones, as IFEval does."""
    parts = text.split("\n\n")
    count = sum(1 for p in parts if p.strip())
    if count != num_paragraphs or not 1 <= nth_paragraph <= count:
        return False
    paragraph = parts[nth_paragraph - 1].strip()
    return bool(paragraph) and _first_word(paragraph) == first_word.strip().lower()


def _bullets(text: str) -> int:
    """Lines starting with `*` (not `**`) or `-`, the two markdown bullet marks IFEval counts."""
    stars = re.findall(r"^\s*\*[^*].*$", text, flags=re.M)
    dashes = re.findall(r"^\s*-.*$", text, flags=re.M)
    return len(stars) + len(dashes)


def _highlights(text: str) -> int:
    """Non-empty `*spans*` and `**spans**` on one line each, counted as IFEval counts them."""
    single = [h for h in re.findall(r"\*[^\n*]*\*", text) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n*]*\*\*", text) if h[2:-2].strip()]
    return len(single) + len(double)


def _two_responses(text: str) -> bool:
    """Two different answers around `******`; empty parts are allowed only at either end."""
    parts = text.split("******")
    answers = []
    for i, part in enumerate(parts):
        if part.strip():
            answers.append(part.strip())
        elif i not in (0, len(parts) - 1):
            return False
    return len(answers) == 2 and answers[0] != answers[1]


def _sections(text: str, splitter: str) -> int:
    return len(re.split(r"\s?" + re.escape(splitter) + r"\s?\d+\s?", text)) - 1


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
    "length_constraints:number_paragraphs": lambda r, num_paragraphs: _star_paragraphs(r) == num_paragraphs,
    "length_constraints:nth_paragraph_first_word": lambda r, num_paragraphs, nth_paragraph, first_word: _nth_paragraph(r, num_paragraphs, nth_paragraph, first_word),
    "keywords:existence": lambda r, keywords: all(re.search(re.escape(k), r, flags=re.I) for k in keywords),
    "keywords:forbidden_words": lambda r, forbidden_words: not any(_count_word(r, w) for w in forbidden_words),
    "keywords:frequency": lambda r, keyword, frequency, relation: _compare(_count_substring(r, keyword), relation, frequency),
    "keywords:letter_frequency": lambda r, letter, let_frequency, let_relation: _compare(r.lower().count(letter.lower()), let_relation, let_frequency),
    "change_case:english_lowercase": lambda r: r.islower() and _latin_letters(r),
    "change_case:english_capital": lambda r: r.isupper() and _latin_letters(r),
    "change_case:capital_word_frequency": lambda r, capital_frequency, capital_relation: _compare(
        sum(1 for w in _CAPITAL_TOKEN.findall(r) if w.isupper()), capital_relation, capital_frequency),
    "startend:end_checker": lambda r, end_phrase: r.strip().lower().endswith(end_phrase.strip().lower()),
    "startend:quotation": lambda r: len(r.strip()) > 1 and r.strip()[0] == '"' and r.strip()[-1] == '"',
    "detectable_format:json_format": _is_json,
    "detectable_format:title": lambda r: any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r)),
    "detectable_format:number_bullet_lists": lambda r, num_bullets: _bullets(r) == num_bullets,
    "detectable_format:number_highlighted_sections": lambda r, num_highlights: _highlights(r) >= num_highlights,
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
