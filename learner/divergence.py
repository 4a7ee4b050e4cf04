"""Pure tensor functions for the losses: per-token divergences, the mask → weights rule, and
the chunked head + loss + backward that keeps full-vocabulary logits for one chunk at a time.

Conventions: logits are [..., V]; per-token values come back as [...]; computed in float32 at
least (bf16/fp16 logits are upcast; float64 stays float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     kind: str = "forward", jsd_alpha: float = 0.5) -> torch.Tensor:
    """Per-token divergence between teacher and student next-token distributions, over the full
    vocabulary (the analytic form, not a sampled-token estimate).

    forward: KL(teacher ‖ student) = Σ p_t (log p_t − log p_s) — the paper's published results,
             `kl_div(student_logp, teacher_logp, log_target=True)`.
    reverse: KL(student ‖ teacher).
    jsd:     generalised Jensen–Shannon with weight α (the GKD/TRL form):
             m = (1−α)·p_s + α·p_t,  JSD_α = α·KL(teacher ‖ m) + (1−α)·KL(student ‖ m);
             α = 0 is forward KL and α = 1 reverse KL, by definition.
    """
    s = F.log_softmax(upcast(student_logits), dim=-1)
    t = F.log_softmax(upcast(teacher_logits), dim=-1)
    if kind == "jsd" and jsd_alpha == 0.0:
        kind = "forward"
    elif kind == "jsd" and jsd_alpha == 1.0:
        kind = "reverse"
    if kind == "forward":
        return F.kl_div(s, t, log_target=True, reduction="none").sum(-1)
    if kind == "reverse":
        return F.kl_div(t, s, log_target=True, reduction="none").sum(-1)
    if kind == "jsd":
        a = jsd_alpha
        m = torch.logsumexp(torch.stack([s + math.log(1 - a), t + math.log(a)]), dim=0)
        kl_t = F.kl_div(m, t, log_target=True, reduction="none").sum(-1)
        kl_s = F.kl_div(m, s, log_target=True, reduction="none").sum(-1)
        return a * kl_t + (1 - a) * kl_s
    raise ValueError(f"unknown divergence {kind!r} (forward, reverse or jsd)")


def upcast(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token −log p(target): SFT's loss."""
    flat = F.cross_entropy(upcast(logits).reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return flat.view(targets.shape)


def sequence_weights(mask: torch.Tensor, n_sequences: int, opening: float = 1.0) -> torch.Tensor:
    """Weights that turn Σ weight·value into "mean over a sequence's trained tokens, then mean
    over `n_sequences` sequences" (a sequence with no trained token counts as 0). A floating
    mask keeps its dtype (float64 for a float64 model), a boolean one becomes float32.
    `opening`: a sequence's first trained token counts as that many tokens in its mean (the
    others fewer, the sequence's total weight unchanged)."""
    mask = mask if mask.is_floating_point() else mask.float()
    if opening != 1.0:
        first = (mask > 0) & (mask.cumsum(-1) == mask)  # the first nonzero position of each row
        mask = torch.where(first, mask * opening, mask)
    return mask / mask.sum(-1, keepdim=True).clamp(min=1.0) / n_sequences


def chunked_backward(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    chunk_loss: Callable[[torch.Tensor, slice], torch.Tensor],
    chunk_size: int,
    backward: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Σ over chunks of `chunk_loss(head(hidden[:, chunk]), chunk)`, with its gradient taken.

    Each chunk's logits are made, used and backpropagated to a detached copy of `hidden`, then
    freed, so at most one chunk of full-vocabulary logits lives at a time (the TRL/Liger
    "chunked loss" trick without recomputation). The accumulated gradient is then sent through
    the model in one pass: `backward(hidden, grad)` (default `hidden.backward(grad)`; pass
    `lambda t, g: accelerator.backward(t, gradient=g)` under accelerate).
    Returns the loss value (detached).
    """
    h = hidden.detach().requires_grad_(hidden.requires_grad)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[1], chunk_size):
        sl = slice(start, start + chunk_size)
        loss = chunk_loss(head(h[:, sl]), sl)
        if h.requires_grad:
            loss.backward()
        total += loss.detach()
    if h.requires_grad and h.grad is not None:
        (backward or (lambda t, g: t.backward(g)))(hidden, h.grad)
    return total
