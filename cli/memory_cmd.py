"""`sdft-agent memory …`: the episodic memory from the command line (a thin layer over
memory.store.Memory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import HomeOption, console, friendly_errors

app = typer.Typer(
    help="The episodic memory (memory.db): skills, episodes, demonstrations, learning runs.",
    no_args_is_help=True,
)


def _memory(home):
    from memory.store import Memory

    return Memory(home)


def _short(value, width: int = 70) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
@friendly_errors
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")] = False,
    home: HomeOption = None,
):
    """Show what the memory holds and how big memory.db is.

    Counts skills, episodes (by outcome), demonstrations (learned or not, duplicates seen, per
    skill), eval cases, learning runs (by status) and gate reports, and the size of the WAL.

    Example: sdft-agent memory stats --json
    """
    with _memory(home) as mem:
        s = mem.stats()
    if as_json:
        console.print_json(json.dumps(s))
        return
    table = Table("what", "count", title=f"memory.db in {mem.home}")
    rows = [
        ("skills", s["skills"]), ("tools", s["tools"]), ("episodes", s["episodes"]),
        *[(f"  {k}", v) for k, v in s["episodes_by_outcome"].items()],
        ("demonstrations", s["demonstrations"]),
        ("  not yet learned", s["demonstrations_unlearned"]),
        ("  duplicates seen", s["duplicates_seen"]),
        *[(f"  skill {k}", v) for k, v in s["demonstrations_by_skill"].items()],
        ("eval cases", s["eval_cases"]), ("learning runs", s["learn_runs"]),
        *[(f"  {k}", v) for k, v in s["runs_by_status"].items()],
        ("gate reports", s["gate_reports"]),
        ("database bytes", s["db_bytes"]), ("WAL bytes", s["wal_bytes"]),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}")
    console.print(table)


@app.command()
@friendly_errors
def search(
    query: Annotated[str, typer.Argument(help="Free text, like a user's request.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="How many demonstrations to show.")] = 5,
    skill: Annotated[str | None, typer.Option(help="Only this skill's demonstrations.")] = None,
    home: HomeOption = None,
):
    """Find the demonstrations most relevant to QUERY, best first.

    BM25 over what the user asked and what was called: what the agent would put in its context.

    Example: sdft-agent memory search "any concerts in Berlin on Friday?" --skill events -k 3
    """
    with _memory(home) as mem:
        hits = mem.recall(query, k=k, skill=skill)
    if not hits:
        console.print("no matching demonstrations")
        return
    table = Table("id", "score", "skill", "request", "calls / answer", "source")
    for d in hits:
        user = [m["content"] for m in d["messages"] if m["role"] == "user"]
        turn = d["tool_calls"] or d["content"]
        table.add_row(str(d["id"]), f"{d['score']:.3f}", d["skill"], _short(user[-1] if user else ""),
                      _short(turn), d["source"])
    console.print(table)


@app.command("export")
@friendly_errors
def export(
    file: Annotated[Path, typer.Argument(help="The JSONL file to write (replaced if it exists).")],
    home: HomeOption = None,
):
    """Write skills, demonstrations and eval cases to a JSONL file.

    Every skill (with its tools), demonstration and eval case, in a file that `memory import`
    reads back exactly. Episodes and learning runs stay behind.

    Example: sdft-agent memory export demos.jsonl
    """
    with _memory(home) as mem:
        n = mem.export_jsonl(file)
        s = mem.stats()
    console.print(f"wrote {n} records to {file}: {s['skills']} skills, {s['demonstrations']} "
                  f"demonstrations, {s['eval_cases']} eval cases")


@app.command("import")
@friendly_errors
def import_(
    file: Annotated[Path, typer.Argument(help="A JSONL file written by `memory export`.", exists=True, dir_okay=False)],
    home: HomeOption = None,
):
    """Add the skills, demonstrations and eval cases of a JSONL file.

    Validated against each skill's tool schemas; a skill whose tools differ from the installed
    skill's is refused. All or nothing: one bad line names itself and
    nothing is written. Importing the same file again adds nothing.

    Example: sdft-agent memory import demos.jsonl --home ./other-home
    """
    with _memory(home) as mem:
        c = mem.import_jsonl(file)
    console.print(
        f"imported {c['skills']} skills, {c['demonstrations']} demonstrations "
        f"({c['duplicates']} already present), {c['eval_cases']} eval cases "
        f"({c['eval_duplicates']} already present)"
    )
