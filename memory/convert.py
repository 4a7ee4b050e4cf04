"""GGUF → Hugging Face safetensors folder, done once per base model at pull time.

transformers dequantises the GGUF tensors to float32 (needs the `gguf` package); the result is
a plain folder that later loads in about two seconds with no conversion.
"""

from __future__ import annotations

import os
from pathlib import Path


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
