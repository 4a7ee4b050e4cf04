"""`sdft-agent eval`: how well a model version uses the skills, and its general probes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.agent_cmd import ConstrainOption, resolve_constrain
from cli.common import HomeOption, console, friendly_errors


def _sets(text: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None


@friendly_errors
def eval_(
    skill: Annotated[list[str] | None, typer.Option("--skill", help="A skill in memory, or a bundled pack's name (repeatable). Default: every skill in memory (the bundled packs when memory has none).")] = None,
    pack: Annotated[Path | None, typer.Option("--pack", help="Evaluate a skill pack file's held-out cases instead.", exists=True, dir_okay=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model version (default: the champion).")] = None,
    recall: Annotated[int, typer.Option("--recall", min=0, help="Put the K most similar demonstrations in context, as the agent does (default 0: none).")] = 0,
    general: Annotated[bool, typer.Option("--general", help="Also run the default general probes (ARC-Easy, PIQA, COPA, instructions, drift).")] = False,
    probes: Annotated[list[Path] | None, typer.Option("--probes", help="Also run this JSONL probe set (ARC/PIQA/COPA/IFEval/plain shapes; repeatable).", exists=True, dir_okay=False)] = None,
    probe_sets: Annotated[str | None, typer.Option("--probe-sets", help="Comma-separated default probe sets to run, e.g. arc_easy,drift (implies --general).")] = None,
    probe_limit: Annotated[int, typer.Option(help="Items per fetched or external probe set (a fixed seeded subset).")] = 100,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts generated together.")] = 8,
    max_new_tokens: Annotated[int | None, typer.Option(help="Longest skill answer (default: longest expected answer + 32 tokens).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON: accuracy, every case's outcome and generated calls.")] = False,
    constrain: ConstrainOption = None,
    home: HomeOption = None,
):
    """Evaluate a model greedily on skills' held-out cases (no demonstrations in context unless
    --recall), and optionally on general probes. Tool calls are decoded as the agent serves them
    (constrained to the schemas) unless --no-constrain; the result says which (`constrained`).

    Example: sdft-agent eval --skill unit_convert --recall 3 --json
    """
    from agent.decode import constraining

    with constraining(resolve_constrain(constrain)) as constrained:  # the probes decode with the default
        _eval(skill, pack, model, recall, general, probes, probe_sets, probe_limit, batch_size,
              max_new_tokens, json_out, constrained, home)


def _eval(skill, pack, model, recall, general, probes, probe_sets, probe_limit, batch_size,
          max_new_tokens, json_out, constrained, home) -> None:
    from agent.loading import load
    from memory.models import ModelStore
    from memory.store import Memory
    from skills.evaluate import evaluate_memory_skill, evaluate_pack
    from skills.pack import SkillPack, bundled_pack, bundled_packs

    t0 = time.perf_counter()
    store = ModelStore(home, quiet=True)
    info = store.resolve(model)
    notes: list[str] = []
    with Memory(home) as memory:
        in_memory = [s["name"] for s in memory.list_skills() if memory.eval_cases(s["name"])]
        targets: list[tuple[str, object]] = []  # ("memory", name) | ("pack", SkillPack)
        if pack is not None:
            targets.append(("pack", SkillPack.load(pack)))
        for name in skill or []:
            targets.append(("memory", name) if name in in_memory else ("pack", SkillPack.load(bundled_pack(name))))
        want_probes = general or bool(probes) or bool(probe_sets)
        if not targets and not want_probes:
            if in_memory:
                targets = [("memory", n) for n in in_memory]
            else:
                targets = [("pack", SkillPack.load(p)) for p in bundled_packs()]
                notes.append("memory has no skills with eval cases: evaluated the bundled packs")
        m, tok = load(info.version, store=store)
        kw = dict(recall=recall, batch_size=batch_size, max_new_tokens=max_new_tokens, model_name=info.version,
                  constrain=constrained)
        results = []
        for kind, target in targets:
            name = target if kind == "memory" else target.name
            if not json_out:
                console.print(f"[dim]evaluating {name} on {info.version}…[/]")
            if kind == "memory":
                results.append(evaluate_memory_skill(m, tok, memory, target, **kw))
            else:
                results.append(evaluate_pack(m, tok, target, **kw))
        if want_probes:
            results += _run_probes(store, info.version, m, tok, home, general, probe_sets, probes,
                                   probe_limit, batch_size, notes, quiet=json_out, memory=memory)
    skills = [r for r in results if r.kind == "skill"]
    accuracy = sum(r.correct for r in skills) / sum(r.n for r in skills) if skills and sum(r.n for r in skills) else None
    wall = time.perf_counter() - t0
    notes.append("decoding: " + ("constrained tool calls" if constrained else "free (--no-constrain)"))
    if json_out:
        out = {"model": info.version, "recall": recall, "constrained": constrained, "accuracy": accuracy,
               "suites": [r.to_dict() for r in results], "notes": notes, "wall_s": round(wall, 1)}
        print(json.dumps(out, ensure_ascii=False, indent=1, default=str))
        return
    _print_table(info.version, recall, results, accuracy, notes, wall)


def _run_probes(store, version, m, tok, home, general, probe_sets, files, limit, batch_size, notes, quiet,
                memory=None):
    from agent.loading import load
    from skills.probes import (
        DEFAULT_SETS,
        default_probes,
        load_probe_file,
        needs_reference,
        run_probes,
        set_reference,
    )

    sets = _sets(probe_sets) or (DEFAULT_SETS if general else ())
    # memory: tool restraint offers the installed tools, as the agent serves them
    probes, more = default_probes(home, sets=sets, limit=limit, memory=memory) if sets else ([], [])
    notes += more
    probes += [load_probe_file(p, limit=limit) for p in files or []]
    if needs_reference(probes):
        base = store.lineage(version)[-1]
        if base == version:
            set_reference(probes, m, tok, base)
        else:
            base_m, base_tok = load(base, store=store)
            set_reference(probes, base_m, base_tok, base)
            del base_m
    if not quiet:
        console.print(f"[dim]general probes: {', '.join(p.name for p in probes)}…[/]")
    return run_probes(m, tok, probes, batch_size=batch_size, model_name=version)


def _print_table(version, recall, results, accuracy, notes, wall):
    from learner.stats import mean_ci, wilson

    table = Table("suite", "kind", "n", "score", "95% interval", "time")
    for r in results:
        if r.binary:
            lo, hi = wilson(r.correct, r.n)
            score, ci = f"{100 * r.value:.1f}% ({r.correct}/{r.n})", f"{100 * lo:.1f}–{100 * hi:.1f}%"
        else:
            lo, hi = mean_ci([c["score"] for c in r.cases])
            score, ci = f"{r.value:.4f} {r.metric}", f"{lo:.4f}–{hi:.4f}"
        table.add_row(r.name, r.kind, str(r.n), score, ci, f"{r.wall_s:.1f} s")
    console.print(table)
    if accuracy is not None:
        console.print(f"skills: [bold]{100 * accuracy:.1f}%[/] on {version}, recall {recall}")
    for n in notes + [f"{r.name}: {n}" for r in results for n in r.notes]:
        console.print(f"[dim]note: {n}[/]")
    console.print(f"[dim]{wall:.1f} s[/]")
