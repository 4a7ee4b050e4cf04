"""Rehearsal beside the new skill (LearnConfig.replay_batch): each micro-batch adds rehearsed
demonstrations from their own stream, so the step plan and every new demonstration's share are
what they would be without rehearsal."""

import pytest

import learner.train as train_module
from agent.prompt import PromptFormat
from learner.config import LearnConfig
from learner.examples import examples_from_demonstrations
from learner.train import plan_steps, rehearsal_batches, step_batches, train


def _demos(skill: str, n: int, first_id: int) -> list[dict]:
    return [{"id": first_id + i, "skill": skill, "messages": [{"role": "user", "content": f"Convert {i} {skill}."}],
             "tool_calls": [{"name": "convert_units", "arguments": {"value": i, "unit": "km"}}], "content": None}
            for i in range(n)]


def test_rehearsal_stream_is_seeded_disjoint_across_processes_and_covers_the_set():
    cfg = LearnConfig(batch_size=2, grad_accum=2, replay=5, replay_batch=3, seed=4)
    plan = plan_steps(8, cfg, world=2)
    assert plan.total_steps == 2 * 1  # epochs 2 over 8 new examples at 8 a step: rehearsal adds no step
    per_step = [sorted(sum(rehearsal_batches(0, plan, cfg, rank, cfg.seed, 5), [])) for rank in (0, 1)]
    assert all(len(b) == 2 * 3 for b in per_step)  # grad_accum micro-batches × replay_batch, per process
    # the stream's first five positions are one permutation of the set: micro-batch 0 of ranks 0
    # and 1 (positions 0-2, 3-5) hold every rehearsed example once before any repeats
    first = rehearsal_batches(0, plan, cfg, 0, cfg.seed, 5)[0] + rehearsal_batches(0, plan, cfg, 1, cfg.seed, 5)[0]
    assert sorted(first[:5]) == [0, 1, 2, 3, 4]
    assert rehearsal_batches(1, plan, cfg, 0, cfg.seed, 5) == rehearsal_batches(1, plan, cfg, 0, cfg.seed, 5)
    # none without a rehearsal set or with replay_batch 0
    assert rehearsal_batches(0, plan, cfg, 0, cfg.seed, 0) == [[], []]
    off = LearnConfig(batch_size=2, grad_accum=2, replay=5)
    assert rehearsal_batches(0, plan_steps(8, off), off, 0, 0, 5) == [[], []]
    # the new examples' stream is untouched by rehearsal
    assert step_batches(0, plan, cfg, 0, cfg.seed) == step_batches(0, plan, LearnConfig(batch_size=2, grad_accum=2,
                                                                                      seed=4), 0, cfg.seed)


def _recorded(monkeypatch):
    seen = []
    real = train_module.micro_step

    def spy(objective, wrapped, peft_model, batch, n_sequences, *args, **kwargs):
        seen.append(([e.example.demo_id for e in batch], n_sequences))
        return real(objective, wrapped, peft_model, batch, n_sequences, *args, **kwargs)

    monkeypatch.setattr(train_module, "micro_step", spy)
    return seen


def test_replay_batch_adds_rehearsal_to_every_batch_without_adding_steps(tiny_model, tiny_tokenizer, monkeypatch):
    fmt = PromptFormat(tiny_tokenizer)
    new = examples_from_demonstrations(_demos("miles", 4, 1), fmt)
    old = examples_from_demonstrations(_demos("feet", 3, 100), fmt)
    seen = _recorded(monkeypatch)
    cfg = LearnConfig(method="sft", batch_size=2, epochs=1, replay=3, replay_batch=1, lr=1e-3)
    result = train(tiny_model, tiny_tokenizer, new, cfg, progress=False, rehearsal=old)
    assert result.plan.total_steps == 2 and result.summary["steps"] == 2
    assert [len(ids) for ids, _ in seen] == [3, 3]  # two new and one rehearsed per step
    assert all(n == 2 for _, n in seen)  # the mean is over the new ones' count: a rehearsed one weighs as much
    trained_new = sorted(i for ids, _ in seen for i in ids if i < 100)
    assert trained_new == [1, 2, 3, 4]  # every new demonstration once, as without rehearsal
    assert {i for ids, _ in seen for i in ids if i >= 100} <= {100, 101, 102}
    assert all(sum(i >= 100 for i in ids) == 1 for ids, _ in seen)


def test_replay_batch_zero_puts_rehearsal_in_the_one_stream(tiny_model, tiny_tokenizer, monkeypatch):
    fmt = PromptFormat(tiny_tokenizer)
    new = examples_from_demonstrations(_demos("miles", 4, 1), fmt)
    old = examples_from_demonstrations(_demos("feet", 3, 100), fmt)
    seen = _recorded(monkeypatch)
    cfg = LearnConfig(method="sft", batch_size=2, epochs=1, replay=3, lr=1e-3)
    result = train(tiny_model, tiny_tokenizer, new, cfg, progress=False, rehearsal=old)
    assert result.plan.total_steps == 4  # ceil(7 / 2): rehearsal counts toward the steps
    stream = [i for ids, _ in seen for i in ids]
    assert sorted(stream[:7]) == [1, 2, 3, 4, 100, 101, 102]  # one permutation of new and rehearsed
    assert all(len(ids) <= 2 for ids, _ in seen)


def test_replay_batch_is_validated():
    with pytest.raises(ValueError, match=r"^replay_batch must be 0"):
        LearnConfig(replay=4, replay_batch=-1)
    # replay 0 with the shipped replay_batch (`learn --replay 0`): nothing to rehearse, not an error
    assert LearnConfig(replay=0, replay_batch=2).replay_batch == 2
