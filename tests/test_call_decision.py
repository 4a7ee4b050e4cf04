"""The call decision (agent.decode, off by default): a greedy reply with tools on offer opens a tool
call only when the model puts at least `call_threshold` of its probability on the opening, scored
exactly; below it the reply is decoded under the no-call grammar, and nothing else changes."""

from __future__ import annotations

import math
import os

import pytest
import torch

from agent.decode import (
    CALL_THRESHOLD,
    Request,
    complete,
    deciding_calls,
    default_call_threshold,
    opening_logprobs,
    prefill,
)
from agent.prompt import CALL_OPEN, PromptFormat
from tiny import Steered

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather now.",
    "parameters": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["unit"]}}}
TOOLS = [WEATHER]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"unit": "c"}}\n</tool_call>'


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("SDFT_AGENT_CALL_THRESHOLD", raising=False)


def _reference_p(model, prompt: list[int], opening: list[int]) -> float:
    """P(opening | prompt) from one plain forward, in float64."""
    ids = torch.tensor([prompt + opening])
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=torch.arange(ids.shape[1]).unsqueeze(0)).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return math.exp(sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(opening)))


def _setup(tok, question="What is the weather like?"):
    fmt = PromptFormat(tok)
    prompt = fmt.encode([{"role": "user", "content": question}], TOOLS)
    return fmt, prompt, tok(CALL_OPEN, add_special_tokens=False)["input_ids"]


def test_opening_logprobs_equal_a_plain_float64_forward(tiny_model, tiny_tokenizer):
    fmt, _, opening = _setup(tiny_tokenizer)
    asks = ["hi", "What is the weather like in Paris today?", "Convert 5 miles to kilometers."]
    prompts = [fmt.encode([{"role": "user", "content": a}], TOOLS) for a in asks]
    assert len({len(p) for p in prompts}) == 3  # rows of different lengths: left padding is exercised
    ref = [math.log(_reference_p(tiny_model, p, opening)) for p in prompts]
    alone = opening_logprobs(tiny_model, prompts, opening, pad_id=tiny_tokenizer.pad_token_id, batch_size=2)
    k = len(os.path.commonprefix(prompts))
    assert 10 < k < min(len(p) for p in prompts)
    with torch.no_grad():
        cache = prefill(tiny_model, prompts[0][:k])
    shared = opening_logprobs(tiny_model, prompts, opening, pad_id=tiny_tokenizer.pad_token_id,
                              prefix=(k, cache), batch_size=3)
    assert alone == pytest.approx(ref, abs=1e-4) and shared == pytest.approx(ref, abs=1e-4)
    assert all(v < math.log(0.01) for v in ref)  # a random model: the check is on real, small numbers


@pytest.mark.parametrize("push", [0.0, 7.0, 9.0, 30.0])
def test_the_reply_calls_only_at_or_above_the_threshold(tiny_model, tiny_tokenizer, push):
    fmt, prompt, opening = _setup(tiny_tokenizer)
    model = Steered(tiny_model, tiny_tokenizer, len(prompt), CALL, push)
    p = _reference_p(model, prompt, opening)
    if push == 7.0:  # each opening token the argmax, the opening as a whole unlikely: the case
        assert 0.05 < p < 0.5, p  # the decision is for (greedy calls, greedy over the decision answers)
        free, decided = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, call_threshold=0),
                                              Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, call_threshold=0.5)])
        assert free.text.startswith(CALL_OPEN) and CALL_OPEN not in decided.text
    if push == 9.0:
        assert 0.5 < p < 0.95, p
    free = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, call_threshold=0)])[0]
    assert free.call_p is None
    none = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, tool_choice="none", max_new_tokens=30)])[0]
    below, above = (max(p / 2, 1e-12), min(p * 1.5, 1.0)) if p < 0.5 else (p * 0.5, min(p + (1 - p) / 2, 1.0))
    at_below, at_above = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, call_threshold=below),
                                               Request(prompt=prompt, tools=TOOLS, max_new_tokens=30, call_threshold=above)])
    assert at_below.call_p == pytest.approx(p, rel=1e-3) and at_above.call_p == pytest.approx(p, rel=1e-3)
    assert at_below.ids == free.ids  # likely enough: exactly what greedy writes without the decision
    if above > p:  # not likely enough: the reply is the no-call reply, token for token
        assert at_above.ids == none.ids and CALL_OPEN not in at_above.text and at_above.constrained
    if push == 30.0:
        assert free.text.startswith(CALL[:40]) and p > 0.99
    if push == 0.0:
        assert CALL_OPEN not in free.text


