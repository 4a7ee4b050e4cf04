"""Every validation rule of the episodic memory, one at a time: the error names the field, and
a rejected call writes nothing."""

from __future__ import annotations

import pytest

from memory import validate
from memory.store import Memory, ValidationError

WEATHER = {
    "name": "get_weather",
    "description": "Weather forecast for a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "minimum": 1},
            "units": {"type": "string", "enum": ["metric", "imperial"]},
        },
        "required": ["city"],
    },
}
ASK = [{"role": "user", "content": "Weather in Paris for 3 days?"}]
GOOD = [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]


@pytest.fixture
def mem(tmp_path):
    m = Memory(tmp_path)
    m.add_skill("weather", "Forecasts", [WEATHER])
    yield m
    m.close()


def rejected(mem, *args, **kwargs) -> str:
    """Add a demonstration that must be refused; check nothing was written; return the message."""
    with pytest.raises(ValidationError) as info:
        mem.add_demonstration(*args, **kwargs)
    assert mem.db.execute("SELECT count(*) FROM demonstrations").fetchone()[0] == 0
    assert mem.db.execute("SELECT count(*) FROM demonstrations_fts").fetchone()[0] == 0
    return str(info.value)


def test_valid_demonstration_is_stored(mem):
    demo_id, created = mem.add_demonstration("weather", ASK, GOOD)
    assert created and mem.demonstration(demo_id)["tool_calls"] == GOOD


def test_tool_not_in_skill(mem):
    msg = rejected(mem, "weather", ASK, [{"name": "book_flight", "arguments": {}}])
    assert msg.startswith("demonstration.tool_calls[0].name: 'book_flight' is not a tool of skill 'weather'")
    assert "get_weather" in msg  # says which tools exist


def test_missing_required_argument(mem):
    msg = rejected(mem, "weather", ASK, [{"name": "get_weather", "arguments": {"days": 2}}])
    assert msg == "demonstration.tool_calls[0].arguments.city: required argument is missing"


def test_argument_outside_schema(mem):
    msg = rejected(mem, "weather", ASK, [{"name": "get_weather", "arguments": {"city": "Paris", "country": "FR"}}])
    assert msg.startswith("demonstration.tool_calls[0].arguments.country: not a parameter of 'get_weather'")


def test_argument_of_wrong_json_type(mem):
    msg = rejected(mem, "weather", ASK, [{"name": "get_weather", "arguments": {"city": "Paris", "days": "3"}}])
    assert msg == "demonstration.tool_calls[0].arguments.days: '3' is not of type 'integer'"


def test_argument_outside_enum_names_the_second_call(mem):
    calls = GOOD + [{"name": "get_weather", "arguments": {"city": "Oslo", "units": "kelvin"}}]
    msg = rejected(mem, "weather", ASK, calls)
    assert msg.startswith("demonstration.tool_calls[1].arguments.units: 'kelvin' is not one of")


def test_arguments_as_json_string_are_refused_with_a_hint(mem):
    msg = rejected(mem, "weather", ASK, [{"name": "get_weather", "arguments": '{"city": "Paris"}'}])
    assert msg == "demonstration.tool_calls[0].arguments: expected a JSON object, got str (decode it with json.loads first)"


def test_every_error_is_reported_at_once(mem):
    msg = rejected(mem, "weather", ASK, [{"name": "get_weather", "arguments": {"days": 0, "x": 1}}])
    lines = msg.splitlines()
    assert "demonstration.tool_calls[0].arguments.city: required argument is missing" in lines
    assert any(line.startswith("demonstration.tool_calls[0].arguments.x: not a parameter") for line in lines)
    assert "demonstration.tool_calls[0].arguments.days: 0 is less than the minimum of 1" in lines


def test_message_content_over_size_limit(mem):
    long = [{"role": "user", "content": "x" * (validate.MAX_TEXT_CHARS + 1)}]
    msg = rejected(mem, "weather", long, GOOD)
    assert msg == f"demonstration.messages[0].content: {validate.MAX_TEXT_CHARS + 1} characters, the limit is {validate.MAX_TEXT_CHARS}; shorten it"


def test_too_many_tool_calls(mem):
    msg = rejected(mem, "weather", ASK, GOOD * (validate.MAX_TOOL_CALLS + 1))
    assert msg == f"demonstration.tool_calls: {validate.MAX_TOOL_CALLS + 1} tool calls, the limit is {validate.MAX_TOOL_CALLS}"


def test_total_size_limit(mem):
    turns = [{"role": "user", "content": "y" * 30_000}, {"role": "assistant", "content": "ok"}] * 5
    msg = rejected(mem, "weather", turns[:-1], GOOD)
    assert msg.startswith("demonstration: ") and f"the limit is {validate.MAX_DEMO_BYTES}" in msg


def test_too_many_messages(mem):
    turns = [{"role": "user", "content": "hi"}] * (validate.MAX_MESSAGES + 1)
    assert rejected(mem, "weather", turns, GOOD).startswith(
        f"demonstration.messages: {validate.MAX_MESSAGES + 1} messages, the limit is {validate.MAX_MESSAGES}")


