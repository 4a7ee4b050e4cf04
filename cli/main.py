"""`sdft-agent`: a thin command line over the packages; nothing imports it."""

from __future__ import annotations

import os
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
from cli.common import HomeOption, console, friendly_errors  # noqa: E402

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
    app()


if __name__ == "__main__":
    main()
