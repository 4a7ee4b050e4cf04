"""Schema-constrained tool calls (agent.constrain through agent.decode.complete) on the tiny random
model, which writes garbage when left alone: with the grammar every call it opens parses and
validates, tool_choice is honoured, and free text is untouched."""

from __future__ import annotations

import json

import pytest

from agent.constrain import ToolChoiceError, grammars_for, lark_grammar
from agent.decode import Request, complete, generate_ids
from agent.prompt import CALL_OPEN, PromptFormat, call_block
from memory.toolschema import argument_errors
from tiny import Steered

BOOK = {"type": "function", "function": {
    "name": "book_trip",
    "description": "Book a trip.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 6},
            "nights": {"type": "integer", "minimum": 1, "maximum": 9},
            "budget": {"type": "number"},
            "class": {"type": "string", "enum": ["economy", "business"]},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["sea", "ski", "art"]}, "maxItems": 3},
            "traveller": {"type": "object",
                          "properties": {"age": {"type": "integer"}, "vip": {"type": "boolean"}},
                          "required": ["age"]},
        },
        "required": ["city", "nights", "class"],
    }}}
WEATHER = {"name": "get_weather", "description": "Weather now.",
           "parameters": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}},
                          "required": ["unit"]}}
TOOLS = [BOOK, WEATHER]
ASK = [{"role": "user", "content": "Convert 5 miles to kilometers."}]


def _fmt_prompt(tok, tools=TOOLS, messages=ASK):
    fmt = PromptFormat(tok)
    return fmt, fmt.encode(messages, tools)


def _validate_all(fmt, completions, tools):
    """Every block parses, names an offered tool and satisfies its schema; the JSON is spelled
    exactly as call_json spells it (no padding whitespace). Returns the calls."""
    calls = []
    for c in completions:
        parsed = fmt.parse(c.text, tools)
        assert parsed.invalid == [], (c.text, parsed.invalid)
        assert c.text.count(CALL_OPEN) == len(parsed.calls)
        for block in c.text.split(CALL_OPEN)[1:]:
            assert block.startswith("\n{") and "}\n</tool_call>" in block
            assert _unpadded(block[1: block.index("}\n</tool_call>") + 1])
        calls += parsed.calls
    return calls


def _unpadded(raw: str) -> bool:
    """Outside strings, whitespace is only the one space json.dumps puts after ',' and ':'."""
    in_string = escaped = False
    for i, ch in enumerate(raw):
        if in_string:
            escaped, in_string = (not escaped and ch == "\\"), in_string and (escaped or ch != '"')
        elif ch == '"':
            in_string = True
        elif ch.isspace() and not (ch == " " and raw[i - 1] in ",:" and not raw[i + 1].isspace()):
            return False
    return True


def test_required_calls_validate_for_every_schema_feature(tiny_model, tiny_tokenizer):
    fmt, prompt = _fmt_prompt(tiny_tokenizer)
    reqs = [Request(prompt=prompt, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                    temperature=1.0, seed=s, max_new_tokens=200) for s in range(8)]
    done = complete(tiny_model, fmt, reqs, batch_size=8)
    calls = _validate_all(fmt, done, TOOLS)
    assert all(c.finish_reason == "stop" for c in done)
    assert all(c.text.startswith(CALL_OPEN) for c in done)
    assert len(calls) == 8 and {c["name"] for c in calls} == {"book_trip", "get_weather"}
    for call in calls:
        tool = BOOK if call["name"] == "book_trip" else WEATHER
        assert argument_errors(tool, call["arguments"]) == []
        if call["name"] == "book_trip":
            a = call["arguments"]
            assert type(a["nights"]) is int and 1 <= a["nights"] <= 9  # never 1.0
            assert a["class"] in ("economy", "business") and len(a["city"]) <= 6
            assert isinstance(a.get("budget", 0.5), (int, float)) and not isinstance(a.get("budget", 0.5), bool)
            assert set(a.get("tags", [])) <= {"sea", "ski", "art"}
            if "traveller" in a:
                assert type(a["traveller"]["age"]) is int and set(a["traveller"]) <= {"age", "vip"}
    # optional fields, arrays and nested objects are allowed: a model writing them is left alone
    full = {"city": "Oslo", "nights": 3, "budget": 99.5, "class": "economy", "tags": ["sea", "art"],
            "traveller": {"age": 40, "vip": True}}
    block = call_block({"name": "book_trip", "arguments": full})
    (kept,) = complete(Steered(tiny_model, tiny_tokenizer, len(prompt), block), fmt,
                       [Request(prompt=prompt, tools=TOOLS, tool_choice="required", max_new_tokens=160)])
    assert kept.text.startswith(block) and fmt.parse(kept.text, TOOLS).calls[0]["arguments"] == full


