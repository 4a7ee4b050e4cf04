"""Switching constrained decoding off: agent.decode's default and its scoped override, and the
`--no-constrain` option of `run`, `chat` and `serve --stdin` reaching the one decoding path."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import agent.decode
from agent.decode import constraining, default_constrain
from cli import agent_cmd
from cli.main import app as main_app


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("SDFT_AGENT_CONSTRAIN", raising=False)


@pytest.fixture
def decoded(monkeypatch):
    """The `constrain` of every request that reaches agent.decode.complete."""
    seen: list[bool] = []
    real = agent.decode.complete

    def complete(model, fmt, requests, **kw):
        seen.extend(r.constrain for r in requests)
        return real(model, fmt, requests, **kw)

    monkeypatch.setattr(agent.decode, "complete", complete)
    return seen


def test_the_default_and_its_scoped_override(monkeypatch):
    assert default_constrain() is True
    with constraining(False) as on:
        assert on is False and default_constrain() is False
        with constraining(None) as inner:
            assert inner is False
        with constraining(True):
            assert default_constrain() is True
        assert default_constrain() is False
    assert default_constrain() is True
    monkeypatch.setenv("SDFT_AGENT_CONSTRAIN", "off")
    assert default_constrain() is False
    with constraining(True):
        assert default_constrain() is True


def _agent_app():
    app = typer.Typer()
    app.command()(agent_cmd.run)
    app.command()(agent_cmd.chat)
    return app


@pytest.mark.parametrize("flags, constrained", [([], True), (["--no-constrain"], False), (["--constrain"], True)])
def test_run_decodes_as_asked_and_says_so(store_home, decoded, flags, constrained):
    result = CliRunner().invoke(_agent_app(), ["run", "What weekday is 2024-07-04?", "--skill", "date_math",
                                               "--max-new-tokens", "8", "--max-turns", "1", "--json", *flags,
                                               "--home", str(store_home)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["constrained"] is constrained
    assert decoded and set(decoded) == {constrained}


def test_chat_without_constraints(store_home, decoded):
    result = CliRunner().invoke(_agent_app(), ["chat", "--skill", "date_math", "--max-new-tokens", "8",
                                               "--max-turns", "1", "--no-constrain", "--home", str(store_home)],
                                input="What weekday is 2024-07-04?\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "unconstrained tool calls" in result.output
    assert decoded and set(decoded) == {False}


@pytest.mark.parametrize("flags, constrained", [([], True), (["--no-constrain"], False)])
def test_stdin_daemon_decodes_as_asked(store_home, decoded, flags, constrained):
    session = json.dumps({"question": "What weekday is 2024-07-04?", "skill": "date_math"}) + "\n"
    result = CliRunner().invoke(main_app, ["serve", "--stdin", "--max-new-tokens", "8", *flags,
                                           "--home", str(store_home)], input=session)
    assert result.exit_code == 0, result.output
    ready, answer = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert ready["constrained"] is constrained and "id" in answer
    assert decoded and set(decoded) == {constrained}
