"""LoRA adapters for the student and its teacher, on ONE copy of the base weights.

- "student": the trainable adapter.
- "teacher": for the EMA teacher, a second adapter that starts as a copy of the student and is
  updated φ ← α·θ + (1−α)·φ after every optimizer step (frozen otherwise).
- the base teacher is the same model with adapters disabled; the live teacher is the student.

`teacher_context` switches the forward pass between them; `merge_lora` folds an adapter into
base weights in float32.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    get_peft_model_state_dict,
    set_peft_model_state_dict,
)
from safetensors.torch import save_file

STUDENT, TEACHER = "student", "teacher"


def lora_config(cfg) -> LoraConfig:
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets,
        bias="none",
        task_type="CAUSAL_LM",
    )


def attach_lora(model, cfg, teacher_adapter: bool | None = None) -> PeftModel:
    """Wrap `model` with the student adapter (and the EMA teacher adapter when the run needs
    one). The student is active and the only trainable part."""
    if teacher_adapter is None:
        teacher_adapter = cfg.method == "sdft" and cfg.teacher == "ema"
    config = lora_config(cfg)
    peft_model = _wrap(model, config)
    if teacher_adapter:
        peft_model.add_adapter(TEACHER, lora_config(cfg))
        with torch.no_grad():
            for t, s in adapter_pairs(peft_model):
                t.copy_(s)
    peft_model.set_adapter(STUDENT)
    for name, p in peft_model.named_parameters():
        p.requires_grad_(f".{STUDENT}." in name)
    return peft_model


def _wrap(model, config: LoraConfig) -> PeftModel:
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated property
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config, adapter_name=STUDENT)


def adapter_pairs(peft_model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(teacher parameter, student parameter) for every LoRA matrix."""
    params = dict(peft_model.named_parameters())
    pairs = []
    for name, p in params.items():
        if f".{TEACHER}." in name:
            pairs.append((p, params[name.replace(f".{TEACHER}.", f".{STUDENT}.")]))
    return pairs


@torch.no_grad()
def ema_update(peft_model, alpha: float, pairs=None) -> None:
    """φ ← α·θ + (1−α)·φ for every teacher matrix φ and its student matrix θ."""
    for t, s in pairs if pairs is not None else adapter_pairs(peft_model):
        t.lerp_(s.to(t.dtype), alpha)


@contextlib.contextmanager
def teacher_context(peft_model, kind: str):
    """Run the block's forward passes as the teacher: `ema` (the teacher adapter), `base`
    (adapters disabled) or `live` (the student itself). The student is active again after."""
    if kind == "live":
        yield
    elif kind == "base":
        with peft_model.disable_adapter():
            yield
    elif kind == "ema":
        peft_model.set_adapter(TEACHER, inference_mode=True)  # keeps every adapter frozen
        try:
            yield
        finally:
            peft_model.set_adapter(STUDENT)
            for _, p in adapter_pairs(peft_model):  # set_adapter re-enables grads; be explicit
                p.requires_grad_(True)
    else:
        raise ValueError(f"unknown teacher {kind!r} (ema, base or live)")


@contextlib.contextmanager
def merged_adapter(peft_model, name: str = STUDENT):
    """Run the block's forward passes with adapter `name` folded into the base weights and the
    LoRA branches off: the same function, at the cost of plain linear layers. Token-by-token
    sampling pays PEFT's extra small matmuls per linear layer on every step (about a third of a
    135M model's decode time on CPU); one merge per rollout batch does not.

    The base weights are restored bit for bit afterwards (from a copy held for the block, not by
    subtracting, which would leave rounding in the frozen weights), also on error."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer) and name in m.lora_A]
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for m in layers:
                w = m.get_base_layer().weight
                saved.append((w, w.detach().clone()))
                w.add_(m.get_delta_weight(name).to(w.dtype))
        with peft_model.disable_adapter():
            yield
    finally:
        with torch.no_grad():
            for w, original in saved:
                w.copy_(original)


def adapter_state(peft_model, name: str = STUDENT) -> dict[str, torch.Tensor]:
    """The adapter's weights under PEFT's saved names (adapter name removed), on CPU."""
    state = get_peft_model_state_dict(peft_model, adapter_name=name)
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def save_adapter(folder: str | Path, state: dict[str, torch.Tensor], config: LoraConfig) -> None:
    """A folder `PeftModel.from_pretrained(base, folder)` loads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    d = config.to_dict()
    d = {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}
    (folder / "adapter_config.json").write_text(json.dumps(d, indent=2, default=str))


@torch.no_grad()
def merge_lora(base_model, state: dict[str, torch.Tensor], config: LoraConfig):
    """The base model with the adapter folded into its weights, in float32 (merging in bf16
    drifts). `base_model` is consumed."""
    base_model = base_model.float()
    peft_model = _wrap(base_model, config)
    result = set_peft_model_state_dict(peft_model, state, adapter_name=STUDENT)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"adapter does not fit the model: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    return peft_model.merge_and_unload()
