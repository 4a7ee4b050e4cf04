"""LocalChatModel as a langchain-core chat model: tool calling, invalid calls, streaming, usage,
and the prompt it sends being exactly the prompt module's (what the learner trains on)."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, Field

from agent.chat_model import LocalChatModel, from_dicts, to_dicts, tool_schemas
from agent.loop import Agent, AgentConfig
from agent.prompt import PromptFormat
from agent_support import MULTIPLY, add, call, multiply, scripted_llm
from tiny import build_tiny_model, build_tiny_tokenizer


def test_langchain_tool_loop_with_tool_functions_reaches_the_final_answer(template_kind):
    """The loop from LangChain's tool-calling docs, unchanged, over a local model."""
    llm, model, _ = scripted_llm([call("multiply", a=6, b=7), "6 times 7 is 42."], kind=template_kind)
    llm_with_tools = llm.bind_tools([multiply, add])
    tools_by_name = {"multiply": multiply, "add": add}

    messages = [HumanMessage("What is 6 times 7?")]
    ai_msg = llm_with_tools.invoke(messages)
    messages.append(ai_msg)
    for tool_call in ai_msg.tool_calls:
        messages.append(tools_by_name[tool_call["name"]].invoke(tool_call))
    final = llm_with_tools.invoke(messages)

    assert ai_msg.tool_calls[0]["name"] == "multiply" and ai_msg.tool_calls[0]["args"] == {"a": 6, "b": 7}
    assert ai_msg.tool_calls[0]["id"].startswith("call_") and ai_msg.content == ""
    assert isinstance(messages[2], ToolMessage) and messages[2].content == "42"
    assert final.content == "6 times 7 is 42." and final.tool_calls == []
    # the second prompt carries the call and its result
    second = PromptFormat(llm.runtime.loaded.tokenizer).tokenizer.decode(model.inputs[1])
    assert "<tool_response>\n42\n</tool_response>" in second and '"arguments": {"a": 6, "b": 7}' in second


def test_usage_and_version_metadata():
    llm, model, tok = scripted_llm(["hello"], version="v0007")
    ai = llm.invoke([SystemMessage("Be brief."), HumanMessage("hi")])
    assert ai.response_metadata["model_version"] == "v0007"
    assert ai.response_metadata["finish_reason"] == "stop"
    n_in = len(model.inputs[0])
    assert ai.usage_metadata["input_tokens"] == n_in
    n_out = len(tok("hello", add_special_tokens=False)["input_ids"]) + 1  # plus end of turn
    assert ai.usage_metadata["output_tokens"] == n_out
    assert ai.usage_metadata["total_tokens"] == n_in + n_out


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ('<tool_call>\n{"name": "multiply", "arguments": {"a": 6, "b": }\n</tool_call>', "malformed JSON"),
        (call("divide", a=6, b=7), "unknown tool 'divide'"),
        (call("multiply", a="six", b=7), "arguments.a: 'six' is not of type 'integer'"),
        ('<tool_call>\n{"name": "multiply", "arguments": {"a": 6', "unterminated"),
    ],
)
def test_invalid_calls_come_back_as_invalid_tool_calls(reply, error):
    llm, _, _ = scripted_llm([reply])
    ai = llm.bind_tools([multiply]).invoke("What is 6 times 7?")
    assert ai.tool_calls == []
    assert len(ai.invalid_tool_calls) == 1
    assert error in ai.invalid_tool_calls[0]["error"]
    assert ai.invalid_tool_calls[0]["id"].startswith("call_")


def test_no_bound_tools_means_any_call_is_invalid():
    llm, _, _ = scripted_llm([call("multiply", a=1, b=2)])
    ai = llm.invoke("hi")
    assert ai.tool_calls == [] and "unknown tool 'multiply' (known: none)" in ai.invalid_tool_calls[0]["error"]


