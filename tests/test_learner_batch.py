"""Batches that share a prompt prefix run it once; the result equals running every row whole."""

from functools import partial

import torch

from agent.decode import decode
from agent.prompt import PromptFormat
from learner.batch import (
    MIN_SHARED_PREFIX,
    completion_hidden,
    pack,
    prefix_groups,
    shared_prefix_len,
)
from learner.config import LearnConfig
from learner.divergence import token_cross_entropy
from learner.lora import STUDENT, attach_lora

sample = partial(decode, temperature=1.0)  # the rollouts' setting; greedy where a test says 0

TOOLS = [{"name": "convert_units", "description": "Convert a value between units",
          "parameters": {"type": "object", "properties": {"value": {"type": "number"}}, "required": ["value"]}}]
QUESTIONS = ["Convert 5 miles to kilometers.", "How many days between 2024-01-01 and 2024-03-01?",
             "What is the capital of France?"]


def _prompts(tok):
    fmt = PromptFormat(tok)
    return fmt, [fmt.encode([{"role": "user", "content": q}], TOOLS) for q in QUESTIONS]


def test_shared_prefix_len():
    a, b = list(range(100)), list(range(90)) + [7] * 20
    assert shared_prefix_len([a, b]) == 90
    assert shared_prefix_len([a, a[:50]]) == 49  # every row keeps a token of its own
    assert shared_prefix_len([a]) == 0 and shared_prefix_len([a, [5] + a]) == 0
    assert shared_prefix_len([a[:MIN_SHARED_PREFIX - 1] + [1], a[:MIN_SHARED_PREFIX - 1] + [2]]) == 0


def test_hidden_states_and_gradients_match_rows_run_alone(tiny_model, tiny_tokenizer):
    """A batch (prompts and completions of different lengths), with and without the shared
    prefix, gives each row the hidden states and the gradient it gets run alone. In float64, so
    the comparison is exact up to rounding (float32 kernels differ in the last bits between
    padded and unpadded shapes, which small LoRA gradients would drown in)."""
    fmt, prompts = _prompts(tiny_tokenizer)
    assert len({len(p) for p in prompts}) == 3
    pm = attach_lora(tiny_model, LearnConfig()).double()
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if f".{STUDENT}." in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
    head = pm.get_output_embeddings()
    completions = [[40, 41, 42, fmt.end_of_turn_id], [50, 51], [60, 61, 62, 63, 64, 65]]

    def run(batches, minimum):
        pm.zero_grad(set_to_none=True)
        hs = []
        for ps, cs in batches:
            packed = pack(ps, cs, tiny_tokenizer.pad_token_id, min_shared_prefix=minimum)
            assert bool(packed.prefix_ids) == (minimum is not None and len(ps) > 1)
            h = completion_hidden(pm, packed)
            ce = token_cross_entropy(head(h), packed.completion_ids)
            (ce * packed.completion_mask).sum().backward()
            hs += [row[m] for row, m in zip(h.detach(), packed.completion_mask, strict=True)]
        return hs, torch.cat([p.grad.flatten() for p in pm.parameters() if p.grad is not None])

    alone_h, alone_g = run([([p], [c]) for p, c in zip(prompts, completions, strict=True)], None)
    assert alone_g.abs().max() > 1e-3
    for minimum in (MIN_SHARED_PREFIX, None):
        h, g = run([(prompts, completions)], minimum)
        for a, b in zip(h, alone_h, strict=True):
            assert torch.allclose(a, b, atol=1e-10)
        assert (g - alone_g).abs().max() < 1e-6 * alone_g.abs().max()  # float32 rotary tables
    assert len(pack(prompts, completions, 0).prefix_ids) > 100


def test_rollouts_match_unshared(tiny_model, tiny_tokenizer):
    fmt, prompts = _prompts(tiny_tokenizer)
    args = dict(max_new_tokens=10, stop_ids={fmt.end_of_turn_id}, pad_id=tiny_tokenizer.pad_token_id,
                temperature=0.0, forced=[[11, 12], [], [13]])
    shared = sample(tiny_model, prompts, **args)
    whole = sample(tiny_model, prompts, min_shared_prefix=None, **args)
    assert shared == whole
    assert shared[0][:2] == [11, 12] and shared[2][:1] == [13]


