"""Grounded calls (agent.grounding, applied by agent.decode): a call that takes no value from the
conversation is not made; the reply is the one the model gives the conversation without tools."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_call_decision import CALL, TOOLS, WEATHER  # one weather tool, one call of it

from agent.decode import (
    GROUNDED_CALLS,
    Request,
    complete,
    default_grounding,
    generate_ids,
    grounding,
)
from agent.grounding import (
    EMPTY,
    Source,
    calls_in,
    conversation_text,
    drop_invented,
    grounded,
    ungrounded,
)
from agent.prompt import CALL_OPEN, PromptFormat
from tiny import Steered


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("SDFT_AGENT_GROUNDED_CALLS", raising=False)
    monkeypatch.delenv("SDFT_AGENT_CALL_THRESHOLD", raising=False)


def _src(text: str) -> Source:
    return Source(text)


@pytest.mark.parametrize("args, text, expected", [
    ({"value": -12.5, "from_unit": "fahrenheit", "to_unit": "kelvin"}, "convert -12.5 °F to K", True),
    ({"value": 2000}, "What is 2,000 grams in pounds?", True),
    ({"value": 5.0}, "Convert 5 miles to km", True),  # a float that is a whole number
    ({"from_unit": "mile"}, "how far is 3 miles", True),  # a shared stem
    ({"to_unit": "km"}, "in km please", True),  # two letters: exactly
    ({"to_unit": "km"}, "in kilometres please", False),
    ({"date": "2024-11-20", "days": 329}, "November 20th 2024 plus 329 days = ?", True),
    ({"sku": "PH-201"}, "Is ph-201 in stock?", True),
    ({"genre": "Pop", "year": "2019"}, "Find me some pop songs.", True),
    ({"category": "laptop", "max_price": 100, "in_stock": True}, "Thanks, that was helpful!", False),
    ({"artist": "Luigi Bop"}, "Where is the closest Italian restaurant?", False),
    ({"artist": ""}, "Compute the derivative of the function '2x' at 1.", False),  # says nothing
    ({"album": "dontcare", "in_stock": True}, "Play me something", False),  # nothing but empty values
    ({"sku": "LP-101"}, "What is the current time in New York City?", False),
    ({"filters": {"city": "Lyon", "open": True}}, "restaurants in lyon", True),  # nested values
    ({"cities": ["Oslo", "Bergen"]}, "weather in Bergen", True),
    ({}, "What time is it?", True),  # no arguments: nothing invented
])
def test_a_call_is_grounded_when_a_value_comes_from_the_conversation(args, text, expected):
    assert grounded(args, _src(text)) is expected


def test_a_value_that_is_a_tool_name_grounds_nothing():
    """Whatever the conversation says: "movie" would ground "Movies_1_FindMovies" by its stem."""
    user = [{"role": "user", "content": "I want to see a movie, find movies for me"}]
    named = Source.of(user, ["Movies_1_FindMovies", "find_movies"])
    assert named.value("Movies_1_FindMovies") is False and named.value("find movies") is False
    assert named.value("movies") is True  # a word of the name is still a word of the request
    assert Source.of(user).value("find_movies") is True  # without the names, the stems ground it
    reply = '<tool_call>\n{"name": "find_movies", "arguments": {"theater_name": "find_movies"}}\n</tool_call>'
    assert ungrounded(reply, user) == ["find_movies"]


def test_a_translated_value_is_not_seen():
    """The documented blind spot: a synonym the model translated (4 of catalog's 40 demonstrations)."""
    assert not grounded({"category": "laptop"}, _src("show me notebook computers"))


def test_only_user_and_tool_turns_ground():
    messages = [{"role": "system", "content": "Tools: laptop search"},
                {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": "Berlin"},
                {"role": "tool", "content": {"sku": "LP-101"}},
                {"role": "user", "content": [{"type": "text", "text": "and Oslo?"}]}]
    text = conversation_text(messages)
    assert "laptop" not in text and "Berlin" not in text and "LP-101" in text and "Oslo" in text
    source = Source.of(messages)
    assert grounded({"sku": "LP-101"}, source) and grounded({"city": "Oslo"}, source)
    assert not grounded({"city": "Berlin"}, source) and not grounded({"q": "laptop"}, source)


def test_calls_are_read_from_replies_whole_or_cut_off():
    whole = CALL + "\n" + '<tool_call>\n{"name": "add_days", "arguments": {"date": "2024-03-01", "days": 30}}\n</tool_call>'
    assert calls_in(whole) == [("get_weather", {"unit": "c"}), ("add_days", {"date": "2024-03-01", "days": 30})]
    cut = 'The answer is:\n<tool_call>\n{"name": "Music_3_LookupMusic", "arguments": {"artist": "Luigi Bop", "yea'
    assert calls_in(cut) == [("Music_3_LookupMusic", {"artist": "Luigi Bop"})]
    assert calls_in("no call here") == [] and calls_in("<tool_call>\n{\"argu") == []
    user = [{"role": "user", "content": "Where is the closest Italian restaurant?"}]
    assert ungrounded(cut, user) == ["Music_3_LookupMusic"]
    assert ungrounded(whole, [{"role": "user", "content": "30 days after 2024-03-01, in c"}]) == []
    assert ungrounded("Paris.", user) == []


words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=12).filter(lambda w: w not in EMPTY)


@settings(max_examples=200, deadline=None)
@given(st.lists(words, min_size=1, max_size=8), st.data())
def test_any_word_or_number_of_the_request_grounds_a_call(request_words, data):
    number = data.draw(st.integers(min_value=-10**6, max_value=10**6))
    text = " ".join(request_words) + f" {number:,}"
    word = data.draw(st.sampled_from(request_words))
    source = _src(text)
    assert grounded({"q": word.upper()}, source)
    assert grounded({"n": number}, source) and grounded({"n": float(number)}, source)
    assert grounded({"flag": True, "q": word, "rest": "dontcare"}, source)
    assert not grounded({"flag": True, "rest": "dontcare"}, source)


# ---- in the decoding path --------------------------------------------------------------------

def _setup(tok, question: str):
    fmt = PromptFormat(tok)
    messages = [{"role": "user", "content": question}]
    return fmt, messages, fmt.encode(messages, TOOLS)


def test_an_ungrounded_call_is_replaced_by_the_reply_without_tools(tiny_model, tiny_tokenizer):
    fmt, messages, prompt = _setup(tiny_tokenizer, "Thanks, that was helpful!")
    model = Steered(tiny_model, tiny_tokenizer, len(prompt), CALL, 30.0)
    assert default_grounding() is GROUNDED_CALLS is True
    kept, replaced = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=30),
                                           Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, messages=messages)])
    assert kept.text.startswith(CALL[:40]) and kept.withheld is None  # no conversation given: not checked
    plain = complete(model, fmt, [Request(prompt=fmt.encode(messages, None), max_new_tokens=30)])[0]
    assert replaced.ids == plain.ids and replaced.text == plain.text and not replaced.constrained
    assert replaced.withheld == kept.text and CALL_OPEN not in replaced.text
    assert replaced.prompt_tokens == len(fmt.encode(messages, None))
    # the single-prompt helper the chat model calls does the same
    assert generate_ids(model, fmt, prompt, max_new_tokens=30, tools=TOOLS, constrain=True,
                        messages=messages) == plain.ids


