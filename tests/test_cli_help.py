"""Every command explains itself and shows an example."""

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path)
        else:
            yield path


@pytest.mark.parametrize("path", sorted(_commands(get_command(app))), ids=" ".join)
def test_help_has_an_example(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output


def test_top_level_help_lists_models():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "models" in result.output


def test_cli_error_is_one_clear_line(tiny_home):
    result = runner.invoke(app, ["models", "use", "v42", "--home", str(tiny_home)])
    assert result.exit_code == 1
    assert "no model version 'v42' (known: tiny)" in result.output
    assert "Traceback" not in result.output
