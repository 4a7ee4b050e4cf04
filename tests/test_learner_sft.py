"""The SFT baseline shares the SDFT step; its loss is cross-entropy on the completion only."""

import pytest
import torch

from agent.prompt import PromptFormat
from learner.config import LearnConfig
from learner.examples import encode_example, examples_from_demonstrations
from learner.lora import attach_lora
from learner.sft import SFTObjective
from learner.train import micro_step, train

DEMOS = [
    {"id": 1, "skill": "u", "messages": [{"role": "user", "content": "Convert 5 miles to km."}],
     "tool_calls": [{"name": "convert_units", "arguments": {"value": 5, "unit": "km"}}], "content": None},
    {"id": 2, "skill": "u", "messages": [{"role": "user", "content": "What is the capital of France?"}],
     "tool_calls": None, "content": "Paris is the capital of France."},
]


def test_sft_loss_is_completion_only_cross_entropy(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(method="sft")
    enc = [encode_example(e, fmt) for e in examples_from_demonstrations(DEMOS, fmt)]
    pm = attach_lora(tiny_model, cfg)
    got = micro_step(SFTObjective(pm, cfg, set(), tiny_tokenizer.pad_token_id), pm, pm, enc, 2, cfg,
                     tiny_tokenizer.pad_token_id)
    want = []
    for e in enc:  # the library's own causal-LM loss on one unpadded sequence, prompt labelled -100
        ids = torch.tensor([e.prompt_ids + e.completion_ids])
        labels = ids.clone()
        labels[0, : len(e.prompt_ids)] = -100
        with torch.no_grad():
            want.append(pm(input_ids=ids, labels=labels).loss.item())
    assert got["loss"] == pytest.approx(sum(want) / 2, abs=1e-5)
    assert got["trained_tokens"] == sum(len(e.completion_ids) for e in enc)


def test_sft_lowers_the_loss(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(method="sft", max_steps=6, batch_size=2, lr=1e-2, warmup_ratio=0.0)
    result = train(tiny_model, tiny_tokenizer, examples_from_demonstrations(DEMOS, fmt), cfg, progress=False)
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.5
    assert "cross_entropy" in result.history[0] and result.summary["steps"] == 6