def test_what_grounding_leaves_alone(tiny_model, tiny_tokenizer):
    """A grounded call; a forced choice; the switch off; a streamed reply: the model's call stands."""
    fmt, messages, prompt = _setup(tiny_tokenizer, "Thanks, that was helpful!")
    model = Steered(tiny_model, tiny_tokenizer, len(prompt), CALL, 30.0)
    ref = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=30)])[0]
    required = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, messages=messages,
                                             tool_choice="required")])[0]
    off = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, messages=messages,
                                        grounded_calls=False)])[0]
    with grounding(False):
        scoped = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, messages=messages)])[0]
    streamed = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, messages=messages)],
                        on_token=lambda i, t: False)[0]
    for c in (required, off, scoped, streamed):
        assert c.ids == ref.ids and c.withheld is None
    fmt2, asked, prompt2 = _setup(tiny_tokenizer, "Weather in c, please")  # "c" is the call's value
    model2 = Steered(tiny_model, tiny_tokenizer, len(prompt2), CALL, 30.0)
    called = complete(model2, fmt2, [Request(prompt=prompt2, tools=TOOLS, max_new_tokens=30, messages=asked)])[0]
    assert called.text.startswith(CALL[:40]) and called.withheld is None


def test_the_switch_reads_the_environment(monkeypatch):
    monkeypatch.setenv("SDFT_AGENT_GROUNDED_CALLS", "0")
    assert default_grounding() is False
    with grounding(True):
        assert default_grounding() is True
    monkeypatch.setenv("SDFT_AGENT_GROUNDED_CALLS", "1")
    assert default_grounding() is True


