"""Tool routing (agent.routing): which tools a request is offered, in the agent loop and in the
routed restraint suite."""

from __future__ import annotations

import pytest

import skills.generation as generation
from agent.loop import Agent, AgentConfig
from agent.prompt import PromptFormat
from agent.routing import Router
from agent_support import DATE_TOOLS, MULTIPLY, call, scripted_llm
from memory.store import Memory
from skills.probes.restraint import RestraintProbe, restraint_probe

ADD = {"name": "add", "description": "Add two integers.",
       "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                      "required": ["a", "b"]}}
LOOKUP = {"name": "lookup_order", "description": "Find an order.",
          "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}}
DATE_NAMES = [t["name"] for t in DATE_TOOLS]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def memory(home):
    """math and dates with demonstrations; orders installed with none yet."""
    mem = Memory(home)
    mem.add_skill("math", "Arithmetic", [MULTIPLY, ADD])
    mem.add_skill("dates", "Dates", DATE_TOOLS)
    mem.add_skill("orders", "Orders", [LOOKUP])
    mem.add_demonstrations("math", [
        {"messages": user("What is 6 times 7?"), "tool_calls": [{"name": "multiply", "arguments": {"a": 6, "b": 7}}]},
        {"messages": user("Multiply 12 by 9 please"), "tool_calls": [{"name": "multiply", "arguments": {"a": 12, "b": 9}}]},
        {"messages": user("Add 3 and 4"), "tool_calls": [{"name": "add", "arguments": {"a": 3, "b": 4}}]},
    ])
    mem.add_demonstrations("dates", [
        {"messages": user("What date is 30 days after 2024-01-01?"),
         "tool_calls": [{"name": DATE_NAMES[0], "arguments": {"date": "2024-01-01", "days": 30}}]},
    ])
    mem.add_eval_case("math", user("What is 11 times 3?"), [{"name": "multiply", "arguments": {"a": [11], "b": [3]}}])
    mem.add_eval_case("dates", user("What date is 5 days after 2024-02-01?"),
                      [{"name": DATE_NAMES[0], "arguments": {"date": ["2024-02-01"], "days": [5]}}])
    yield mem
    mem.close()


ALL = ["multiply", "add", *DATE_NAMES, "lookup_order", "weather"]


def route(memory, question, names, **kw):
    return Router(memory, **kw).route(question, names)


def test_a_request_is_offered_the_tools_of_the_skills_it_resembles(memory):
    r = route(memory, "Please multiply 8 by 5", ALL)
    # math's two tools (a math demonstration matched), orders' (no demonstration yet) and the
    # tool no skill owns; dates' withheld; the caller's order kept
    assert r.offered == ["multiply", "add", "lookup_order", "weather"]
    assert r.withheld == DATE_NAMES
    assert r.matched == ["math"] and r.unjudged == ["lookup_order", "weather"]


def test_a_request_resembling_no_skill_keeps_only_the_unjudged_tools(memory):
    r = route(memory, "Thanks, that was helpful!", ALL)
    assert r.offered == ["lookup_order", "weather"] and r.matched == []
    assert r.withheld == ["multiply", "add", *DATE_NAMES]


def test_several_skills_matched_offer_all_their_tools(memory):
    r = route(memory, "multiply the days after 2024-01-01", ALL)
    assert set(r.matched) == {"math", "dates"}
    assert r.offered == ALL and r.withheld == []


def test_a_skill_gaining_its_first_demonstration_starts_being_judged(memory):
    router = Router(memory)
    assert "lookup_order" in router.route("Good night!", ALL).offered
    memory.add_demonstrations("orders", [{"messages": user("Where is order A-17?"),
                                          "tool_calls": [{"name": "lookup_order", "arguments": {"order": "A-17"}}]}])
    # the same router sees the new demonstration (its index is rebuilt when the counts change)
    assert "lookup_order" not in router.route("Good night!", ALL).offered
    assert "lookup_order" in router.route("where is my order B-2?", ALL).offered


def test_an_unneeded_request_ranked_above_a_skill_keeps_its_tools_back(memory):
    """"Thanks for the numbers" shares "numbers" with nothing, "thanks" with a math
    demonstration: alone, math is offered; with a no-tool request about thanking ranked above it,
    nothing is."""
    memory.add_demonstrations("math", [{"messages": user("Thanks! Now add 2 and 2"),
                                        "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 2}}]}])
    assert route(memory, "Thanks, that was kind", ALL).matched == ["math"]
    r = route(memory, "Thanks, that was kind", ALL, unneeded=["How do I say thanks to a kind neighbour?"])
    assert r.matched == [] and r.offered == ["lookup_order", "weather"]
    # below the skill's demonstration it changes nothing
    r = route(memory, "Please multiply 8 by 5", ALL, unneeded=["Thanks a lot!"])
    assert r.matched == ["math"]


def test_only_the_k_most_similar_texts_decide(memory):
    # math's "Add 3 and 4" and dates' "30 days after 2024-01-01" both match; with k = 1 only the
    # first of them decides
    both = route(memory, "add 3 days after 2024-01-01", ALL).matched
    assert sorted(both) == ["dates", "math"]
    assert route(memory, "add 3 days after 2024-01-01", ALL, k=1).matched == both[:1]


def test_routing_refuses_a_k_below_one(memory):
    with pytest.raises(ValueError, match="k >= 1"):
        Router(memory, k=0)


def agent_for(memory, replies, *, route_tools=True):
    llm, model, tok = scripted_llm(replies)
    tools = [(MULTIPLY, lambda a, b: a * b), (ADD, lambda a, b: a + b)] + [(t, None) for t in DATE_TOOLS]
    return Agent(llm, tools, memory=memory, config=AgentConfig(recall_k=0, route_tools=route_tools)), model, tok


def offered_in_prompt(tok, ids) -> set[str]:
    text = tok.decode(ids)
    return {n for n in ["multiply", "add", *DATE_NAMES] if f'"name": "{n}"' in text}


def test_the_agent_offers_only_the_routed_tools_and_records_them(memory):
    agent, model, tok = agent_for(memory, [call("multiply", a=8, b=5), "40."])
    ep = agent.run("Please multiply 8 by 5")
    assert ep.status == "answered" and ep.offered == ["multiply", "add"]
    assert offered_in_prompt(tok, model.inputs[0]) == {"multiply", "add"}
    assert memory.episode(ep.id)["meta"]["offered"] == ["multiply", "add"]


def test_small_talk_gets_a_prompt_without_tools(memory):
    agent, model, tok = agent_for(memory, ["You're welcome!"])
    ep = agent.run("Thanks, that was helpful!")
    assert ep.answer == "You're welcome!" and ep.offered == []
    fmt = PromptFormat(tok)
    assert model.inputs[0] == fmt.encode(user("Thanks, that was helpful!"), None)


def test_a_call_to_a_withheld_tool_is_refused_like_an_unknown_one(memory):
    agent, _, _ = agent_for(memory, [call(DATE_NAMES[0], date="2024-01-01", days=8)] * 2, route_tools=True)
    ep = agent.run("Please multiply 8 by 5")
    assert ep.status == "failed" and f"unknown tool '{DATE_NAMES[0]}'" in ep.invalid_calls[0]["error"]


def test_routing_off_or_a_named_skill_offers_every_tool(memory):
    agent, model, tok = agent_for(memory, ["Hi."], route_tools=False)
    ep = agent.run("Thanks, that was helpful!")
    assert ep.offered is None and offered_in_prompt(tok, model.inputs[0]) == {"multiply", "add", *DATE_NAMES}
    agent, model, tok = agent_for(memory, ["Hi."])
    ep = agent.run("Thanks, that was helpful!", skill="math")
    assert ep.offered is None and offered_in_prompt(tok, model.inputs[0]) == {"multiply", "add", *DATE_NAMES}


def test_the_routed_restraint_suite_asks_each_request_with_its_routed_tools(memory):
    probe = restraint_probe(memory, [{"id": "b1", "question": "multiply two large numbers for me"}],
                            name="tool_restraint_routed", routed=True)
    plain = restraint_probe(memory, [{"id": "b1", "question": "multiply two large numbers for me"}])
    assert plain.routes is None and probe.routes is not None
    assert probe.items_key()[:-1] == plain.items_key() and probe.items_key() != plain.items_key()
    assert probe.routes["re05"] == ["lookup_order"]  # "Thanks, that was helpful!": only the unjudged tool
    assert probe.routes["rb1"] == ["multiply", "add", "lookup_order"]
    cross = [i for i in probe.case_ids() if i.startswith("x")]
    assert cross and all("lookup_order" in probe.routes[i] for i in cross)


def test_the_routed_suite_decodes_each_tool_set_as_its_own_prompt(memory, monkeypatch):
    """A real run on the tiny model: the texts come back in case order, each case scored with
    the tools it was offered."""
    from tiny import build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok)
    probe = restraint_probe(memory, [], name="tool_restraint_routed", routed=True)
    seen = []
    real = generation.generate_texts

    def spy(model, fmt, prompts, **kw):
        seen.append((len(prompts), tuple(t["name"] for t in kw["tools"] or [])))
        return real(model, fmt, prompts, **kw)

    monkeypatch.setattr(generation, "generate_texts", spy)
    result = probe.run(model, tok, batch_size=4)
    sets = {tuple(v) for v in probe.routes.values()}
    assert len(seen) == len(sets) >= 2 and {names for _, names in seen} == sets  # one decode per tool set
    assert sum(n for n, _ in seen) == len(probe.case_ids()) == len(result.cases)
    assert [c["id"] for c in result.cases] == probe.case_ids()
    assert [c["offered"] for c in result.cases] == [probe.routes[i] for i in probe.case_ids()]


def test_a_probe_with_a_route_missing_is_refused():
    with pytest.raises(ValueError, match="no route for case"):
        RestraintProbe("t", [{"id": "a", "question": "hi"}], [MULTIPLY], routes={})


@pytest.mark.parametrize("question", ['multiply" OR skill:*', "NEAR(a b) AND -add", "¿?!", "  "])
def test_any_text_is_a_query_never_fts_syntax(memory, question):
    r = route(memory, question, ALL)
    assert set(r.offered) >= {"lookup_order", "weather"} and set(r.offered) | set(r.withheld) == set(ALL)


def test_routed_recall_shows_no_demonstration_of_a_tool_withheld(memory):
    llm, model, tok = scripted_llm(["Hello!", call("multiply", a=8, b=5), "40."])
    tools = [(MULTIPLY, lambda a, b: a * b), (ADD, lambda a, b: a + b)] + [(t, None) for t in DATE_TOOLS]
    agent = Agent(llm, tools, memory=memory, config=AgentConfig(recall_k=3, route_tools=True))
    # "times" is in a math demonstration, but an unneeded request ranks above it: no tool, and
    # no math demonstration in the context either
    agent.router = Router(memory, ["What times do shops open on Sundays?"])
    ep = agent.run("What times do shops open?")
    assert ep.offered == [] and ep.recalled == []
    ep = agent.run("Multiply 8 by 5 for me")
    assert ep.offered == ["multiply", "add"] and ep.recalled
    math_ids = {d["id"] for d in memory.demonstrations("math")}
    assert set(ep.recalled) <= math_ids
