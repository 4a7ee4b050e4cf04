"""Demonstrations → examples → token ids, and the teacher's templates."""

import pytest

from agent.prompt import PromptFormat
from learner.examples import encode_example, examples_from_demonstrations
from learner.teacher_templates import PAPER_TEMPLATE, teacher_messages
from tiny import build_tiny_tokenizer

TOOL = {
    "name": "convert_units",
    "description": "Convert a value between units",
    "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                   "required": ["value", "unit"]},
}
CALL = {"name": "convert_units", "arguments": {"value": 5, "unit": "km"}}
SINGLE = {"id": 1, "skill": "units", "messages": [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": "Convert 5 miles to km."}],
          "tool_calls": [CALL], "content": None}
MULTI = {"id": 2, "skill": "units", "messages": [
    {"role": "user", "content": "Convert 5 miles to km."},
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "name": "convert_units", "content": '{"result": 8.05}'},
], "tool_calls": None, "content": "5 miles is 8.05 km."}


@pytest.fixture
def fmt(template_kind):
    return PromptFormat(build_tiny_tokenizer(template_kind))


def test_student_prompt_is_what_the_agent_sends(fmt):
    ex, multi = examples_from_demonstrations([SINGLE, MULTI], fmt, {"units": [TOOL]})
    for e, d in ((ex, SINGLE), (multi, MULTI)):
        enc = encode_example(e, fmt)
        assert enc.prompt_ids == fmt.encode(d["messages"], [TOOL])
        assert e.completion_text.endswith(fmt.end_of_turn)
        assert enc.completion_ids[-1] == fmt.end_of_turn_id
        # the completion continues the prompt token for token
        text = fmt.render(d["messages"], [TOOL]) + e.completion_text
        assert enc.prompt_ids + enc.completion_ids == fmt.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ex.is_tool_call and not multi.is_tool_call
    assert ex.completion_text == fmt.completion_text({"tool_calls": [CALL]}, SINGLE["messages"], [TOOL])
    assert multi.completion_text == "5 miles is 8.05 km." + fmt.end_of_turn


def test_tools_come_from_a_callable_and_none_means_no_tools(fmt):
    seen = []
    ex = examples_from_demonstrations([SINGLE, SINGLE], fmt, lambda s: seen.append(s) or [TOOL])[0]
    assert ex.tools == [TOOL] and seen == ["units"]  # looked up once per skill
    bare = examples_from_demonstrations([SINGLE], fmt, None)[0]
    assert bare.tools is None
    with pytest.raises(ValueError, match="nothing to learn|no tool calls"):
        examples_from_demonstrations([{**SINGLE, "tool_calls": None}], fmt)


def test_paper_template_replaces_the_last_user_turn(fmt):
    ex = examples_from_demonstrations([SINGLE], fmt, {"units": [TOOL]})[0]
    msgs = teacher_messages(ex, fmt, "paper")
    demo = ex.completion_text[: -len(fmt.end_of_turn)]
    assert msgs[0] == SINGLE["messages"][0]  # system message kept
    assert msgs[1]["content"] == PAPER_TEMPLATE.format(question="Convert 5 miles to km.", demonstration=demo)
    assert fmt.end_of_turn not in msgs[1]["content"]
    assert SINGLE["messages"][1]["content"] == "Convert 5 miles to km."  # input untouched


def test_paper_template_in_a_multi_turn_prefix(fmt):
    ex = examples_from_demonstrations([MULTI], fmt, {"units": [TOOL]})[0]
    msgs = teacher_messages(ex, fmt, "paper")
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool"]
    assert "This is an example for a response to the question:\n5 miles is 8.05 km.\n" in msgs[0]["content"]
    assert msgs[1:] == MULTI["messages"][1:]


def test_teacher_prompt_is_never_truncated(fmt):
    long_question = "Convert " + "very " * 400 + "many miles."
    d = {**SINGLE, "messages": [{"role": "user", "content": long_question}]}
    ex = examples_from_demonstrations([d], fmt, {"units": [TOOL]})[0]
    enc = encode_example(ex, fmt)
    text = fmt.tokenizer.decode(enc.teacher_prompt_ids)
    assert long_question in text and '"value": 5' in text
    assert len(enc.teacher_prompt_ids) > len(enc.prompt_ids) + len(enc.completion_ids) - 5


def test_previous_turn_template(fmt):
    ex = examples_from_demonstrations([SINGLE], fmt, {"units": [TOOL]})[0]
    msgs = teacher_messages(ex, fmt, "previous_turn")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["tool_calls"] == [CALL]
    assert msgs[1] == msgs[3] == SINGLE["messages"][1]
    # rendered, the earlier answer is exactly the demonstration's text
    enc = encode_example(ex, fmt, "previous_turn")
    assert ex.completion_text in fmt.tokenizer.decode(enc.teacher_prompt_ids)


def test_forced_opening_is_the_tool_call_prefix(fmt):
    ex = examples_from_demonstrations([SINGLE, MULTI], fmt, {"units": [TOOL]})
    call, answer = (encode_example(e, fmt, force_tool_prefix=True) for e in ex)
    assert fmt.tokenizer.decode(call.forced_ids) == fmt.tool_call_prefix()
    assert call.completion_ids[: len(call.forced_ids)] == call.forced_ids
    assert answer.forced_ids == []  # only tool-call demonstrations are forced
    assert encode_example(ex[0], fmt).forced_ids == []  # and only when asked