def test_grounding_is_part_of_the_gates_cache_key():
    from learner.gate import GateConfig, decoding_settings

    on = decoding_settings(GateConfig())
    with grounding(False):
        off = decoding_settings(GateConfig())
    keys = ("grounded_calls", "grounded_arguments")
    assert all(on[k] is True and k not in off for k in keys)
    assert {k: v for k, v in on.items() if k not in keys} == off


def test_the_chat_model_answers_instead_of_an_ungrounded_call_invoked_or_streamed(tiny_model, tiny_tokenizer):
    from langchain_core.messages import HumanMessage

    from agent.chat_model import LocalChatModel

    fmt, messages, prompt = _setup(tiny_tokenizer, "Thanks, that was helpful!")
    model = Steered(tiny_model, tiny_tokenizer, len(prompt), CALL, 30.0)
    llm = LocalChatModel.from_model(model, tiny_tokenizer, max_new_tokens=80).bind_tools([WEATHER])
    assert len(tiny_tokenizer(CALL, add_special_tokens=False)["input_ids"]) < 80  # room to close the call
    plain = complete(model, fmt, [Request(prompt=fmt.encode(messages, None), max_new_tokens=80)])[0]
    expected = fmt.parse(plain.text, []).content
    invoked = llm.invoke([HumanMessage("Thanks, that was helpful!")])
    chunks = list(llm.stream([HumanMessage("Thanks, that was helpful!")]))
    streamed = chunks[0]
    for c in chunks[1:]:
        streamed += c
    assert invoked.tool_calls == [] and streamed.tool_calls == []
    assert invoked.response_metadata["withheld_call"].startswith(CALL[:40])
    assert streamed.response_metadata["withheld_call"] == invoked.response_metadata["withheld_call"]
    assert expected.strip() and invoked.content == expected == streamed.content
    with grounding(False):
        called = llm.invoke([HumanMessage("Thanks, that was helpful!")])
    assert [c["name"] for c in called.tool_calls] == ["get_weather"] and "withheld_call" not in called.response_metadata


def test_the_server_passes_no_call_from_an_answer_given_for_a_withheld_one():
    """After a withheld call the reply was decoded without tools; call markup there (an invalid
    call to no tool) must not reach the client as a call, as an off-schema call would."""
    from langchain_core.messages import AIMessage
    from langchain_core.messages.tool import invalid_tool_call

    from agent.server.engine import Engine, Job

    job = Job(messages=[{"role": "user", "content": "Thanks!"}], tools=[WEATHER["function"]], choice=None,
              version=None, options={})
    markup = invalid_tool_call(name="get_weather", args='{"name": "get_weather", "arguments": {"unit": "c"}}',
                               id="c1", error="unknown tool 'get_weather'")
    meta = {"model_version": "v1", "finish_reason": "stop"}
    withheld = AIMessage(content="", invalid_tool_calls=[markup], response_metadata={**meta, "withheld_call": CALL})
    plain = AIMessage(content="", invalid_tool_calls=[markup], response_metadata=meta)
    after = Engine._reply(None, withheld, job, [], "")
    before = Engine._reply(None, plain, job, [], "")
    assert after.calls == [] and after.withheld == CALL and after.finish == "stop"
    assert [c["name"] for c in before.calls] == ["get_weather"] and before.withheld is None  # off-schema: the client decides


