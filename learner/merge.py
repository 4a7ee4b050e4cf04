"""Fold a trained adapter into the parent version's weights (float32) and save the result as a
new candidate version in the model store, the adapter kept beside it in `adapter/`.

The merge always starts from the parent's weights as stored (read again in float32), never from
the training copy, which may be bf16 on a GPU: merging in bf16 drifts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from agent.loading import load_folder
from learner.lora import merge_lora, save_adapter
from memory.models import MANIFEST, ModelStore

# Files of the parent folder the merged model writes itself (everything else — tokenizer,
# chat template — is copied over unchanged, so the candidate serves with identical tokens).
_WRITTEN = {MANIFEST, "config.json", "generation_config.json", "model.safetensors.index.json"}


def merged_model(parent_path: str | Path, adapter: dict[str, torch.Tensor], lora_config):
    """The parent's weights (float32, CPU) with `adapter` folded in."""
    base, _ = load_folder(parent_path, device="cpu", dtype=torch.float32)
    return merge_lora(base, adapter, lora_config)


def save_candidate(
    store: ModelStore,
    parent: str,
    adapter: dict[str, torch.Tensor],
    lora_config,
    *,
    method: str,
    demonstrations: list[int],
    metrics: dict,
    config: dict,
    learn_run_id: int | None = None,
    notes: str | None = None,
) -> str:
    """Merge and write a new version (left unpromoted); returns its name (vNNNN)."""
    info = store.get(parent)
    merged = merged_model(info.path, adapter, lora_config)
    with store.draft(parent=info.version, learn_run_id=learn_run_id, notes=notes) as draft:
        merged.save_pretrained(draft.path)
        for f in info.path.iterdir():
            if f.is_file() and f.suffix != ".safetensors" and f.name not in _WRITTEN:
                shutil.copy2(f, draft.path / f.name)
        save_adapter(draft.path / "adapter", adapter, lora_config)
        draft.manifest.update({
            "method": method,
            "demonstrations": list(demonstrations),
            "metrics": metrics,
            "config": config,
            "adapter": "adapter/",
        })
    return draft.version