def test_unconstrained_the_same_model_writes_invalid_calls(tiny_model, tiny_tokenizer):
    fmt, prompt = _fmt_prompt(tiny_tokenizer)
    reqs = [Request(prompt=prompt, tools=TOOLS, tool_choice="required", temperature=1.0, seed=s,
                    max_new_tokens=60, constrain=False) for s in range(4)]
    done = complete(tiny_model, fmt, reqs)
    assert all(not c.constrained and c.text.startswith(CALL_OPEN) for c in done)  # the opening is forced
    assert all(fmt.parse(c.text, TOOLS).invalid for c in done)


def test_a_model_heading_for_an_invalid_call_is_kept_valid(tiny_model, tiny_tokenizer):
    fmt, prompt = _fmt_prompt(tiny_tokenizer)
    bad = ('<tool_call>\n{"name": "book_trip", "arguments": {"city": "Paris", "nights": 2.0, '
           '"class": "first", "extra": 1}}\n</tool_call>')
    steered = Steered(tiny_model, tiny_tokenizer, len(prompt), bad)
    free, fixed = complete(steered, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=80, constrain=False),
                                          Request(prompt=prompt, tools=TOOLS, max_new_tokens=80)])
    assert free.text.startswith(bad) and fmt.parse(free.text, TOOLS).invalid
    (call,) = _validate_all(fmt, [fixed], TOOLS)
    assert call["name"] == "book_trip" and call["arguments"]["city"] == "Paris"
    assert type(call["arguments"]["nights"]) is int and "extra" not in call["arguments"]


def test_named_tool_choice_always_calls_that_tool(tiny_model, tiny_tokenizer):
    fmt, prompt = _fmt_prompt(tiny_tokenizer)
    reqs = [Request(prompt=prompt, tools=TOOLS, tool_choice={"type": "function", "function": {"name": name}},
                    parallel_tool_calls=False, temperature=1.0, seed=s, max_new_tokens=200)
            for name in ("get_weather", "book_trip") for s in range(3)]
    done = complete(tiny_model, fmt, reqs, batch_size=6)
    _validate_all(fmt, done, TOOLS)
    assert [[c["name"] for c in fmt.parse(d.text, TOOLS).calls] for d in done] == [["get_weather"]] * 3 + [["book_trip"]] * 3
    many = complete(tiny_model, fmt, [Request(prompt=prompt, tools=TOOLS, tool_choice={"name": "get_weather"},
                                              temperature=1.0, seed=s, max_new_tokens=200) for s in range(4)])
    calls = _validate_all(fmt, many, TOOLS)
    assert len(calls) >= 4 and {c["name"] for c in calls} == {"get_weather"}


def test_none_never_calls_even_a_model_that_wants_to(tiny_model, tiny_tokenizer):
    fmt, prompt = _fmt_prompt(tiny_tokenizer)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"unit": "c"}}\n</tool_call>'
    steered = Steered(tiny_model, tiny_tokenizer, len(prompt), "Sure. " + call)
    auto, none = complete(steered, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=40),
                                         Request(prompt=prompt, tools=TOOLS, tool_choice="none", max_new_tokens=40)])
    assert fmt.parse(auto.text, TOOLS).calls == [{"name": "get_weather", "arguments": {"unit": "c"}}]
    assert auto.text.startswith("Sure. " + call)
    assert CALL_OPEN not in none.text and none.text.startswith("Sure. ")
    sampled = complete(steered, fmt, [Request(prompt=prompt, tools=TOOLS, tool_choice="none", temperature=1.0, seed=s,
                                              max_new_tokens=40) for s in range(4)])
    assert all(CALL_OPEN not in c.text for c in sampled)


def test_free_text_is_unchanged_when_no_call_is_opened(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    answer = "Paris is the capital of France. The answer is 42."
    prompt = fmt.encode([{"role": "user", "content": "What is the capital of France?"}], TOOLS)
    steered = Steered(tiny_model, tiny_tokenizer, len(prompt), answer + "<|im_end|>", push=8.0)
    free, kept = complete(steered, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=40, constrain=False),
                                         Request(prompt=prompt, tools=TOOLS, max_new_tokens=40)])
    assert free.text == answer and kept.constrained and kept.ids == free.ids
    # the random model's own text, up to its first token that is no text (a special token, or
    # bytes that are not UTF-8, which the grammar does not allow)
    specials = set(tiny_tokenizer.all_special_ids) - {fmt.end_of_turn_id}
    asks = ["Convert 5 miles to kilometers.", "hi", "The answer is 42.", "system user assistant tool"]
    prompts = [fmt.encode([{"role": "user", "content": a}], TOOLS) for a in asks]
    free = complete(tiny_model, fmt, [Request(prompt=p, tools=TOOLS, max_new_tokens=16, constrain=False) for p in prompts])
    kept = complete(tiny_model, fmt, [Request(prompt=p, tools=TOOLS, max_new_tokens=16) for p in prompts])
    compared = 0
    for f, k in zip(free, kept, strict=True):
        n = next((i for i, t in enumerate(f.ids) if t in specials or "\ufffd" in tiny_tokenizer.decode([t])), len(f.ids))
        assert CALL_OPEN not in tiny_tokenizer.decode(f.ids[:n])
        assert k.ids[:n] == f.ids[:n]
        compared += n
    assert compared >= 3


