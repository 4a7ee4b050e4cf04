"""Retention focus (LearnConfig.retention_focus): each step scores candidate retention prompts by
how much likelier the student is than its teacher to open a tool call, one forward each, and
trains on the top ones. The score is checked against a plain float64 forward per prompt; the
choice against the scores; the run's record against the steps."""

import math

import pytest
import torch

from agent.prompt import CALL_OPEN, PromptFormat
from learner.config import LearnConfig
from learner.examples import examples_from_demonstrations
from learner.lora import attach_lora
from learner.retention import (
    Focus,
    build_pool,
    encode_pool,
    opening_logprob,
    retention_batch,
    retention_objective,
)
from learner.train import train
from skills.retention import everyday_messages, task_messages
from tiny import randomise_adapter

TOOL = {"name": "convert_units", "description": "Convert a value between units",
        "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                       "required": ["value", "unit"]}}
CALL = {"name": "convert_units", "arguments": {"value": 5, "unit": "km"}}
DEMOS = [{"id": i, "skill": "u", "messages": [{"role": "user", "content": f"Convert {i} miles to km."}],
          "tool_calls": [CALL], "content": None} for i in range(1, 5)]


def _pool(n=10):
    cfg = LearnConfig(retention="kl", retention_prompts=n, retention_tools_share=0.7, retention_task_share=0.3)
    return build_pool(cfg, everyday_messages(), [[TOOL]], [], task_messages([TOOL]))


def _reference(model, prompts, opening):
    """log P(opening | prompt): each prompt and the opening run whole, no cache, no padding."""
    out = []
    with torch.no_grad():
        for p in prompts:
            logits = model(input_ids=torch.tensor([p + opening])).logits[0].double()
            logp = torch.log_softmax(logits, -1)
            out.append(sum(logp[len(p) - 1 + j, t].item() for j, t in enumerate(opening)))
    return out


@pytest.mark.parametrize("share", [False, True])
def test_opening_logprob_equals_a_plain_forward_per_prompt(tiny_model, tiny_tokenizer, share):
    model = tiny_model.double().eval()
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(share_prompt_prefix=share)
    pool = encode_pool(_pool(10), fmt)
    prompts = [e.prompt_ids for e in pool]
    opening = tiny_tokenizer(CALL_OPEN, add_special_tokens=False)["input_ids"]
    assert len(opening) > 1  # several tokens: the whole opening is scored, not its first piece
    got = opening_logprob(model, prompts, opening, tiny_tokenizer.pad_token_id, cfg.min_shared_prefix)
    want = _reference(model, prompts, opening)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
    assert len(set(round(v, 6) for v in got)) > 1  # the prompts differ, so do their scores


def test_focus_trains_on_the_prompts_where_the_student_most_exceeds_its_teacher(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(method="sft", retention="kl", retention_batch=4, retention_focus=2,
                      retention_focus_candidates=6)
    pm = attach_lora(tiny_model.double(), cfg)
    pool = encode_pool(_pool(10), fmt)
    pad = tiny_tokenizer.pad_token_id
    opening = tiny_tokenizer(CALL_OPEN, add_special_tokens=False)["input_ids"]
    focus = Focus(retention_objective(pm, cfg, {fmt.end_of_turn_id}, pad), pool, opening, cfg, pad)

    # before the first step the student is its teacher: every excess is exactly 0
    seeded = retention_batch(0, len(pool), cfg)
    focus.batch(0, seeded)
    assert focus.history[0]["max"] == 0.0 and focus.history[0]["chosen_min"] == 0.0

    randomise_adapter(pm)
    seeded = retention_batch(1, len(pool), cfg)
    got = focus.batch(1, seeded)
    rows = focus.candidates(1)
    assert len(rows) == 6 and len(set(rows)) == 6
    student = [math.exp(v) for v in _reference(pm, [pool[i].prompt_ids for i in rows], opening)]
    with pm.disable_adapter():
        teacher = [math.exp(v) for v in _reference(pm, [pool[i].prompt_ids for i in rows], opening)]
    # the teacher is scored for the 2k candidates the student is likeliest to call on, and the
    # k of those that most exceed it are trained on
    likely = sorted(range(6), key=lambda j: -student[j])[:4]
    assert {rows[j] for j in likely} <= set(focus.teacher)
    assert [focus.teacher[rows[j]] for j in likely] == pytest.approx([teacher[j] for j in likely], rel=1e-9)
    excess = {j: student[j] - teacher[j] for j in likely}
    best = [rows[j] for j in sorted(likely, key=lambda j: -excess[j])[:2]]
    assert got[:2] == best
    assert got[2:] == [i for i in seeded if i not in best][:2]  # the rest: the seeded order's
    assert len(got) == 4 and len(set(got)) == 4
    assert focus.history[1]["max"] == pytest.approx(max(excess.values()), rel=1e-9)
    assert focus.history[1]["student_mean"] == pytest.approx(sum(student) / 6, rel=1e-9)
    assert all(focus.chosen[i] >= 1 for i in best)


def test_a_run_with_focus_records_what_it_chose(tiny_tokenizer):
    from tiny import build_tiny_model

    fmt = PromptFormat(tiny_tokenizer)
    examples = examples_from_demonstrations(DEMOS, fmt, {"u": [TOOL]})
    cfg = LearnConfig(method="sft", retention="kl", retention_max_new_tokens=4, max_steps=3, batch_size=2,
                      retention_batch=3, retention_focus=1, retention_focus_candidates=5, lr=1e-2, warmup_ratio=0.0)
    pool = _pool(10)
    run = train(build_tiny_model(tiny_tokenizer), tiny_tokenizer, examples, cfg, retention=pool, progress=False)
    focus = run.summary["retention"]["focus"]
    assert (focus["k"], focus["candidates"]) == (1, 5)
    assert [h["step"] for h in focus["steps"]] == [0, 1, 2]
    assert focus["steps"][0]["max"] == 0.0  # nothing has moved before the first step
    assert sum(m["times"] for m in focus["most_chosen"]) == 3
    assert {m["prompt"] for m in focus["most_chosen"]} <= {p.messages[-1]["content"] for p in pool}
    assert focus["seconds"] > 0


def test_focus_and_corpus_are_reachable_with_set():
    from learner.config import parse_settings

    cfg = LearnConfig(**parse_settings(["retention_corpus=fetched", "retention_focus=4",
                                        "retention_focus_candidates=24", "retention_prompts=512"]))
    assert (cfg.retention_corpus, cfg.retention_focus, cfg.retention_focus_candidates, cfg.retention_prompts) == \
        ("fetched", 4, 24, 512)
    assert (LearnConfig().retention_corpus, LearnConfig().retention_focus) == ("written", 0)  # off unless asked


def test_focus_settings_are_checked():
    with pytest.raises(ValueError, match="retention_focus must be between 0"):
        LearnConfig(retention_batch=4, retention_focus=5)
    with pytest.raises(ValueError, match="retention_focus_candidates must be at least"):
        LearnConfig(retention_batch=8, retention_focus=4, retention_focus_candidates=2)
    with pytest.raises(ValueError, match="retention_corpus must be one of written, fetched"):
        LearnConfig(retention_corpus="web")
