"""`sdft-agent`: a thin command line over the packages; nothing imports it."""

from __future__ import annotations

import os
import sys
from typing import Annotated

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import typer  # noqa: E402

from cli import (  # noqa: E402
    agent_cmd,
    demo_cmd,
    eval_cmd,
    gate_cmd,
    learn_cmd,
    memory_cmd,
    models_cmd,
    serve_cmd,
    skills_cmd,
)
from cli.common import (  # noqa: E402
    EXIT_ERROR,
    Flags,
    HomeOption,
    console,
    debugging,
    err_console,
    explain,
    friendly_errors,
    install_warning_format,
    progress_wanted,
    silence_progress,
)

app = typer.Typer(
    help="An agent that learns new tools while it runs: chat with tools, remember what worked, "
    "learn it overnight with Self-Distillation Fine-Tuning, keep only what does not forget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models_cmd.app, name="models")
app.add_typer(skills_cmd.app, name="skills")
app.add_typer(memory_cmd.app, name="memory")
app.add_typer(gate_cmd.app, name="gate")
app.command()(agent_cmd.chat)
app.command()(agent_cmd.run)
app.command("eval")(eval_cmd.eval_)
app.command()(learn_cmd.learn)
app.command()(serve_cmd.serve)
app.command()(demo_cmd.demo)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sdft-agent")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sdft-agent {_version()}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars (they are shown only "
                                        "when stderr is a terminal anyway).")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")] = False,
):
    """An agent that learns new tools while it runs. Colours follow NO_COLOR."""
    Flags.quiet, Flags.debug = quiet, debug
    install_warning_format()
    if not progress_wanted():
        silence_progress()


@app.command()
@friendly_errors
def ask(
    question: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[str | None, typer.Option(help="Model version (default: the champion).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 128,
    home: HomeOption = None,
):
    """Answer one question with a model from the store (no tools, no memory).

    Example: sdft-agent ask "What is the capital of France?"
    """
    from agent.generate import generate_reply
    from agent.loading import load

    m, tok = load(model, home=home)
    console.print(generate_reply(m, tok, [{"role": "user", "content": question}], max_new_tokens=max_new_tokens))


def main() -> None:
    # The home holds private conversations: whatever the caller's umask, what this process (and
    # the learner it starts) creates is readable by the owner alone.
    os.umask(0o077)
    try:
        app()
    except Exception as exc:  # a command without its own handler: still no traceback
        if debugging():
            raise
        message, code = explain(exc)
        err_console.print(f"[bold red]error:[/] {message}")
        sys.exit(code or EXIT_ERROR)


if __name__ == "__main__":
    main()