def test_gate_and_server_decode_the_same_tokens(tiny_model, tiny_tokenizer):
    """The gate (skills.evaluate, batched) and the server (agent.decode.generate_ids, what
    LocalChatModel calls, one request at a time) take one path."""
    from skills.evaluate import evaluate_skill

    fmt = PromptFormat(tiny_tokenizer)
    cases = [{"id": str(i), "messages": [{"role": "user", "content": a}],
              "expected": [{"name": "get_weather", "arguments": {"unit": ["c"]}}]}
             for i, a in enumerate(["Weather in Paris in celsius?", "hi", "Convert 5 miles to kilometers."])]
    r = evaluate_skill(tiny_model, tiny_tokenizer, cases, TOOLS, batch_size=2, max_new_tokens=20)
    assert r.constrained is True and "decoding: constrained" in r.notes
    for case, got in zip(cases, r.cases, strict=True):
        ids = generate_ids(tiny_model, fmt, fmt.encode(case["messages"], TOOLS), max_new_tokens=20, tools=TOOLS,
                           constrain=True)
        assert got["text"] == tiny_tokenizer.decode(ids, skip_special_tokens=True)
    off = evaluate_skill(tiny_model, tiny_tokenizer, cases[:1], TOOLS, max_new_tokens=4, constrain=False)
    assert off.constrained is False and "decoding: free" in off.notes


def test_seeded_sampling_is_the_same_alone_and_in_any_batch(tiny_model, tiny_tokenizer):
    fmt, prompt = _fmt_prompt(tiny_tokenizer)
    other = fmt.encode([{"role": "user", "content": "hi"}], TOOLS)
    req = dict(tools=TOOLS, temperature=0.9, top_p=0.95, max_new_tokens=30)
    alone = complete(tiny_model, fmt, [Request(prompt=prompt, seed=7, **req)])[0].ids
    batch = complete(tiny_model, fmt, [Request(prompt=other, seed=1, **req), Request(prompt=prompt, seed=7, **req),
                                       Request(prompt=other, **{**req, "temperature": 0.0})], batch_size=3)
    assert batch[1].ids == alone
    assert complete(tiny_model, fmt, [Request(prompt=prompt, seed=8, **req)])[0].ids != alone


def test_stop_strings_end_the_row_and_are_cut(tiny_model, tiny_tokenizer):
    fmt, prompt = _fmt_prompt(tiny_tokenizer)
    (full,) = complete(tiny_model, fmt, [Request(prompt=prompt, max_new_tokens=20, constrain=False)])
    assert len(full.text) > 6
    stop = full.text[3:6]
    (cut,) = complete(tiny_model, fmt, [Request(prompt=prompt, max_new_tokens=20, constrain=False, stop=[stop])])
    assert cut.text == full.text[: full.text.index(stop)] and cut.finish_reason == "stop"
    assert len(cut.ids) < len(full.ids) and full.ids[: len(cut.ids)] == cut.ids
    assert full.finish_reason == ("stop" if full.ids[-1] == fmt.end_of_turn_id else "length")


def test_grammars_compile_once_per_tool_set(tiny_model, tiny_tokenizer):
    fmt, prompt = _fmt_prompt(tiny_tokenizer)
    grammars = grammars_for(tiny_tokenizer, fmt.end_of_turn_id)
    assert grammars_for(tiny_tokenizer, fmt.end_of_turn_id) is grammars
    before = grammars.cached
    for _ in range(3):
        complete(tiny_model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=3)] * 2)
    assert grammars.cached <= before + 1
    complete(tiny_model, fmt, [Request(prompt=prompt, tools=[WEATHER], max_new_tokens=3)])
    assert grammars.cached <= before + 2


def test_bad_tool_choice_and_requests_are_refused_clearly(tiny_model, tiny_tokenizer):
    fmt, prompt = _fmt_prompt(tiny_tokenizer)
    with pytest.raises(ToolChoiceError, match="names no offered tool"):
        complete(tiny_model, fmt, [Request(prompt=prompt, tools=TOOLS, tool_choice={"function": {"name": "fly"}})])
    with pytest.raises(ToolChoiceError, match="needs at least one tool"):
        complete(tiny_model, fmt, [Request(prompt=prompt, tool_choice="required")])
    with pytest.raises(ValueError, match="top_p"):
        complete(tiny_model, fmt, [Request(prompt=prompt, top_p=0)])
    with pytest.raises(ValueError, match="prompt needs at least one token"):
        complete(tiny_model, fmt, [Request(prompt=[])])


def test_grammar_json_has_no_free_whitespace():
    g = lark_grammar([WEATHER], "required")
    body = json.loads(g.split("call: %json ", 1)[1].split("\nTEXT:", 1)[0])
    assert body["x-guidance"]["whitespace_flexible"] is False
    assert body["properties"]["arguments"]["additionalProperties"] is False
