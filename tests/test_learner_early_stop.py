"""No memorising: the held-out slice, the stopping rule, and a run that stops on it and ends with
the adapter of its best held-out loss."""

import pytest
import torch

from agent.prompt import PromptFormat
from learner.config import LearnConfig
from learner.divergence import token_cross_entropy
from learner.early_stop import EarlyStopper, mean_cross_entropy, split_holdout
from learner.examples import encode_example, examples_from_demonstrations
from learner.train import train

CALL = {"name": "convert_units", "arguments": {"value": 5, "unit": "km"}}
ASK = [{"role": "user", "content": "Convert 5 miles to km."}]
TRAIN = [{"id": i, "skill": "u", "messages": ASK, "tool_calls": [CALL], "content": None} for i in range(4)]
# the same request answered in prose: learning the call makes this less likely
HELD = [{"id": 9, "skill": "u", "messages": ASK, "tool_calls": None, "content": "The answer is 42."}]


def test_split_holdout_is_seeded_and_keeps_something_to_train_on():
    items = list(range(10))
    train_part, held = split_holdout(items, 0.2, seed=0)
    assert len(held) == 2 and sorted(train_part + held) == items
    assert (train_part, held) == split_holdout(items, 0.2, seed=0)
    assert split_holdout(items, 0.0) == (items, [])
    assert split_holdout([1], 0.5) == ([1], [])
    assert len(split_holdout([1, 2], 0.9)[0]) == 1


def test_stopper_stops_after_patience_evaluations_without_improvement():
    s = EarlyStopper(patience=2, min_delta=0.05)
    assert [s.update(k, v) for k, v in enumerate([3.0, 2.0, 1.97, 1.5, 1.6, 1.49])] == \
        [False, False, False, False, False, True]
    assert (s.best, s.best_step, s.stopped_at) == (1.5, 3, 5)  # 1.97 and 1.49 are within min_delta


def test_mean_cross_entropy_is_the_per_example_mean(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    enc = [encode_example(e, fmt) for e in examples_from_demonstrations(TRAIN[:1] + HELD, fmt)]
    want = []
    for e in enc:
        ids = torch.tensor([e.prompt_ids + e.completion_ids])
        logits = tiny_model(input_ids=ids).logits[0, len(e.prompt_ids) - 1:-1]
        want.append(token_cross_entropy(logits, torch.tensor(e.completion_ids)).mean().item())
    got = mean_cross_entropy(tiny_model, enc, tiny_tokenizer.pad_token_id, batch_size=2, chunk_size=3)
    assert got == pytest.approx(sum(want) / 2, rel=1e-5)


def test_training_stops_when_the_heldout_loss_rises_and_restores_the_best(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(method="sft", lr=3e-2, warmup_ratio=0.0, max_steps=30, batch_size=2, eval_every=1, patience=2)
    held = examples_from_demonstrations(HELD, fmt)
    run = train(tiny_model, tiny_tokenizer, examples_from_demonstrations(TRAIN, fmt), cfg, heldout=held,
                progress=False)
    s = run.summary
    losses = [s["heldout_loss_initial"]] + [h["heldout_loss"] for h in run.history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert s["steps"] == s["early_stopped_at"] == best + 2 < s["planned_steps"] == 30  # two worse in a row
    assert all(v >= losses[best] for v in losses[best + 1:])
    assert s["heldout_best_step"] == best and s["restored_best"] and s["heldout_loss_final"] == losses[best]
    # the adapter is the best one again: its held-out loss is the best loss, not the last
    enc = [encode_example(e, fmt) for e in held]
    assert mean_cross_entropy(run.model, enc, tiny_tokenizer.pad_token_id) == pytest.approx(losses[best], rel=1e-5)
    assert losses[-1] > losses[best]
    assert s["train_loss_final"] > 0


def test_training_runs_on_while_the_heldout_loss_falls(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(method="sft", lr=1e-2, warmup_ratio=0.0, max_steps=4, batch_size=2, eval_every=2, patience=1)
    held = [{**TRAIN[0], "id": 8}]  # the same call again: learning it lowers this one's loss too
    run = train(tiny_model, tiny_tokenizer, examples_from_demonstrations(TRAIN, fmt), cfg,
                heldout=examples_from_demonstrations(held, fmt), progress=False)
    s = run.summary
    assert s["steps"] == 4 and s["early_stopped_at"] is None and not s["restored_best"]
    assert [h.get("heldout_loss") is not None for h in run.history] == [False, True, False, True]
    assert s["heldout_loss_final"] == run.history[-1]["heldout_loss"] < s["heldout_loss_initial"]
