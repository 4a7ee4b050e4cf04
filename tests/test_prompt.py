"""The prompt module: rendering for both template kinds, and parsing calls back."""

import json

import pytest

from agent.prompt import PromptFormat, parse_tool_calls
from tiny import build_tiny_tokenizer

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["c", "f"]},
        },
        "required": ["city"],
    },
}
TOOLS = [WEATHER]
CALL = {"name": "get_weather", "arguments": {"city": "Zürich", "days": 3, "unit": "c"}}
QUESTION = [{"role": "user", "content": "Weather in Zürich for 3 days?"}]


@pytest.fixture
def fmt(template_kind):
    return PromptFormat(build_tiny_tokenizer(template_kind))


def test_template_kind_is_detected(template_kind, fmt):
    assert fmt.native_tools is (template_kind == "native")


def test_tools_reach_the_prompt(fmt):
    text = fmt.render(QUESTION, TOOLS)
    assert '"name": "get_weather"' in text
    assert text.endswith("<|im_start|>assistant\n")
    assert "get_weather" not in fmt.render(QUESTION)


def test_round_trip_of_a_call(fmt):
    completion = fmt.completion_text({"tool_calls": [CALL]}, QUESTION, TOOLS)
    assert completion == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Zürich", "days": 3, "unit": "c"}}\n</tool_call><|im_end|>'
    parsed = fmt.parse(completion, TOOLS)
    assert parsed.calls == [CALL]
    assert parsed.invalid == [] and parsed.content == ""


def test_completion_extends_prompt_exactly(fmt):
    """prompt + completion + newline is what the template renders for the whole conversation,
    so a learned turn looks the same later in a longer conversation."""
    turn = {"role": "assistant", "tool_calls": [CALL]}
    prompt = fmt.render(QUESTION, TOOLS)
    full = fmt.render([*QUESTION, turn], TOOLS, add_generation_prompt=False)
    assert full == prompt + fmt.completion_text(turn, QUESTION, TOOLS) + "\n"


def test_multi_turn_with_tool_results(fmt):
    convo = [
        *QUESTION,
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "name": "get_weather", "content": '{"temp": 4}'},
        {"role": "tool", "name": "get_weather", "content": '{"temp": 6}'},
    ]
    text = fmt.render(convo, TOOLS)
    assert text.count("<tool_response>") == 2
    assert text.index('{"temp": 4}') < text.index('{"temp": 6}')
    answer = {"role": "assistant", "content": "4 to 6 degrees."}
    assert fmt.completion_text(answer, convo, TOOLS) == "4 to 6 degrees.<|im_end|>"


def test_encode_is_the_tokenized_render(fmt):
    ids = fmt.encode(QUESTION, TOOLS)
    assert fmt.tokenizer.decode(ids) == fmt.render(QUESTION, TOOLS)
    assert ids == fmt.tokenizer(fmt.render(QUESTION, TOOLS), add_special_tokens=False)["input_ids"]


def test_content_and_several_calls(fmt):
    second = {"name": "get_weather", "arguments": {"city": "Bern"}}
    text = f'Checking both.\n<tool_call>\n{json.dumps(CALL)}\n</tool_call>\n<tool_call>\n{json.dumps(second)}\n</tool_call><|im_end|>junk'
    parsed = fmt.parse(text, TOOLS)
    assert parsed.content == "Checking both."
    assert parsed.calls == [CALL, second]


@pytest.mark.parametrize(
    "block, reason",
    [
        ('{"name": "get_weather", "arguments": {"city": "Bern"', "malformed JSON"),
        ('["get_weather"]', 'a JSON object with a string "name"'),
        ('{"name": "get_time", "arguments": {}}', "unknown tool 'get_time' (known: get_weather)"),
        ('{"name": "get_weather", "arguments": {"city": 7}}', "arguments.city: 7 is not of type 'string'"),
        ('{"name": "get_weather", "arguments": {"city": "Bern", "days": "3"}}', "arguments.days: '3' is not of type 'integer'"),
        ('{"name": "get_weather", "arguments": {}}', "arguments.city: required argument is missing"),
        ('{"name": "get_weather", "arguments": {"city": "Bern", "hour": 3}}', "arguments.hour: not a parameter of 'get_weather'"),
        ('{"name": "get_weather", "arguments": {"city": "Bern", "unit": "k"}}', "arguments.unit: 'k' is not one of ['c', 'f']"),
        ('{"name": "get_weather", "arguments": [1]}', '"arguments" must be a JSON object'),
    ],
)
def test_invalid_calls_come_back_with_a_reason(block, reason):
    parsed = parse_tool_calls(f"<tool_call>\n{block}\n</tool_call>", TOOLS)
    assert parsed.calls == []
    assert len(parsed.invalid) == 1
    assert reason in parsed.invalid[0].error
    assert parsed.invalid[0].raw == block


def test_unterminated_block_is_invalid():
    parsed = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Bern"}}', TOOLS)
    assert parsed.calls == [] and "unterminated" in parsed.invalid[0].error
    assert parsed.invalid[0].name == "get_weather"  # the tool it opened with, for whoever reads it
    cut = parse_tool_calls('<tool_call>\n{"arguments": {"city": "Be', TOOLS)
    assert "unterminated" in cut.invalid[0].error and cut.invalid[0].name is None


def test_plain_text_has_no_calls(fmt):
    parsed = fmt.parse("Paris is the capital of France.<|im_end|>", TOOLS)
    assert parsed.content == "Paris is the capital of France." and parsed.calls == [] and parsed.ok


def test_bad_messages_are_refused(fmt):
    with pytest.raises(ValueError, match=r"^messages\[0\]\.role: must be one of system, user, assistant, tool \(got 'robot'\)$"):
        fmt.render([{"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match=r"^messages\[1\]\.role: must be one of .* \(got 'int'\)$"):
        fmt.render([*QUESTION, 3])
    with pytest.raises(ValueError, match=r"^messages\[1\]\.role: a system message may only come first$"):
        fmt.render([*QUESTION, {"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="non-empty list"):
        fmt.render([])


def test_template_less_tokenizer_is_refused():
    tok = build_tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        PromptFormat(tok)