def test_the_gate_suites_keep_the_withheld_call_and_the_report_shows_it(tiny_model, tiny_tokenizer):
    """The restraint suite and a skill's evaluation decode with grounding as served; a case whose
    call was withheld keeps it, the notes count it, and the report's changed case names it."""
    from learner.report import changed_cases
    from skills.evaluate import evaluate_skill
    from skills.probes.restraint import RestraintProbe

    flat = [WEATHER["function"]]  # as the memory serves tools
    fmt = PromptFormat(tiny_tokenizer)
    messages = [{"role": "user", "content": "Thanks, that was helpful!"}]
    model = Steered(tiny_model, tiny_tokenizer, len(fmt.encode(messages, flat)), CALL, 30.0)
    probe = RestraintProbe("tool_restraint", [{"id": "1", "question": "Thanks, that was helpful!"}], flat,
                           max_new_tokens=40)
    served = probe.run(model, tiny_tokenizer)
    with grounding(False):
        raw = probe.run(model, tiny_tokenizer)
    assert served.cases[0]["withheld"].startswith(CALL[:40]) and "withheld" not in raw.cases[0]
    assert any("1 call(s) not grounded" in n for n in served.notes) and not any("grounded" in n for n in raw.notes)
    assert raw.cases[0]["score"] == 0.0  # as written, the call fails the case
    answered = {**served.cases[0], "score": 1.0, "answer": "You're welcome!"}  # a case the answer passes
    (line,) = changed_cases(raw, replace(served, cases=[answered]))
    assert line.startswith("- better: case r1") and "call withheld, not grounded in the request" in line
    skill = evaluate_skill(model, tiny_tokenizer, [{"messages": messages, "expected": [{"name": "get_weather", "arguments": {"unit": "c"}}]}],
                           flat, name="weather", max_new_tokens=40)
    assert skill.cases[0]["withheld"].startswith(CALL[:40]) and skill.cases[0]["score"] == 0.0


# ---- invented optional arguments -------------------------------------------------------------

MOVIES = {"name": "find_movies", "description": "Movies showing near a place.",
          "parameters": {"type": "object", "properties": {
              "location": {"type": "string"}, "genre": {"type": "string"},
              "max_price": {"type": "number"}, "show_type": {"type": "string"}},
              "required": ["location"]}}


def _movie_call(**arguments) -> dict:
    return {"name": "find_movies", "arguments": arguments}


@pytest.mark.parametrize("question, arguments, kept, gone", [
    # the filter nobody asked for goes; the place stays
    ("I would like to see a movie in Vallejo.", {"location": "Vallejo, CA", "genre": "Animation"},
     {"location": "Vallejo, CA"}, {"genre": "Animation"}),
    # a required value stays even when invented: the call would not run without it
    ("Any horror films tonight?", {"location": "Paris", "genre": "Horror"}, {"location": "Paris", "genre": "Horror"}, {}),
    # numbers by value; a value that says nothing is not an invention
    ("Films in Napa under $12?", {"location": "Napa", "max_price": 12, "show_type": "dontcare"},
     {"location": "Napa", "max_price": 12, "show_type": "dontcare"}, {}),
    ("Films in Napa?", {"location": "Napa", "max_price": 12, "show_type": "imax"}, {"location": "Napa"},
     {"max_price": 12, "show_type": "imax"}),
    # the tool's own name copied into a field is invented, though "movie" shares its stem
    ("I would like to see a movie in Vallejo.", {"location": "Vallejo", "genre": "Find_Movies"},
     {"location": "Vallejo"}, {"genre": "Find_Movies"}),
])
def test_optional_arguments_the_conversation_never_gave_are_dropped(question, arguments, kept, gone):
    messages = [{"role": "user", "content": question}]
    calls, dropped = drop_invented([_movie_call(**arguments)], [MOVIES], messages)
    assert calls == [_movie_call(**kept)]
    assert dropped == ([{"name": "find_movies", "arguments": gone}] if gone else [])
    assert arguments != kept or not dropped  # the input call is not changed in place
    # the OpenAI spelling of the tool reads the same; a call to a tool not offered is left alone
    assert drop_invented([_movie_call(**arguments)], [{"type": "function", "function": MOVIES}], messages)[0] == calls
    stray = {"name": "other", "arguments": {"genre": "Animation"}}
    assert drop_invented([stray], [MOVIES], messages) == ([stray], [])


