"""Shared bits of the command line: the console, error handling, the --home option."""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer
from rich.console import Console

# Wide when piped, so tables (sha256 prefixes, versions) are not cut to 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, highlight=False)

HomeOption = Annotated[
    str | None,
    typer.Option("--home", envvar="SDFT_AGENT_HOME", help="Data folder (memory.db, models/, reports/). Default: $SDFT_AGENT_HOME or ~/.local/share/sdft-agent."),
]


def fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def friendly_errors(fn):
    """Turn the project's expected errors (bad input, missing model, corrupt file) into one
    clear line and exit code 1, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, RuntimeError, FileNotFoundError, KeyError, LookupError) as exc:
            if "--debug" in sys.argv:
                raise
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            fail(msg)

    return wrapper