def test_the_default_decides_and_a_batch_decides_each_row_alone(tiny_model, tiny_tokenizer):
    """Rows of one batch share the prefix pass; each is decided on its own probability."""
    fmt, prompt, opening = _setup(tiny_tokenizer)
    model = Steered(tiny_model, tiny_tokenizer, len(prompt), CALL, 7.0)
    p = _reference_p(model, prompt, opening)
    other = fmt.encode([{"role": "user", "content": "Thanks!"}], TOOLS)
    assert len(other) != len(prompt)
    assert default_call_threshold() == CALL_THRESHOLD == 0.0  # off unless asked for
    t = min(p * 1.5, 1.0) if p < 0.5 else p / 2
    with deciding_calls(t):
        batch = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=20),
                                      Request(prompt=prompt, tools=TOOLS, max_new_tokens=20, call_threshold=0)],
                         batch_size=2)
    alone = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=20, call_threshold=t)])[0]
    assert batch[0].ids == alone.ids and batch[0].call_p == pytest.approx(alone.call_p, rel=1e-6)
    assert batch[1].call_p is None
    off = complete(model, fmt, [Request(prompt=prompt, tools=TOOLS, max_new_tokens=20)])[0]  # the default
    assert off.call_p is None and off.ids == batch[1].ids


def test_what_the_decision_leaves_alone(tiny_model, tiny_tokenizer):
    """Sampling, tool_choice other than auto, and a prompt without tools: never scored, and the
    same tokens as with the decision off."""
    fmt, prompt, _ = _setup(tiny_tokenizer)
    model = Steered(tiny_model, tiny_tokenizer, len(prompt), CALL, 7.0)
    plain = fmt.encode([{"role": "user", "content": "What is the weather like?"}])
    reqs = [Request(prompt=prompt, tools=TOOLS, temperature=1.0, seed=3, max_new_tokens=20),
            Request(prompt=prompt, tools=TOOLS, tool_choice="required", max_new_tokens=30),
            Request(prompt=prompt, tools=TOOLS, tool_choice="none", max_new_tokens=20),
            Request(prompt=prompt, tools=TOOLS, tool_choice={"name": "get_weather"}, max_new_tokens=30),
            Request(prompt=plain, max_new_tokens=20)]
    with deciding_calls(1.0):
        on = [complete(model, fmt, [r])[0] for r in reqs]
    with deciding_calls(0.0):
        off = [complete(model, fmt, [r])[0] for r in reqs]
    assert all(c.call_p is None for c in on)
    assert [c.ids for c in on] == [c.ids for c in off]


def test_thresholds_out_of_range_are_refused_clearly(tiny_model, tiny_tokenizer, monkeypatch):
    fmt, prompt, _ = _setup(tiny_tokenizer)
    with pytest.raises(ValueError, match=r"requests\[0\]: call_threshold must be in \[0, 1\]"):
        complete(tiny_model, fmt, [Request(prompt=prompt, tools=TOOLS, call_threshold=1.5)])
    with pytest.raises(ValueError, match="call threshold must be in"):
        with deciding_calls(-0.1):
            pass
    monkeypatch.setenv("SDFT_AGENT_CALL_THRESHOLD", "often")
    with pytest.raises(ValueError, match="SDFT_AGENT_CALL_THRESHOLD must be a number"):
        default_call_threshold()
    monkeypatch.setenv("SDFT_AGENT_CALL_THRESHOLD", "0")
    assert default_call_threshold() == 0.0
    with deciding_calls(0.3):
        assert default_call_threshold() == 0.3
    assert default_call_threshold() == 0.0


def test_the_gate_keys_its_cached_results_by_the_threshold():
    from learner.gate import GateConfig, decoding_settings

    off = decoding_settings(GateConfig())  # the default: keys of results cached before it stay valid
    with deciding_calls(0.5):
        on = decoding_settings(GateConfig())
    with deciding_calls(0.7):
        other = decoding_settings(GateConfig())
    assert "call_threshold" not in off and on["call_threshold"] == 0.5 and other["call_threshold"] == 0.7
    assert {k: v for k, v in on.items() if k != "call_threshold"} == off