MOVIE_CALL = '<tool_call>\n{"name": "find_movies", "arguments": {"location": "Vallejo", "genre": "Animation"}}\n</tool_call>'
VALLEJO = "I would like to see a movie in Vallejo."


def test_the_chat_model_drops_invented_arguments_invoked_or_streamed(tiny_model, tiny_tokenizer):
    from langchain_core.messages import HumanMessage

    from agent.chat_model import LocalChatModel

    fmt = PromptFormat(tiny_tokenizer)
    prompt = fmt.encode([{"role": "user", "content": VALLEJO}], [MOVIES])
    model = Steered(tiny_model, tiny_tokenizer, len(prompt), MOVIE_CALL, 30.0)
    llm = LocalChatModel.from_model(model, tiny_tokenizer, max_new_tokens=60).bind_tools([MOVIES])
    invoked = llm.invoke([HumanMessage(VALLEJO)])
    chunks = list(llm.stream([HumanMessage(VALLEJO)]))
    streamed = chunks[0]
    for c in chunks[1:]:
        streamed += c
    for m in (invoked, streamed):
        assert [(c["name"], c["args"]) for c in m.tool_calls] == [("find_movies", {"location": "Vallejo"})]
        assert m.response_metadata["dropped_arguments"] == [{"name": "find_movies", "arguments": {"genre": "Animation"}}]
    with grounding(False):
        raw = llm.invoke([HumanMessage(VALLEJO)])
    assert raw.tool_calls[0]["args"] == {"location": "Vallejo", "genre": "Animation"}
    assert "dropped_arguments" not in raw.response_metadata


def test_the_evaluation_and_the_report_score_the_call_as_served(tiny_model, tiny_tokenizer):
    """A skill case whose call invents a filter: served (the filter left out) it is right, as
    written it is wrong; the case and the notes say what was left out, and so does the report."""
    from learner.report import changed_cases
    from skills.evaluate import evaluate_skill

    fmt = PromptFormat(tiny_tokenizer)
    messages = [{"role": "user", "content": VALLEJO}]
    model = Steered(tiny_model, tiny_tokenizer, len(fmt.encode(messages, [MOVIES])), MOVIE_CALL, 30.0)
    case = {"messages": messages, "expected": [{"name": "find_movies",
                                                "arguments": {"location": ["Vallejo"], "genre": ["", "dontcare"]}}]}
    served = evaluate_skill(model, tiny_tokenizer, [case], [MOVIES], name="movies", max_new_tokens=60)
    with grounding(False):
        raw = evaluate_skill(model, tiny_tokenizer, [case], [MOVIES], name="movies", max_new_tokens=60)
    assert served.cases[0]["correct"] and not raw.cases[0]["correct"] and "genre" in raw.cases[0]["reason"]
    assert served.cases[0]["calls"] == [_movie_call(location="Vallejo")]
    assert served.cases[0]["dropped"] == [{"name": "find_movies", "arguments": {"genre": "Animation"}}]
    assert "dropped" not in raw.cases[0] and served.cases[0]["text"] == raw.cases[0]["text"]
    assert "1 optional argument(s) not in the request were left out of the calls" in served.notes
    (line,) = changed_cases(raw, served)
    assert line.startswith("- better: case 0") and line.endswith('(left out, not in the request: `genre="Animation"`)')


def test_the_server_records_what_was_left_out():
    from langchain_core.messages import AIMessage

    from agent.server.engine import Engine, Job

    job = Job(messages=[{"role": "user", "content": VALLEJO}], tools=[MOVIES], choice=None, version=None, options={})
    gone = [{"name": "find_movies", "arguments": {"genre": "Animation"}}]
    ai = AIMessage(content="", tool_calls=[{"name": "find_movies", "args": {"location": "Vallejo"}, "id": "c1"}],
                   response_metadata={"model_version": "v1", "finish_reason": "stop", "dropped_arguments": gone})
    reply = Engine._reply(None, ai, job, [], "")
    assert reply.dropped == gone and [c["arguments"] for c in reply.calls] == ['{"location": "Vallejo"}']
