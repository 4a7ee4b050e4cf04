"""`sdft-agent run` and `sdft-agent chat` over a tiny model store and the bundled date_math tools."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from agent_support import call
from cli import agent_cmd
from memory.store import Memory

runner = CliRunner()
app = typer.Typer()
app.command()(agent_cmd.run)
app.command()(agent_cmd.chat)


def test_run_json_gives_calls_results_answer_and_episode_id(store_home, script):
    script += [call("days_between", start="2024-01-01", end="2024-03-01"), "60 days."]
    result = runner.invoke(app, ["run", "How many days from 2024-01-01 to 2024-03-01?", "--skill", "date_math",
                                 "--json", "--home", str(store_home)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["tool_calls"] == [{"name": "days_between", "arguments": {"start": "2024-01-01", "end": "2024-03-01"}}]
    assert out["tool_results"][0]["content"] == '{"days": 60}' and out["tool_results"][0]["status"] == "success"
    assert out["answer"] == "60 days." and out["status"] == "answered" and out["model_version"] == "tiny"
    with Memory(store_home) as mem:
        ep = mem.episode(out["episode_id"])
    assert ep["skill"] == "date_math" and ep["model_version"] == "tiny" and ep["answer"] == "60 days."


def test_run_with_the_real_tiny_model_prints_an_episode(store_home):
    result = runner.invoke(app, ["run", "What weekday is 2024-07-04?", "--max-new-tokens", "8", "--max-turns", "2",
                                 "--home", str(store_home)])
    assert result.exit_code == 0, result.output
    assert "model tiny" in result.output and "episode 1" in result.output


def test_run_unknown_skill_is_one_clear_error(store_home):
    result = runner.invoke(app, ["run", "hi", "--skill", "nope", "--home", str(store_home)])
    assert result.exit_code == 1
    assert "unknown skill 'nope' (known: date_math)" in result.output and "Traceback" not in result.output


def test_chat_session_with_feedback_and_teaching(store_home, script):
    script += [call("weekday_of", date="2024-07-04"), "A Thursday.", call("add_days", date="2024-01-01", days=3), "Done."]
    session = "\n".join([
        "/tools",
        "/model",
        "What weekday is 2024-07-04?",
        "/good nice",
        "What is 30 days after 2024-01-01?",
        '/teach {"name": "add_days", "arguments": {"date": "2024-01-01", "days": "thirty"}}',
        '/teach {"name": "add_days", "arguments": {"date": "2024-01-01", "days": 30}}',
        "/bad",
        "/nonsense",
        "/help",
        "/quit",
    ]) + "\n"
    result = runner.invoke(app, ["chat", "--skill", "date_math", "--home", str(store_home)], input=session)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "add_days(date, days)" in out and "serving tiny" in out
    assert "→ weekday_of(date=\"2024-07-04\")" in out and '{"weekday": "Thursday"}' in out and "A Thursday." in out
    assert "episode 1 marked success; kept as demonstration" in out
    assert "error: call 1 (add_days): arguments.days: 'thirty' is not of type 'integer'" in out
    assert "stored: demonstration" in out and "for episode 2" in out
    assert "episode 2 marked failure" in out
    assert "unknown command /nonsense" in out and "/teach CALLS" in out
    with Memory(store_home) as mem:
        demos = mem.demonstrations("date_math")
        assert [d["source"] for d in demos] == ["live", "taught"]
        assert demos[1]["tool_calls"] == [{"name": "add_days", "arguments": {"date": "2024-01-01", "days": 30}}]
        assert mem.episode(1)["outcome"] == "success" and mem.episode(2)["outcome"] == "failure"


def test_run_route_offers_small_talk_no_tool_and_a_date_question_the_date_tools(store_home, script):
    script += ["You're welcome!"]
    with Memory(store_home) as mem:  # routing judges a skill by its demonstrations
        mem.add_demonstrations("date_math", [{
            "messages": [{"role": "user", "content": "How many days from 2023-05-01 to 2023-06-01?"}],
            "tool_calls": [{"name": "days_between", "arguments": {"start": "2023-05-01", "end": "2023-06-01"}}]}])
    thanks = runner.invoke(app, ["run", "Thanks, that was helpful!", "--route", "--recall", "0", "--json",
                                 "--home", str(store_home)])
    assert thanks.exit_code == 0, thanks.output
    assert json.loads(thanks.stdout)["offered"] == [] and json.loads(thanks.stdout)["answer"] == "You're welcome!"
    script[:] = [call("days_between", start="2024-01-01", end="2024-03-01"), "60 days."]
    days = runner.invoke(app, ["run", "How many days are there from 2024-01-01 to 2024-03-01?", "--route",
                               "--recall", "0", "--json", "--home", str(store_home)])
    out = json.loads(days.stdout)
    with Memory(store_home) as mem:
        date_tools = [t["name"] for t in mem.tools_for("date_math")]
    assert out["offered"] == date_tools and out["answer"] == "60 days."
    plain = runner.invoke(app, ["run", "Thanks!", "--all-tools", "--json", "--home", str(store_home)])
    assert json.loads(plain.stdout)["offered"] is None
