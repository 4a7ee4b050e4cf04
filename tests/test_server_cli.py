"""`sdft-agent serve`: the stdin daemon's feedback (good, bad, teach) names its episode, and
HTTP beyond loopback needs a key."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.main import app
from memory.store import Memory

runner = CliRunner()


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_stdin_feedback_must_name_its_episode(tiny_home):
    with Memory(tiny_home) as mem:
        mem.add_skill("math", "Arithmetic", [{"name": "multiply", "description": "x", "parameters": {
            "type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}}])
        eid = mem.record_episode([{"role": "user", "content": "double 2"},
                                  {"role": "assistant", "content": "", "tool_calls": [{"name": "multiply", "arguments": {"a": 2}}]}],
                                 [{"name": "multiply", "arguments": {"a": 2}}], skill="math")
        other = mem.record_episode([{"role": "user", "content": "someone else's"}], answer="hi")
    session = "\n".join([
        '{"command": "good"}',
        "not json",
        json.dumps({"command": "good", "episode_id": eid}),
        json.dumps({"command": "bad", "episode_id": eid}),
        '{"command": "status"}',
        json.dumps({"command": "teach", "tool_calls": [{"name": "multiply", "arguments": {"a": 3}}]}),
        json.dumps({"command": "teach", "episode_id": eid, "tool_calls": [{"name": "multiply", "arguments": {"a": "x"}}]}),
        json.dumps({"command": "teach", "episode_id": eid, "tool_calls": [{"name": "multiply", "arguments": {"a": 3}}]}),
        json.dumps({"command": "bad", "episode_id": eid}),
    ]) + "\n"
    result = runner.invoke(app, ["serve", "--stdin", "--home", str(tiny_home)], input=session)
    assert result.exit_code == 0, result.output
    ready, no_id, not_json, good, bad, status, teach_no_id, teach_wrong, taught, bad_again = lines(result.output)
    assert ready["event"] == "ready" and ready["champion"] == "tiny"
    assert "name the episode" in no_id["error"] and "episode_id" in no_id["error"]
    assert "not JSON" in not_json["error"]
    assert good["outcome"] == "success" and good["demonstration_id"] is not None
    assert bad["outcome"] == "failure" and bad["retracted"] == [good["demonstration_id"]]
    assert status["unlearned_demonstrations"] == 0
    assert "name the episode" in teach_no_id["error"]
    assert "arguments" in teach_wrong["error"]
    assert taught["episode_id"] == eid and taught["taught_id"] is not None and taught["outcome"] == "failure"
    assert bad_again["retracted"] == []  # a taught correction stays
    with Memory(tiny_home) as mem:
        assert mem.episode(other)["outcome"] == "unknown"  # the newest episode was never judged
        assert [d["id"] for d in mem.demonstrations("math")] == [taught["taught_id"]]
        assert mem.demonstrations("math")[0]["source"] == "taught"


def test_http_beyond_loopback_needs_a_key(tiny_home, monkeypatch):
    monkeypatch.delenv("SDFT_AGENT_API_KEY", raising=False)
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--home", str(tiny_home)])
    assert result.exit_code == 1 and "--api-key" in result.output and "Traceback" not in result.output