def test_bind_tools_takes_pydantic_models_dicts_and_functions():
    class GetWeather(BaseModel):
        """Current weather in a city."""

        city: str = Field(description="the city")

    def lookup(term: str) -> str:
        """Look a term up."""
        return term

    llm, model, tok = scripted_llm([call("GetWeather", city="Paris")])
    ai = llm.bind_tools([GetWeather, MULTIPLY, lookup]).invoke("Weather in Paris?")
    assert ai.tool_calls[0]["name"] == "GetWeather" and ai.tool_calls[0]["args"] == {"city": "Paris"}
    prompt = tok.decode(model.inputs[0])
    assert all(f'"name": "{n}"' in prompt for n in ("GetWeather", "multiply", "lookup"))


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: str


def test_structured_output_forces_a_call():
    """with_structured_output binds with tool_choice="any": the reply is forced to open a call."""
    llm, model, tok = scripted_llm(['{"name": "GetWeather", "arguments": {"city": "Oslo"}}\n</tool_call>'])
    assert llm.with_structured_output(GetWeather).invoke("Weather in Oslo?") == GetWeather(city="Oslo")
    assert tok.decode(model.inputs[0]).endswith("<|im_start|>assistant\n<tool_call>\n")


def test_named_tool_choice_forces_that_tools_call():
    llm, model, tok = scripted_llm(['{"city": "Oslo"}}\n</tool_call>'])
    ai = llm.bind_tools([GetWeather, multiply], tool_choice="GetWeather").invoke("Weather in Oslo?")
    assert [(c["name"], c["args"]) for c in ai.tool_calls] == [("GetWeather", {"city": "Oslo"})]
    prompt_ids = PromptFormat(tok).encode([{"role": "user", "content": "Weather in Oslo?"}],
                                          tool_schemas([GetWeather, multiply]))
    assert model.inputs[0][: len(prompt_ids)] == prompt_ids
    assert tok.decode(model.inputs[0][len(prompt_ids):]) == '<tool_call>\n{"name": "GetWeather", "arguments": '
    assert ai.usage_metadata["input_tokens"] == len(prompt_ids)
    with pytest.raises(ValueError, match="not one of the bound tools"):
        llm.bind_tools([multiply], tool_choice="divide")


def test_tool_choice_none_hides_the_tools():
    llm, model, tok = scripted_llm(["fine"])
    llm.bind_tools([multiply], tool_choice="none").invoke("hi")
    assert "multiply" not in tok.decode(model.inputs[0])


def test_stream_gives_the_same_message_as_invoke():
    with_call = "Let me compute.\n" + call("multiply", a=6, b=7)
    llm, _, _ = scripted_llm([with_call, with_call, "It is 42."])
    bound = llm.bind_tools([multiply])
    chunks = list(bound.stream("What is 6 times 7?"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    invoked = bound.invoke("What is 6 times 7?")
    assert merged.content == invoked.content == "Let me compute."
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("multiply", {"a": 6, "b": 7})]
    assert all("<tool_call>" not in c.content for c in chunks)  # call text is never streamed as content
    assert merged.usage_metadata == invoked.usage_metadata
    text_chunks = list(bound.stream("again"))
    assert "".join(c.content for c in text_chunks) == "It is 42."


def test_real_tiny_model_random_text_does_not_break_anything():
    tok = build_tiny_tokenizer("fallback")
    llm = LocalChatModel.from_model(build_tiny_model(tok), tok, "tiny", max_new_tokens=12)
    bound = llm.bind_tools([multiply])
    ai = bound.invoke("What is 6 times 7?")
    assert isinstance(ai, AIMessage) and ai.usage_metadata["output_tokens"] <= 12
    assert sum(len(c.content) for c in bound.stream("hi")) >= 0
    episode = Agent(llm, [multiply]).run("What is 6 times 7?")
    assert episode.status in {"answered", "failed", "turn_limit"}


def test_message_dicts_round_trip():
    dicts = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "multiply", "arguments": {"a": 1, "b": 2}}]},
        {"role": "tool", "content": "2", "name": "multiply"},
        {"role": "assistant", "content": "2"},
    ]
    assert to_dicts(from_dicts(dicts)) == dicts


# ---- the byte-identity contract with the learner ----------------------------------------------

QUESTION = "What is 6 times 7?"


