"""Merging the adapter into the parent's weights, and the candidate version it becomes."""

import copy
import json

import torch
from peft import PeftModel

from agent.loading import load, load_folder
from learner.config import LearnConfig
from learner.lora import STUDENT, adapter_state, attach_lora, lora_config, merge_lora
from learner.merge import save_candidate
from memory.models import ModelStore


def _random_adapter(model, seed=0):
    pm = attach_lora(model, LearnConfig())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if f".{STUDENT}." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return pm


def test_merged_logits_equal_base_plus_adapter(tiny_model):
    base = copy.deepcopy(tiny_model)
    pm = _random_adapter(tiny_model)
    ids = torch.randint(3, 400, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = pm(input_ids=ids).logits
        with pm.disable_adapter():
            assert (pm(input_ids=ids).logits - want).abs().max() > 1e-2  # the adapter matters
        merged = merge_lora(base, adapter_state(pm), lora_config(LearnConfig()))
        got = merged(input_ids=ids).logits
    assert not isinstance(merged, PeftModel)
    assert (got - want).abs().max() < 1e-5


def test_candidate_version_in_the_store(tiny_home):
    store = ModelStore(tiny_home, quiet=True)
    parent = store.get("tiny")
    model, tok = load_folder(parent.path)
    pm = _random_adapter(model)
    ids = torch.randint(3, 400, (2, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = pm(input_ids=ids).logits

    version = save_candidate(store, "tiny", adapter_state(pm), lora_config(LearnConfig()),
                             method="sdft", demonstrations=[3, 1], metrics={"loss_last": 0.1},
                             config=LearnConfig().to_dict(), learn_run_id=None)
    assert version == "v0001"
    assert store.champion_name() == "tiny"  # a candidate is never promoted here
    info = store.get(version)
    assert info.parent == "tiny" and info.kind == "learned"
    store.verify(version)
    manifest = store.manifest(version)
    assert manifest["method"] == "sdft" and manifest["demonstrations"] == [3, 1]
    assert manifest["metrics"] == {"loss_last": 0.1} and manifest["config"]["teacher"] == "ema"
    assert "adapter/adapter_model.safetensors" in manifest["files"]
    assert (info.path / "tokenizer.json").is_file()
    assert json.loads((info.path / "adapter" / "adapter_config.json").read_text())["r"] == 16

    merged, tok2 = load(version, home=tiny_home)
    assert tok2.chat_template == tok.chat_template
    with torch.no_grad():
        assert (merged(input_ids=ids).logits - want).abs().max() < 1e-5
        # the adapter kept beside it loads onto the parent and gives the same model
        again = PeftModel.from_pretrained(load_folder(parent.path)[0], str(info.path / "adapter"))
        assert (again(input_ids=ids).logits - want).abs().max() < 1e-5
