"""Rollouts: batched, left-padded sampling that matches unbatched generation, stops each row at
its end of turn and spends no compute on finished rows."""

from functools import partial

import torch

from agent.decode import decode, sample_next
from agent.prompt import PromptFormat

sample = partial(decode, temperature=1.0)  # the rollouts' setting; greedy where a test says 0

PROMPTS = [[{"role": "user", "content": "Convert 5 miles to kilometers."}],
           [{"role": "system", "content": "You can use these tools."},
            {"role": "user", "content": "What is the capital of France? Paris is the capital of France."}]]


def _prompts(tok):
    fmt = PromptFormat(tok)
    return fmt, [fmt.encode(m) for m in PROMPTS]


def test_batched_greedy_equals_unbatched_generate(tiny_model, tiny_tokenizer):
    fmt, prompts = _prompts(tiny_tokenizer)
    assert len(prompts[0]) != len(prompts[1])  # so the batch really is left-padded
    got = sample(tiny_model, prompts, max_new_tokens=12, stop_ids={fmt.end_of_turn_id},
                 pad_id=tiny_tokenizer.pad_token_id, temperature=0.0)
    for p, completion in zip(prompts, got, strict=True):
        ids = torch.tensor([p])
        ref = tiny_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=12, eos_token_id=fmt.end_of_turn_id,
                                  pad_token_id=tiny_tokenizer.pad_token_id)[0, len(p):].tolist()
        if fmt.end_of_turn_id in ref:
            ref = ref[: ref.index(fmt.end_of_turn_id) + 1]
        assert completion == ref


def _count_batches(model):
    sizes = []
    handle = model.register_forward_pre_hook(lambda m, a, kw: sizes.append(kw["input_ids"].shape), with_kwargs=True)
    return sizes, handle


def test_finished_rows_leave_the_batch(tiny_model, tiny_tokenizer):
    fmt, prompts = _prompts(tiny_tokenizer)
    # row 0: forced opening of 3 tokens and a total budget of 5 → 2 sampled tokens
    forced = [[11, 12, 13], []]
    sizes, handle = _count_batches(tiny_model)
    try:
        got = sample(tiny_model, prompts, forced=forced, max_new_tokens=5, stop_ids={fmt.end_of_turn_id},
                     pad_id=tiny_tokenizer.pad_token_id, temperature=0.0)
    finally:
        handle.remove()
    assert got[0][:3] == [11, 12, 13] and len(got[0]) == 5 and len(got[1]) == 5
    assert [s[0] for s in sizes] == [2, 2, 1, 1, 1]  # batch of 1 once row 0 is done
    assert sizes[0][1] == max(len(prompts[0]) + 3, len(prompts[1])) and all(s[1] == 1 for s in sizes[1:])


def test_stop_token_ends_a_row(tiny_model, tiny_tokenizer):
    fmt, prompts = _prompts(tiny_tokenizer)
    free = sample(tiny_model, prompts, max_new_tokens=8, stop_ids=set(), pad_id=0, temperature=0.0)
    # the first token where row 0 departs from row 1 now counts as row 0's end of turn
    k = next(i for i, t in enumerate(free[0]) if t not in free[1])
    stop = {free[0][k]}
    sizes, handle = _count_batches(tiny_model)
    try:
        got = sample(tiny_model, prompts, max_new_tokens=8, stop_ids=stop, pad_id=0, temperature=0.0)
    finally:
        handle.remove()
    assert got[0] == free[0][: k + 1] and got[1] == free[1]
    assert [s[0] for s in sizes] == [2] * (k + 1) + [1] * (8 - k - 1)


def test_sampling_is_reproducible_and_rows_differ(tiny_model, tiny_tokenizer):
    fmt, prompts = _prompts(tiny_tokenizer)
    args = dict(max_new_tokens=8, stop_ids={fmt.end_of_turn_id}, pad_id=0)
    a = sample(tiny_model, prompts * 2, generator=torch.Generator().manual_seed(1), **args)
    b = sample(tiny_model, prompts * 2, generator=torch.Generator().manual_seed(1), **args)
    assert a == b
    assert a[0] != a[2]  # same prompt, independent samples


def test_sample_next_draws_from_softmax_and_nucleus():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    freq = torch.bincount(sample_next(logits, 1.0, 1.0, g), minlength=4).float() / 20000
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.015)
    # top_p: the smallest set reaching 0.8 is {0, 1} (0.64 + 0.24), renormalised
    freq = torch.bincount(sample_next(logits, 1.0, 0.8, g), minlength=4).float() / 20000
    p = torch.softmax(logits[0], -1)[:2]
    assert freq[2:].sum() == 0 and torch.allclose(freq[:2], p / p.sum(), atol=0.015)
    assert sample_next(logits[:1], 0.0).item() == 0
