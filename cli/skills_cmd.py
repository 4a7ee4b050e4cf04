"""`sdft-agent skills …`: teach the agent a tool by handing it a skill pack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import HomeOption, console, err_console, friendly_errors

app = typer.Typer(help="Skill packs: tools, demonstrations and held-out eval cases.", no_args_is_help=True)


def _load_pack(pack: str):
    from skills.pack import SkillPack, bundled_pack

    path = Path(pack)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.json"))[:3]
        hint = f" (it holds {', '.join(found)})" if found else ""
        raise ValueError(f"{pack} is a folder{hint}; give a skill pack JSON file or a bundled pack's name")
    if path.suffix == ".json" and not path.exists():
        raise ValueError(f"no file {pack}; give a skill pack JSON file or a bundled pack's name")
    if path.exists():
        return SkillPack.load(path)
    return SkillPack.load(bundled_pack(pack))  # a bundled pack by name


@app.command()
@friendly_errors
def add(
    pack: Annotated[str, typer.Argument(help="A skill pack JSON file, or the name of a bundled pack (unit_convert, date_math, catalog).")],
    replace: Annotated[bool, typer.Option("--replace", help="The skill exists with other tools: swap them, after checking that every stored demonstration and eval case still validates.")] = False,
    home: HomeOption = None,
):
    """Validate a skill pack and store its tools, demonstrations and eval cases in memory.

    An invalid pack is rejected whole, every error naming the item and field; nothing is written.
    A pack whose skill is installed with other tools is refused unless --replace.

    Example: sdft-agent skills add unit_convert
    """
    from memory.store import Memory
    from skills.install import install_pack
    from skills.pack import PackError

    try:
        p = _load_pack(pack)
    except PackError as exc:
        err_console.print(f"[bold red]error:[/] {pack} is not a valid skill pack ({len(exc.errors)} problem(s)):")
        for e in exc.errors:
            err_console.print(f"  - {e}", markup=False)
        raise typer.Exit(1) from None
    with Memory(home) as memory:
        counts = install_pack(memory, p, replace=replace)
    if counts.get("replaced"):
        console.print(f"replaced the tools of skill [bold]{p.name}[/]; every stored demonstration and eval case still validates")
    console.print(f"skill [bold]{p.name}[/]: {len(p.tools)} tool(s), {counts['demonstrations_added']} new "
                  f"demonstration(s) ({counts['duplicates']} already known), {counts['eval_cases']} eval case(s)")


@app.command("list")
@friendly_errors
def list_(home: HomeOption = None):
    """List the skills in memory with their tools and counts.

    Example: sdft-agent skills list
    """
    from memory.store import Memory

    with Memory(home) as memory:
        table = Table("skill", "tools", "demonstrations", "not yet learned", "eval cases")
        for s in memory.list_skills():
            name = s["name"]
            table.add_row(name, ", ".join(t["name"] for t in memory.tools_for(name)),
                          str(len(memory.demonstrations(name))), str(len(memory.unlearned_demonstrations(name))),
                          str(len(memory.eval_cases(name))))
    if not table.rows:
        console.print("no skills yet: `sdft-agent skills add unit_convert` adds a bundled one")
        return
    console.print(table)


@app.command()
@friendly_errors
def show(name: Annotated[str, typer.Argument(help="Skill name.")], home: HomeOption = None):
    """Show a skill's tool schemas and a few of its demonstrations.

    Example: sdft-agent skills show unit_convert
    """
    from memory.store import Memory

    with Memory(home) as memory:
        skill = memory.get_skill(name)
        if skill is None:
            known = ", ".join(s["name"] for s in memory.list_skills()) or "none"
            raise ValueError(f"no skill {name!r} in memory (known: {known})")
        console.print(f"[bold]{name}[/]: {skill.get('description', '')}")
        for tool in memory.tools_for(name):
            console.print_json(json.dumps(tool))
        for d in memory.demonstrations(name)[:3]:
            user = next((m["content"] for m in reversed(d["messages"]) if m["role"] == "user"), "")
            console.print(f"  {user!r} → {json.dumps(d['tool_calls'], ensure_ascii=False)}")


@app.command("import-bfcl")
@friendly_errors
def import_bfcl(
    function: Annotated[str, typer.Option(help="The BFCL function to learn, e.g. Events_3_FindEvents.")],
    category: Annotated[str, typer.Option(help="BFCL v4 category.")] = "live_multiple",
    train: Annotated[int, typer.Option(help="Demonstrations to take.")] = 30,
    eval_: Annotated[int, typer.Option("--eval", help="Held-out eval cases to take (no overlap with train).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the train/eval split.")] = 0,
    out: Annotated[str | None, typer.Option(help="Also write the pack to this JSON file.")] = None,
    add_to_memory: Annotated[bool, typer.Option("--add/--no-add", help="Store the pack in memory.")] = True,
    siblings: Annotated[bool, typer.Option("--siblings/--no-siblings",
                                           help="Also offer the other functions of its service "
                                                "(e.g. Music_3_PlayMedia beside Music_3_LookupMusic).")] = False,
    home: HomeOption = None,
):
    """Build a skill pack from the Berkeley Function Calling Leaderboard data (needs
    `pip install --no-deps bfcl-eval==2026.3.23`).

    Example: sdft-agent skills import-bfcl --function Events_3_FindEvents --train 30 --eval 20
    """
    from memory.store import Memory
    from skills.bfcl import import_bfcl as build
    from skills.install import install_pack

    pack = build(category, function=function, train=train, eval=eval_, seed=seed, siblings=siblings)
    if out:
        pack.save(out)
        console.print(f"wrote {out}")
    if add_to_memory:
        with Memory(home) as memory:
            counts = install_pack(memory, pack)
        console.print(f"skill [bold]{pack.name}[/]: {counts['demonstrations_added']} demonstration(s), "
                      f"{counts['eval_cases']} eval case(s)")
