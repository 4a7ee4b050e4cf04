"""Loading a model-store version for inference or training: the one place that picks device,
dtype and thread count.

float32 on CPU (this class of CPU has AVX2 but no fast bf16), bf16 on a GPU. Never touches a hub.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402

from memory.models import ModelStore  # noqa: E402


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pick_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def configure_threads() -> None:
    """One torch thread per available core, or $SDFT_AGENT_THREADS (several jobs sharing a small
    machine are far faster with fewer threads each than with OpenMP threads fighting)."""
    want = int(os.environ.get("SDFT_AGENT_THREADS") or available_cores())
    if torch.get_num_threads() != want:
        torch.set_num_threads(want)


def load_folder(path: str | Path, *, device: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) from a Hugging Face folder on disk, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from memory.progress import bars_off_unless_terminal

    configure_threads()
    bars_off_unless_terminal()
    dev = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=dtype or default_dtype(dev), local_files_only=True
    ).to(dev)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load(
    version: str | None = None,
    *,
    home: str | Path | None = None,
    store: ModelStore | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    verify: bool = True,
):
    """(model, tokenizer) for a model-store version (the champion when `version` is None).

    With `verify`, every file's sha256 is checked against the manifest first (about 0.5 s for
    the default model), so a corrupted file fails here with a clear error, not as garbage text.
    """
    store = store or ModelStore(home, quiet=True)
    info = store.resolve(version)
    if verify:
        store.verify(info.version)
    return load_folder(info.path, device=device, dtype=dtype)
