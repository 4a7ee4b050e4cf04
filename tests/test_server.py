"""The HTTP server, driven by the official `openai` client and LangChain's ChatOpenAI against a
real uvicorn on a free loopback port, serving the tiny random model from a real model store.

The tiny model writes garbage, which is the point: its tool calls are well-formed only because
decoding is constrained to the offered schemas (agent.decode), so every call asserted here went
through the same path a real model's does; its prose is garbage, so every answer after a tool
result is the grounded one (agent.answer).
"""

from __future__ import annotations

import json
from typing import Annotated

import httpx
import openai
import pytest
from pydantic import Field

from agent.server import Engine, create_app, running
from memory.models import ModelStore
from memory.store import Memory
from memory.toolschema import argument_errors
from tiny import save_tiny

# Bounded integers: an unbounded one lets a random model write digits up to its token limit.
INT = {"type": "integer", "minimum": -1000, "maximum": 1000}
MULTIPLY = {"name": "multiply", "description": "Multiply two integers.",
            "parameters": {"type": "object", "properties": {"a": INT, "b": INT}, "required": ["a", "b"]}}
ADD = {"name": "add", "description": "Add two integers.",
       "parameters": {"type": "object", "properties": {"a": INT, "b": INT}, "required": ["a", "b"]}}
Small = Annotated[int, Field(ge=-1000, le=1000)]
TOOLS = [{"type": "function", "function": MULTIPLY}]
BOTH = TOOLS + [{"type": "function", "function": ADD}]
SCHEMAS = {"multiply": MULTIPLY, "add": ADD}
KEY = "test-key-123"
CALL_TOKENS = 96  # the tiny tokenizer spends many tokens on a call's JSON


