"""Shared bits of the command line: the consoles, error handling, the --home option, and the
global flags (--debug, --quiet) the root callback in cli/main.py sets."""

from __future__ import annotations

import functools
import os
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console

# Wide when piped, so tables (sha256 prefixes, versions) are not cut to 80 columns. Rich honours
# NO_COLOR (no colour, whatever the terminal) and FORCE_COLOR by itself.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
# Errors are never wrapped mid-sentence: one message, one or two lines, whatever the width.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_ERROR = 1  # bad input or a broken state: the message says what to fix
EXIT_BUG = 70  # an error the program did not expect (sysexits EX_SOFTWARE): rerun with --debug
EXIT_BUSY = 75  # another learning run holds the lease (sysexits EX_TEMPFAIL): try again later

DEBUG_ENV = "SDFT_AGENT_DEBUG"
# typer's and click's own exits, aborts and usage errors: they carry their exit code already
CLI_EXITS = (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException)

HomeOption = Annotated[
    str | None,
    typer.Option("--home", envvar="SDFT_AGENT_HOME", help="Data folder (memory.db, models/, reports/). Default: $SDFT_AGENT_HOME or ~/.local/share/sdft-agent."),
]


class Flags:
    """The root options, readable by every command."""

    debug = False
    quiet = False


def debugging() -> bool:
    return Flags.debug or "--debug" in sys.argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def progress_wanted() -> bool:
    """Progress bars only for a person watching: stderr is a terminal and --quiet was not given."""
    return not Flags.quiet and sys.stderr.isatty()


def silence_progress() -> None:
    """Turn off the progress bars of tqdm, huggingface_hub and transformers, in this process and
    in the children it starts (they read the environment at import)."""
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    err_console.print(f"[yellow]warning:[/] {message}")


def install_warning_format() -> None:
    """The project's own warnings (a home open to other users) as one plain line, not a
    file:line report."""
    warnings.showwarning = _show_warning


def fail(message: str, code: int = EXIT_ERROR) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _db_path(home) -> Path:
    from memory.db import DB_NAME
    from memory.home import DEFAULT_HOME, ENV_VAR

    return Path(home or os.environ.get(ENV_VAR) or DEFAULT_HOME).expanduser() / DB_NAME


def explain(exc: BaseException, home=None) -> tuple[str, int]:
    """(message, exit code) for an exception that reached the command line."""
    from memory.db import corruption_message, is_corruption

    if is_corruption(exc):
        return corruption_message(_db_path(home), exc), EXIT_ERROR
    if isinstance(exc, sqlite3.OperationalError):
        return f"memory database {_db_path(home)}: {exc}", EXIT_ERROR
    if isinstance(exc, KeyError):
        return (str(exc.args[0]) if exc.args else "not found"), EXIT_ERROR
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename} is a folder; give a file", EXIT_ERROR
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}; check the owner and mode of that path", EXIT_ERROR
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}", EXIT_ERROR
    if isinstance(exc, (ValueError, RuntimeError, LookupError, OSError)):
        return str(exc), EXIT_ERROR
    return (f"unexpected {type(exc).__name__}: {exc} (a bug; `sdft-agent --debug …` shows the "
            "traceback to report)"), EXIT_BUG


def friendly_errors(fn):
    """Every error becomes one clear message (one or two lines) and a non-zero exit code;
    the traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CLI_EXITS:
            raise  # typer's own exits and usage errors (Exit is a RuntimeError: not ours to print)
        except Exception as exc:
            if debugging():
                raise
            message, code = explain(exc, kwargs.get("home"))
            fail(message, code)

    return wrapper
