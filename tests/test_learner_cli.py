"""`sdft-agent learn` end to end on the tiny model: new demonstrations → candidate version,
run record, demonstrations marked used."""

import typer
from typer.testing import CliRunner

from cli import learn_cmd
from memory.models import ModelStore
from memory.store import Memory

TOOL = {"name": "convert_units", "description": "Convert a value between units",
        "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                       "required": ["value", "unit"]}}

app = typer.Typer()
app.command()(learn_cmd.learn)
app.command("noop")(lambda: None)  # a second command keeps `learn` a subcommand, as in cli/main.py
runner = CliRunner()


def _teach(home):
    mem = Memory(home)
    mem.add_skill("units", "Convert units", [TOOL])
    ids = [mem.add_demonstration("units", [{"role": "user", "content": f"Convert {v} miles to km."}],
                                 [{"name": "convert_units", "arguments": {"value": v, "unit": "km"}}])[0]
           for v in (1, 2, 3)]
    return mem, ids


def test_help_has_an_example():
    result = runner.invoke(app, ["learn", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output


def test_dry_run_writes_nothing(tiny_home):
    mem, ids = _teach(tiny_home)
    result = runner.invoke(app, ["learn", "--dry-run", "--home", str(tiny_home)])
    assert result.exit_code == 0, result.output
    assert "3 demonstration(s)" in result.output and "dry run" in result.output
    assert len(mem.unlearned_demonstrations()) == 3 and mem.runs() == []
    assert [v.version for v in ModelStore(tiny_home, quiet=True).versions()] == ["tiny"]


def test_learn_writes_a_candidate_and_marks_demonstrations(tiny_home):
    mem, ids = _teach(tiny_home)
    result = runner.invoke(app, ["learn", "--method", "sdft", "--skill", "units", "--max-steps", "2",
                                 "--batch-size", "2", "--max-new-tokens", "8", "--home", str(tiny_home)])
    assert result.exit_code == 0, result.output
    assert "candidate v0001" in result.output
    store = ModelStore(tiny_home, quiet=True)
    assert store.champion_name() == "tiny"  # left unpromoted
    manifest = store.manifest("v0001")
    assert manifest["method"] == "sdft" and sorted(manifest["demonstrations"]) == sorted(ids)
    run = mem.runs()[0]
    assert run["status"] == "succeeded" and run["candidate_version"] == "v0001"
    assert run["base_version"] == "tiny" and run["skill"] == "units" and run["method"] == "sdft"
    assert run["metrics"]["steps"] == 2 and "divergence" in run["metrics"]
    assert [p["phase"] for p in run["phases"]] == ["train", "merge", "candidate"]
    assert mem.unlearned_demonstrations() == []

    again = runner.invoke(app, ["learn", "--home", str(tiny_home)])
    assert again.exit_code == 0 and "nothing to learn" in again.output


def test_bad_option_is_one_clear_line(tiny_home):
    _teach(tiny_home)
    result = runner.invoke(app, ["learn", "--teacher", "oracle", "--home", str(tiny_home)])
    assert result.exit_code == 1
    assert "teacher must be one of ema, base, live" in result.output and "Traceback" not in result.output


def test_set_reaches_the_config_and_bad_fields_are_named(tiny_home):
    from learner.config import parse_settings

    assert parse_settings(["skip_first=0", "teacher_template=previous_turn", "force_tool_prefix=true"]) == {
        "skip_first": 0, "teacher_template": "previous_turn", "force_tool_prefix": True}
    mem, ids = _teach(tiny_home)
    result = runner.invoke(app, ["learn", "--dry-run", "--set", "skip_frist=0", "--home", str(tiny_home)])
    assert result.exit_code == 1 and "no such learning setting" in result.output and "skip_first" in result.output
    result = runner.invoke(app, ["learn", "--dry-run", "--set", "skip_first", "--home", str(tiny_home)])
    assert result.exit_code == 1 and "expected FIELD=VALUE" in result.output
    result = runner.invoke(app, ["learn", "--dry-run", "--set", "lr=0.1", "--home", str(tiny_home)])
    assert result.exit_code == 1 and "use --lr instead" in result.output
    result = runner.invoke(app, ["learn", "--dry-run", "--set", "replay=5", "--home", str(tiny_home)])
    assert result.exit_code == 1 and "use --replay instead" in result.output
    result = runner.invoke(app, ["learn", "--dry-run", "--set", "skip_first=-1", "--home", str(tiny_home)])
    assert result.exit_code == 1 and "skip_first must be 0 or more" in result.output


def test_default_is_the_shipped_recipe(tiny_home):
    from learner.config import SHIPPED, LearnConfig, shipped_config

    # The shipped recipe, pinned: SFT at lr 1e-3 in the served prompt with 20 rehearsed
    # demonstrations (two riding along in each micro-batch), retention KL (the base teaching everyday and tool-sounding requests)
    # (benchmarks/results/README.md); changing it should change these lines on purpose.
    assert SHIPPED == {"method": "sft", "lr": 1e-3, "retention": "kl", "demo_tools": "served", "replay": 20,
                       "replay_batch": 2,
                       "retention_teacher": "base", "retention_beta": 2.0, "retention_batch": 16,
                       "retention_task_share": 0.5, "retention_demo_share": 0.0}
    assert shipped_config().replay == 20 and shipped_config(replay=0).replay == 0
    d = LearnConfig()
    assert (d.retention_batch, d.retention_prompts, d.retention_max_new_tokens, d.retention_tools_share,
            d.retention_beta) == (8, 64, 16, 1.0, 1.0)
    _teach(tiny_home)
    result = runner.invoke(app, ["learn", "--dry-run", "--home", str(tiny_home)])
    assert result.exit_code == 0 and "sft: 3 demonstration(s)" in result.output
    assert "sdft: 3" not in result.output
    result = runner.invoke(app, ["learn", "--dry-run", "--method", "sdft", "--home", str(tiny_home)])
    assert result.exit_code == 0 and "sdft: 3 demonstration(s)" in result.output
    cfg = shipped_config(max_steps=3)
    assert (cfg.method, cfg.lr, cfg.max_steps) == ("sft", 1e-3, 3)
    assert LearnConfig().lr != 1e-3 and LearnConfig().method == "sdft"  # the paper's, without the shipped overrides
    assert cfg.teacher == LearnConfig().teacher  # everything else is the paper's