def test_prefix_groups_split_a_mixed_batch_by_shared_prompt():
    header = list(range(40))
    skill_a, skill_b = header + [1] * 200, header + [2] * 200
    prompts = [skill_a + [7], skill_b + [8], skill_a + [9, 9], skill_b + [10]]
    assert prefix_groups(prompts) == [[0, 2], [1, 3]]
    assert prefix_groups(prompts, None) == [[0, 1, 2, 3]]  # sharing off: the batch as given
    assert prefix_groups(prompts[:1]) == [[0]]
    assert prefix_groups([skill_a + [7], skill_a + [8]]) == [[0, 1]]
    # nothing shared at all: every row on its own
    assert prefix_groups([[1] * 50, [2] * 50, [3] * 50]) == [[0], [1], [2]]


def test_gradient_checkpointing_keeps_the_shared_prefix(tiny_model, tiny_tokenizer):
    """With checkpointing on, the rows still see the shared prefix (transformers would drop a
    checkpointed layer's cache): hidden states and gradients equal the run without it."""
    import copy

    fmt, prompts = _prompts(tiny_tokenizer)
    completions = [[40, 41, 42, fmt.end_of_turn_id], [50, 51], [60, 61, 62, 63, 64, 65]]

    def run(checkpointing: bool):
        model = copy.deepcopy(tiny_model).double()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        pm = attach_lora(model, LearnConfig())
        with torch.no_grad():
            for name, p in pm.named_parameters():
                if f".{STUDENT}." in name:
                    p.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))
        pm.train()
        packed = pack(prompts, completions, tiny_tokenizer.pad_token_id)
        assert len(packed.prefix_ids) > 100
        h = completion_hidden(pm, packed)
        ce = token_cross_entropy(pm.get_output_embeddings()(h), packed.completion_ids)
        (ce * packed.completion_mask).sum().backward()
        return h.detach(), torch.cat([p.grad.flatten() for p in pm.parameters() if p.grad is not None])

    h0, g0 = run(False)
    h1, g1 = run(True)
    assert torch.allclose(h0, h1, atol=1e-10)
    assert g0.abs().max() > 1e-3 and (g0 - g1).abs().max() < 1e-9 * g0.abs().max()


def test_prefix_memo_runs_a_frozen_models_prefix_once(tiny_model, tiny_tokenizer, monkeypatch):
    """A memo (a frozen teacher's) gives exactly the hidden states of running the prefix again,
    and runs each prefix once; it keeps at most MEMO_PREFIXES of them, the oldest leaving first."""
    import learner.batch as batch

    fmt, prompts = _prompts(tiny_tokenizer)
    completions = [[40, 41, 42, fmt.end_of_turn_id], [50, 51], [60, 61, 62, 63, 64, 65]]
    packed = pack(prompts, completions, tiny_tokenizer.pad_token_id)
    assert packed.prefix_ids
    calls = []
    real = batch.prefill
    monkeypatch.setattr(batch, "prefill", lambda m, ids, cache=None: calls.append(len(ids)) or real(m, ids, cache))
    with torch.no_grad():
        fresh = completion_hidden(tiny_model, packed)
        memo: dict = {}
        first = completion_hidden(tiny_model, packed, memo)
        again = completion_hidden(tiny_model, packed, memo)
    assert calls == [len(packed.prefix_ids)] * 2  # fresh, and the memo's first: not the third
    assert torch.equal(fresh, first) and torch.equal(first, again)
    assert list(memo) == [tuple(packed.prefix_ids)]
    # the memo's copy stays batch 1 and unextended whatever the call did with its own
    assert all(layer.keys.shape[0] == 1 and layer.keys.shape[-2] == len(packed.prefix_ids)
               for layer in memo[tuple(packed.prefix_ids)].layers)
    with torch.no_grad():
        for k in range(batch.MEMO_PREFIXES):
            other = pack([[k + 3] + p for p in prompts], completions, tiny_tokenizer.pad_token_id)
            completion_hidden(tiny_model, other, memo)
    assert len(memo) == batch.MEMO_PREFIXES and tuple(packed.prefix_ids) not in memo
