"""Checking a Hugging Face model folder before the store registers it (`models add`).

A folder is registered only if the agent could serve it: its config loads, its tokenizer loads and
has a chat template (every prompt is built with it), every safetensors file is readable, no
weight the architecture needs is missing, and one forward pass over a few tokens of a chat prompt
gives finite logits over the whole vocabulary. Each failure is one sentence naming the file and
the fix; nothing about the folder is changed.
"""

from __future__ import annotations

from pathlib import Path

SAVE_HINT = "save the folder with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)"


class ModelFolderError(RuntimeError):
    """The folder cannot be served; the message names the problem and the fix."""


def check_model_folder(folder: str | Path, *, tokens: int = 8) -> dict:
    """Load what `folder` holds and run one forward pass; returns a few facts about it
    (architecture, parameter count, vocabulary size) or raises ModelFolderError."""
    folder = Path(folder)
    config = _config(folder)
    tokenizer = _tokenizer(folder)
    for f in sorted(folder.glob("*.safetensors")):
        _readable(f)
    model = _weights(folder)
    ids = _prompt_ids(tokenizer, tokens)
    embeddings = model.get_input_embeddings().weight.shape[0]
    if int(ids.max()) >= embeddings:
        raise ModelFolderError(
            f"{folder}: the tokenizer produces token id {int(ids.max())} but the model has only "
            f"{embeddings} embeddings; the tokenizer belongs to another model"
        )
    logits = _forward(folder, model, ids)
    return {"architecture": (config.architectures or [type(model).__name__])[0],
            "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": int(logits.shape[-1])}


def _config(folder: Path):
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise ModelFolderError(f"{folder} has no config.json; {SAVE_HINT}")
    try:
        return AutoConfig.from_pretrained(folder)
    except Exception as exc:
        raise ModelFolderError(f"{folder}/config.json cannot be read ({_short(exc)}); {SAVE_HINT}") from None


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:
        raise ModelFolderError(f"{folder} has no usable tokenizer ({_short(exc)}); {SAVE_HINT}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise ModelFolderError(
            f"{folder}: the tokenizer has no chat template, and the agent builds every prompt with it; "
            "set tokenizer.chat_template (e.g. copy it from the instruct model) and save it again"
        )
    return tokenizer


def _readable(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                f.get_slice(key)  # the header and every tensor's extent are consistent
    except Exception as exc:
        raise ModelFolderError(f"{path} is not a readable safetensors file ({_short(exc)}); {SAVE_HINT}") from None


def _weights(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    from memory.progress import bars_off_unless_terminal

    bars_off_unless_terminal()
    try:
        model, info = AutoModelForCausalLM.from_pretrained(  # type: ignore[misc]  # a tuple with output_loading_info
            folder, dtype=torch.float32, output_loading_info=True)
    except Exception as exc:
        raise ModelFolderError(f"{folder}: the weights do not load as a causal language model ({_short(exc)})") from None
    missing: list[str] = sorted(info.get("missing_keys") or [])  # type: ignore[has-type]
    if missing:
        raise ModelFolderError(
            f"{folder}: {len(missing)} weight(s) the architecture needs are missing (e.g. {missing[0]}); "
            f"the safetensors files belong to another model or are incomplete; {SAVE_HINT}"
        )
    return model.eval()  # type: ignore[has-type]


def _prompt_ids(tokenizer, tokens: int):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hello, what can you do?"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :tokens]
    if ids.numel() == 0:
        raise ModelFolderError("the tokenizer turned a chat prompt into no tokens; it is broken")
    return ids


def _forward(folder: Path, model, ids):
    import torch

    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    except Exception as exc:
        raise ModelFolderError(f"{folder}: a forward pass of {ids.shape[1]} tokens failed ({_short(exc)})") from None
    if not torch.isfinite(logits).all():
        raise ModelFolderError(f"{folder}: a forward pass gives NaN or infinite logits; the weights are broken")
    return logits


def _short(exc: BaseException, width: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= width else text[: width - 1] + "…"