def test_unknown_role_and_unknown_message_field(mem):
    msg = rejected(mem, "weather", [{"role": "robot", "content": "hi", "lang": "en"}, *ASK], GOOD)
    assert "demonstration.messages[0].role: must be one of system, user, assistant, tool (got 'robot')" in msg
    assert "demonstration.messages[0].lang: unknown field" in msg


def test_prefix_must_end_before_the_assistant_turn(mem):
    msg = rejected(mem, "weather", ASK + [{"role": "assistant", "content": "Sure"}], GOOD)
    assert msg.startswith("demonstration.messages[1].role: the messages end just before the assistant turn")


def test_empty_turn_to_learn(mem):
    assert rejected(mem, "weather", ASK, [], None) == (
        "demonstration: the assistant turn to learn is empty; give tool_calls or content")


def test_empty_messages(mem):
    assert rejected(mem, "weather", [], GOOD) == "demonstration.messages: at least one message is required"


def test_unknown_skill(mem):
    msg = rejected(mem, "travel", ASK, GOOD)
    assert msg == "demonstration.skill: unknown skill 'travel' (known: weather); add it with add_skill"


def test_bad_source(mem):
    assert rejected(mem, "weather", ASK, GOOD, source="web") == (
        "demonstration.source: must be one of live, taught, imported (got 'web')")


def test_not_json_serialisable_provenance(mem):
    msg = rejected(mem, "weather", ASK, GOOD, provenance={"when": object()})
    assert msg.startswith("demonstration.provenance: not JSON-serialisable")


def test_batch_with_one_bad_demonstration_writes_nothing(mem):
    bad = {"messages": ASK, "tool_calls": [{"name": "get_weather", "arguments": {}}]}
    with pytest.raises(ValidationError, match=r"^demonstrations\[1\]\.tool_calls\[0\]\.arguments\.city"):
        mem.add_demonstrations("weather", [{"messages": ASK, "tool_calls": GOOD}, bad])
    assert mem.demonstrations() == []


def test_bad_tool_schema_is_refused_and_the_skill_not_created(tmp_path):
    with Memory(tmp_path) as m:
        bad = {"name": "f", "parameters": {"type": "dict", "properties": {}}}
        with pytest.raises(ValidationError, match=r"^skill\.tools\[0\]\.parameters: must be a JSON Schema"):
            m.add_skill("s", "", [bad])
        with pytest.raises(ValidationError, match="'f' appears more than once"):
            m.add_skill("s", "", [WEATHER | {"name": "f"}, WEATHER | {"name": "f"}])
        assert m.list_skills() == []


def test_episode_validation(mem):
    with pytest.raises(ValidationError, match=r"^episode\.outcome: must be one of success, failure, unknown"):
        mem.record_episode(ASK, outcome="great")
    with pytest.raises(ValidationError, match=r"^episode\.source: must be one of live, taught, imported"):
        mem.record_episode(ASK, source="web")
    with pytest.raises(ValidationError, match=r"^episode\.messages\[0\]\.content: expected a string, got int"):
        mem.record_episode([{"role": "user", "content": 3}])
    with pytest.raises(ValidationError, match=r"^episode\.skill: unknown skill 'nope'"):
        mem.record_episode(ASK, skill="nope")
    with pytest.raises(ValidationError, match=r"^episodes\[1\]\.tool_calls\[0\]\.name"):
        mem.record_episodes([{"messages": ASK}, {"messages": ASK, "tool_calls": [{"arguments": {}}]}])
    assert mem.last_episode() is None


def test_eval_case_validation(mem):
    with pytest.raises(ValidationError, match=r"^eval_case\.expected\[0\]\.arguments\.city: must be a non-empty list"):
        mem.add_eval_case("weather", ASK, [{"name": "get_weather", "arguments": {"city": "Paris"}}])
    with pytest.raises(ValidationError, match=r"^eval_case\.expected\[0\]\.arguments\.zip: not a parameter"):
        mem.add_eval_case("weather", ASK, [{"name": "get_weather", "arguments": {"zip": ["1"], "city": ["Paris"]}}])
    with pytest.raises(ValidationError, match=r"^eval_case\.expected\[0\]\.arguments\.city: required argument has no"):
        mem.add_eval_case("weather", ASK, [{"name": "get_weather", "arguments": {"days": [2]}}])
    with pytest.raises(ValidationError, match=r"^eval_case\.expected\[0\]\.arguments\.days\[0\]: 0 is less than the minimum"):
        mem.add_eval_case("weather", ASK, [{"name": "get_weather", "arguments": {"city": ["Paris"], "days": [0]}}])
    with pytest.raises(ValidationError, match=r"^eval_case\.expected\[0\]\.name: 'x' is not a tool of skill 'weather'"):
        mem.add_eval_case("weather", ASK, [{"name": "x", "arguments": {}}])
    assert mem.eval_cases("weather") == []


def test_run_validation(mem):
    run = mem.start_run("sdft", {})
    with pytest.raises(ValidationError, match=r"^run\.lr: not a run field \(allowed: status, phase"):
        mem.update_run(run, lr=1)
    with pytest.raises(ValidationError, match=r"^run\.status: must be one of running, succeeded"):
        mem.update_run(run, status="done")
    with pytest.raises(ValidationError, match="not 'running'"):
        mem.finish_run(run, "running")
    assert mem.run(run)["status"] == "running"