def test_agent_sends_exactly_the_learners_student_prompt_single_turn(template_kind):
    llm, model, tok = scripted_llm(["42"], kind=template_kind)
    agent = Agent(llm, [(MULTIPLY, lambda a, b: a * b)], config=AgentConfig(recall_k=0))
    agent.run(QUESTION)
    learner_ids = PromptFormat(tok).encode([{"role": "user", "content": QUESTION}], [MULTIPLY])
    assert model.inputs == [learner_ids]


def test_agent_sends_exactly_the_learners_student_prompt_after_tool_results(template_kind):
    llm, model, tok = scripted_llm([call("multiply", a=6, b=7), "It is 42."], kind=template_kind)
    agent = Agent(llm, [(MULTIPLY, lambda a, b: a * b)], config=AgentConfig(recall_k=0))
    episode = agent.run(QUESTION)
    conversation = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "multiply", "arguments": {"a": 6, "b": 7}}]},
        {"role": "tool", "name": "multiply", "content": "42"},
    ]
    fmt = PromptFormat(tok)
    assert model.inputs[1] == fmt.encode(conversation, [MULTIPLY])
    assert model.inputs[0] == fmt.encode(conversation[:1], [MULTIPLY])
    assert episode.messages == [*conversation, {"role": "assistant", "content": "It is 42."}]


def test_async_invoke_and_stream():
    import asyncio

    llm, _, _ = scripted_llm([call("multiply", a=2, b=3), "Six."])
    bound = llm.bind_tools([multiply])

    async def go():
        ai = await bound.ainvoke("2 times 3?")
        chunks = [c async for c in bound.astream("again")]
        return ai, "".join(c.content for c in chunks)

    ai, streamed = asyncio.run(go())
    assert ai.tool_calls[0]["args"] == {"a": 2, "b": 3} and streamed == "Six."


# ---- constructing it the LangChain way ----------------------------------------------------------

def test_constructs_directly_from_a_home_and_version(tiny_home, tmp_path):
    from memory.models import ModelStore
    from tiny import save_tiny

    champion = LocalChatModel(home=tiny_home, max_new_tokens=3)
    assert champion.invoke("hi").response_metadata["model_version"] == "tiny"
    save_tiny(tmp_path / "b", seed=1)
    store = ModelStore(tiny_home, quiet=True)
    store.add_folder(tmp_path / "b", "tiny-b")
    store.use("tiny-b")
    assert champion.invoke("hi").response_metadata["model_version"] == "tiny-b"  # follows the champion
    pinned = LocalChatModel(home=tiny_home, version="tiny", max_new_tokens=3)
    assert pinned.invoke("hi").response_metadata["model_version"] == "tiny"
    assert LocalChatModel(max_new_tokens=3).invoke("hi").response_metadata["model_version"] == "tiny-b"  # $SDFT_AGENT_HOME
    with pytest.raises(Exception, match="no model version 'v9' .*known: tiny, tiny-b"):
        LocalChatModel(home=tiny_home, version="v9").invoke("hi")
    with pytest.raises(ValueError, match="either runtime or home"):
        LocalChatModel(runtime=champion.runtime, home=tiny_home)


def test_scripted_model_replies_in_order_then_defers_to_the_real_one():
    """The test helper itself (tests/agent_support.py): scripted replies, then the real model."""
    llm, model, tok = scripted_llm(["first", json.dumps({"x": 1})])
    assert llm.invoke("a").content == "first"
    assert llm.invoke("b").content == '{"x": 1}'
    assert isinstance(llm.invoke("c").content, str)  # the real tiny model, random text
    assert len(model.inputs) == 3


def test_leading_system_messages_become_one_and_a_late_one_is_still_refused():
    """LangChain callers may open with several system messages (its standard tests do); the
    project has one, first. A system message after the conversation started stays an error."""
    msgs = to_dicts([SystemMessage("Be brief."), SystemMessage("Use tools."), HumanMessage("hi")])
    assert msgs == [{"role": "system", "content": "Be brief.\n\nUse tools."}, {"role": "user", "content": "hi"}]
    llm, _, _ = scripted_llm(["hello"])
    with pytest.raises(ValueError, match=r"messages\[1\]\.role: a system message may only come first"):
        llm.invoke([HumanMessage("hi"), SystemMessage("late")])