class Server:
    def __init__(self, url: str, memory: Memory, store: ModelStore):
        self.url, self.memory, self.store = url, memory, store
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)

    def post(self, path: str, body: dict | bytes, key: str | None = KEY, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if isinstance(body, bytes):
            return httpx.post(self.url + path, content=body, headers={**headers, "Content-Type": "application/json"}, **kw)
        return httpx.post(self.url + path, json=body, headers=headers, **kw)

    def get(self, path: str, key: str | None = KEY) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {key}"} if key else {})

    def episode(self, response_id: str) -> dict:
        with self.memory.snapshot() as db:
            rows = db.execute("SELECT id FROM episodes WHERE json_extract(meta, '$.response_id') = ?",
                              [response_id]).fetchall()
        assert len(rows) == 1, f"expected exactly one episode for {response_id}, found {len(rows)}"
        return self.memory.episode(rows[0][0])


def serving(tmp_path_factory, **engine_options):
    home = tmp_path_factory.mktemp("server-home")
    src = tmp_path_factory.mktemp("tiny-src") / "m"
    save_tiny(src)
    store = ModelStore(home, quiet=True)
    store.add_folder(src, "tiny")
    memory = Memory(home)
    memory.add_skill("math", "Arithmetic", [MULTIPLY, ADD])
    engine = Engine(home, max_new_tokens=12, **engine_options)
    app = create_app(memory, engine, api_key=KEY, max_request_bytes=64 * 1024)
    with running(app) as url:
        yield Server(url, memory, store)
    engine.close()
    memory.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serving(tmp_path_factory)


@pytest.fixture(scope="module")
def free_server(tmp_path_factory):
    """`serve --no-constrain`: tool_choice auto decodes the model's own tokens."""
    yield from serving(tmp_path_factory, constrain=False)


def ask(server, content="What is 6 times 7?", **kw):
    return server.client.chat.completions.create(model="sdft-agent", messages=[{"role": "user", "content": content}], **kw)


def valid(tc) -> dict:
    """A wire tool call's arguments, asserted to be JSON that satisfies its tool's schema."""
    args = json.loads(tc.function.arguments)
    assert argument_errors(SCHEMAS[tc.function.name], args) == [], tc
    return args


# ---- tools and tool_choice --------------------------------------------------------------------

def test_required_tool_choice_gives_a_schema_valid_call_and_an_episode(server):
    r = ask(server, tools=BOTH, tool_choice="required", max_tokens=CALL_TOKENS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for tc in choice.message.tool_calls:
        assert tc.type == "function" and tc.id.startswith("call_") and tc.function.name in SCHEMAS
        valid(tc)
    assert r.model == "tiny" and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    ep = server.episode(r.id)
    assert ep["tool_calls"] == [{"name": tc.function.name, "arguments": json.loads(tc.function.arguments)}
                                for tc in choice.message.tool_calls]
    assert ep["skill"] == "math" and ep["model_version"] == "tiny" and ep["outcome"] == "unknown"
    assert ep["messages"][0] == {"role": "user", "content": "What is 6 times 7?"}
    assert ep["meta"]["learned_turn"] == 1 and ep["meta"]["tool_choice"] == "required"


@pytest.mark.parametrize("name", ["multiply", "add"])
def test_named_tool_choice_always_calls_that_tool(server, name):
    r = ask(server, tools=BOTH, tool_choice={"type": "function", "function": {"name": name}}, max_tokens=CALL_TOKENS)
    calls = r.choices[0].message.tool_calls
    assert calls and {tc.function.name for tc in calls} == {name}
    for tc in calls:
        valid(tc)


def test_tool_choice_none_never_calls(server):
    for content in ("call multiply now", "<tool_call>"):
        r = ask(server, content, tools=BOTH, tool_choice="none", max_tokens=24)
        assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason in ("stop", "length")
        assert "<tool_call>" not in (r.choices[0].message.content or "")
        assert server.episode(r.id)["tool_calls"] == []


def test_without_constraints_tool_choice_is_still_honoured(free_server):
    server = free_server
    assert server.get("/v1/status").json()["constrained"] is False
    r = ask(server, tools=BOTH, tool_choice="required", max_tokens=CALL_TOKENS)
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.tool_calls
    for tc in r.choices[0].message.tool_calls:
        valid(tc)
    assert server.episode(r.id)["meta"]["constrained"] is True
    for name in ("multiply", "add"):
        r = ask(server, tools=BOTH, tool_choice={"type": "function", "function": {"name": name}}, max_tokens=CALL_TOKENS)
        calls = r.choices[0].message.tool_calls
        assert calls and {tc.function.name for tc in calls} == {name}
        for tc in calls:
            valid(tc)
    for content in ("call multiply now", "<tool_call>"):
        r = ask(server, content, tools=BOTH, tool_choice="none", max_tokens=24)
        assert r.choices[0].message.tool_calls is None
        assert server.episode(r.id)["tool_calls"] == [] and server.episode(r.id)["meta"]["constrained"] is False
    r = ask(server, tools=BOTH, max_tokens=24)  # auto: the model's own tokens, recorded as such
    assert server.episode(r.id)["meta"]["constrained"] is False


def test_the_default_server_constrains_and_says_so(server):
    assert server.get("/v1/status").json()["constrained"] is True
    r = ask(server, tools=BOTH, max_tokens=24)
    assert server.episode(r.id)["meta"]["constrained"] is True


def test_parallel_tool_calls_false_keeps_one_call(server):
    r = ask(server, "Multiply then add.", tools=BOTH, tool_choice="required", parallel_tool_calls=False,
            max_tokens=CALL_TOKENS)
    assert len(r.choices[0].message.tool_calls) == 1


def test_streamed_tool_calls_reassemble_into_the_same_valid_json(server):
    kw = dict(tools=BOTH, tool_choice="required", max_tokens=CALL_TOKENS)
    plain = ask(server, "Stream a call.", **kw).choices[0].message.tool_calls
    chunks = list(ask(server, "Stream a call.", stream=True, stream_options={"include_usage": True}, **kw))
    assert len({c.id for c in chunks}) == 1
    calls: dict[int, dict] = {}
    firsts = []
    for c in chunks:
        for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            if d.index not in calls:
                firsts.append(d)
                calls[d.index] = {"name": d.function.name, "arguments": ""}
            calls[d.index]["arguments"] += d.function.arguments or ""
    assert firsts and all(f.id and f.function.name and f.function.arguments == "" for f in firsts)
    assert [(v["name"], json.loads(v["arguments"])) for v in calls.values()] == [
        (tc.function.name, valid(tc)) for tc in plain]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    ep = server.episode(chunks[0].id)
    assert ep["tool_calls"] == [{"name": v["name"], "arguments": json.loads(v["arguments"])} for v in calls.values()]


def test_stream_text_matches_the_non_streamed_reply(server):
    plain = ask(server, seed=1)
    streamed = list(ask(server, stream=True, seed=1))
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == plain.choices[0].message.content
    assert streamed[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == plain.choices[0].finish_reason == "length"


# ---- the answer after a tool result ----------------------------------------------------------

def tool_round(result: str):
    return [{"role": "user", "content": "What is 6 times 7?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 6, "b": 7}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": result}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("result", ['{"product": 42}', "The product is 42.5 exactly"])
def test_a_tool_result_then_a_prose_answer(server, stream, result):
    from agent.answer import is_grounded, is_prose

    r = server.client.chat.completions.create(model="sdft-agent", messages=tool_round(result), tools=TOOLS,
                                              stream=stream, max_tokens=24)
    if stream:
        chunks = list(r)
        rid, text = chunks[0].id, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        rid, text = r.id, r.choices[0].message.content
    assert is_prose(text) and is_grounded(text, result), text
    assert ("42.5" if "42.5" in result else "42") in text and "<" not in text and "{" not in text
    ep = server.episode(rid)
    assert ep["answer"] == text and ep["meta"]["answer_source"] == "grounded"
    assert ep["meta"]["model_text"] != text  # the tiny model's garbage was not what the user got


def test_langchain_chat_openai_runs_the_tool_loop(server):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def multiply(a: Small, b: Small) -> int:
        """Multiply two integers."""
        return a * b

    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key=KEY, model="sdft-agent", max_retries=0,
                     max_completion_tokens=CALL_TOKENS)
    forced = llm.bind_tools([multiply], tool_choice="multiply")
    messages = [HumanMessage("What is 6 times 7?")]
    ai = forced.invoke(messages)
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "multiply"
    result = multiply.invoke(ai.tool_calls[0]["args"])
    messages += [ai, ToolMessage(str(result), tool_call_id=ai.tool_calls[0]["id"])]
    final = llm.bind_tools([multiply]).invoke(messages)
    assert final.tool_calls == [] and str(result) in final.content and "<" not in final.content
    merged = None  # streamed through LangChain: tool_call_chunks merge into valid calls
    for chunk in forced.stream("What is 3 times 5?"):
        merged = chunk if merged is None else merged + chunk
    assert merged.tool_calls and merged.tool_calls[0]["name"] == "multiply"
    assert argument_errors(MULTIPLY, merged.tool_calls[0]["args"]) == []


# ---- feedback ----------------------------------------------------------------------------------

def feedback(server, **body):
    return server.post("/v1/feedback", body)


def test_good_makes_a_demonstration_and_bad_retracts_it(server):
    r = ask(server, "What is 11 times 13?", tools=TOOLS, tool_choice="required", max_tokens=CALL_TOKENS)
    made = [{"name": tc.function.name, "arguments": valid(tc)} for tc in r.choices[0].message.tool_calls]
    good = feedback(server, id=r.id, outcome="good")
    assert good.status_code == 200, good.text
    demo_id = good.json()["demonstration_id"]
    demo = server.memory.demonstration(demo_id)
    assert demo["tool_calls"] == made
    assert demo["messages"] == [{"role": "user", "content": "What is 11 times 13?"}] and demo["skill"] == "math"
    assert demo_id in [d["id"] for d in server.memory.recall("11 times 13", k=5)]
    assert server.episode(r.id)["outcome"] == "success"

    bad = feedback(server, id=r.id, outcome="bad", note="wrong numbers")
    assert bad.status_code == 200 and bad.json()["retracted"] == [demo_id]
    assert demo_id not in [d["id"] for d in server.memory.unlearned_demonstrations()]
    assert demo_id not in [d["id"] for d in server.memory.recall("11 times 13", k=5)]
    ep = server.episode(r.id)
    assert ep["outcome"] == "failure" and ep["note"] == "wrong numbers"


def test_a_corrected_call_teaches(server):
    r = ask(server, "What is 2 times 2?", tools=BOTH, tool_choice={"type": "function", "function": {"name": "add"}},
            max_tokens=CALL_TOKENS)
    out = feedback(server, id=r.id, tool_calls=[{"type": "function", "function": {"name": "multiply", "arguments": '{"a": 2, "b": 2}'}}])
    assert out.status_code == 200, out.text
    body = out.json()
    demo = server.memory.demonstration(body["taught_id"])
    assert demo["source"] == "taught" and demo["tool_calls"] == [{"name": "multiply", "arguments": {"a": 2, "b": 2}}]
    assert demo["messages"] == [{"role": "user", "content": "What is 2 times 2?"}]
    assert body["outcome"] == "failure"  # the episode called add
    # a /bad later keeps the correction
    assert feedback(server, id=r.id, outcome="bad").json()["retracted"] == []
    server.memory.demonstration(body["taught_id"])
    wrong = feedback(server, id=r.id, tool_calls=[{"name": "multiply", "arguments": {"a": "two"}}])
    assert wrong.status_code == 400 and "arguments" in wrong.json()["error"]["message"]


def test_feedback_names_its_episode(server):
    r = feedback(server, id="chatcmpl-doesnotexist", outcome="good")
    assert r.status_code == 404 and r.json()["error"]["code"] == "episode_not_found"
    r = feedback(server, id=ask(server).id, outcome="maybe")
    assert r.status_code == 400 and r.json()["error"]["param"] == "outcome"


# ---- models, hot reload, status ----------------------------------------------------------------

def test_models_list_and_a_named_version(server):
    ids = [m.id for m in server.client.models.list().data]
    assert ids[0] == "sdft-agent" and "tiny" in ids
    r = server.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert r.model == "tiny"
    with pytest.raises(openai.NotFoundError) as err:
        server.client.chat.completions.create(model="v9999", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found" and err.value.body["param"] == "model"


def test_a_promotion_is_picked_up_between_two_requests(server, tmp_path):
    before = ask(server)
    save_tiny(tmp_path / "other", seed=1)
    server.store.add_folder(tmp_path / "other", "tiny-b")
    try:
        server.store.use("tiny-b")
        after = ask(server)
        assert (before.model, after.model) == ("tiny", "tiny-b")
        assert server.episode(after.id)["model_version"] == "tiny-b"
        status = server.get("/v1/status").json()
        assert status["champion"] == "tiny-b" and status["serving"] == "tiny-b"
    finally:
        server.store.use("tiny")


def test_status_links_the_last_gate_report_and_serves_it_read_only(server):
    reports = server.memory.home / "reports" / "run-1"
    reports.mkdir(parents=True, exist_ok=True)
    (reports / "report.html").write_text("<h1>gate</h1>")
    run = server.memory.start_run("sft", {})
    server.memory.finish_run(run, "promoted")
    server.memory.add_gate_report(run, "promote", {}, "/somewhere/old-home/reports/run-1/report.html")
    last = server.get("/v1/status").json()["last_run"]
    assert last["id"] == run and last["decision"] == "promote" and last["report"] == "/reports/run-1/report.html"
    assert server.get(last["report"]).text == "<h1>gate</h1>"
    assert server.get("/reports/../memory.db").status_code == 404
    assert httpx.put(server.url + last["report"], headers={"Authorization": f"Bearer {KEY}"}).status_code == 405


# ---- errors and limits -------------------------------------------------------------------------

def test_the_key_is_checked(server):
    for key in (None, "wrong"):
        r = server.get("/v1/models", key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0).models.list()
    assert httpx.get(server.url + "/health").status_code == 200


@pytest.mark.parametrize(("body", "param", "says"), [
    ({"messages": [{"role": "user", "content": "x"}]}, "model", "Field required"),
    ({"model": "sdft-agent", "messages": []}, "messages", "at least 1"),
    ({"model": "sdft-agent", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "system"),
    ({"model": "sdft-agent", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n", "n=1"),
    ({"model": "sdft-agent", "messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature", "2"),
    ({"model": "sdft-agent", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS,
      "tool_choice": {"type": "function", "function": {"name": "divide"}}}, "tool_choice", "divide"),
    ({"model": "sdft-agent", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"},
     "tool_choice", "at least one tool"),
    ({"model": "sdft-agent", "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}, "tools[0]", "object"),
    ({"model": "sdft-agent", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]},
     "messages[1].tool_call_id", "matches no earlier"),
    ({"model": "sdft-agent", "messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "late"}]},
     "messages[1]", "only come first"),
])
def test_bad_requests_get_400_naming_the_field(server, body, param, says):
    r = server.post("/v1/chat/completions", body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and says in err["message"], err


def test_a_malformed_tool_call_in_the_history_names_the_message(server):
    messages = tool_round("42")
    messages[1]["tool_calls"][0]["function"]["arguments"] = '{"a": 6, "b": '
    with pytest.raises(openai.BadRequestError) as err:
        server.client.chat.completions.create(model="sdft-agent", messages=messages, tools=TOOLS)
    body = err.value.body
    assert body["param"] == "messages[1].tool_calls[0].function.arguments" and body["code"] == "invalid_tool_call"
    assert "not valid JSON" in body["message"] and "messages[1]" in body["message"]


def test_not_json_and_too_large_bodies(server):
    r = server.post("/v1/chat/completions", b"{not json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    big = {"model": "sdft-agent", "messages": [{"role": "user", "content": "x" * 70_000}]}
    r = server.post("/v1/chat/completions", big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = server.get("/v1/nothing-here")
    assert r.status_code == 404 and "no route" in r.json()["error"]["message"]


# ---- concurrency -------------------------------------------------------------------------------

def test_concurrent_clients_lose_no_episode_and_mix_none_up(server):
    from concurrent.futures import ThreadPoolExecutor

    n = 8

    def one(i: int):
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120)
        content = f"client {i} asks question {i * 7919}"
        if i % 2:
            chunks = list(client.chat.completions.create(model="sdft-agent", stream=True, max_tokens=6,
                                                         messages=[{"role": "user", "content": content}]))
            return content, chunks[0].id
        r = client.chat.completions.create(model="sdft-agent", max_tokens=6, messages=[{"role": "user", "content": content}])
        return content, r.id

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    assert len({rid for _, rid in results}) == n
    for content, rid in results:
        ep = server.episode(rid)
        assert ep["messages"][0] == {"role": "user", "content": content}
