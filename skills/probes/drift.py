"""Drift: how far a model's next-token distributions moved from its base model's.

On a fixed set of conversations (a user turn and a reference assistant reply), teacher-forced,
at every token of the reply: KL(base ‖ model) = Σ p_base (log p_base − log p_model), averaged
over the reply's tokens (one score per conversation, nats per token). Learning one skill should
move little else, so a jump here flags collateral change that accuracy suites may not sample.
Continuous and deterministic, it also measures a randomly initialised test model.

The base's log-probabilities are computed once (`reference`) and reused for every model scored.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from agent.prompt import PromptFormat
from skills.evaluate import SuiteResult

METRIC = "mean KL to base (nats/token)"


def is_drift_item(row: dict) -> bool:
    return "user" in row and "assistant" in row


def encode_pairs(fmt: PromptFormat, rows: list[dict]) -> list[tuple[list[int], int]]:
    """(prompt + reply ids, number of prompt tokens) per conversation, through the chat template
    the model serves with; the reply's end-of-turn token is left out."""
    out = []
    for row in rows:
        messages = [{"role": "user", "content": row["user"]}]
        prompt = fmt.encode(messages)
        reply = fmt.completion_ids({"role": "assistant", "content": row["assistant"]}, messages)
        if reply and reply[-1] == fmt.end_of_turn_id:
            reply = reply[:-1]
        out.append((prompt + reply, len(prompt)))
    return out


@torch.inference_mode()
def reply_logprobs(model, encoded: list[tuple[list[int], int]]) -> list[torch.Tensor]:
    """[reply tokens, vocab] log-probabilities per conversation (float32, on the CPU)."""
    out = []
    for ids, n_prompt in encoded:
        x = torch.tensor([ids], device=model.device)
        logits = model(input_ids=x).logits[0, n_prompt - 1: len(ids) - 1].float()
        out.append(F.log_softmax(logits, dim=-1).cpu())
    return out


class DriftProbe:
    """A fixed conversation set; `reference(base)` once, then `run(model)` per model."""

    def __init__(self, rows: list[dict], name: str = "drift"):
        if not rows:
            raise ValueError(f"{name}: a drift set needs at least one conversation")
        self.rows, self.name = rows, name
        self.ref: list[torch.Tensor] | None = None
        self.base: str | None = None

    def reference(self, base_model, tokenizer, base_name: str | None = None) -> None:
        self.ref = reply_logprobs(base_model, encode_pairs(PromptFormat(tokenizer), self.rows))
        self.base = base_name

    def run(self, model, tokenizer, *, model_name: str | None = None, **_) -> SuiteResult:
        if self.ref is None:
            raise RuntimeError("DriftProbe.reference(base_model, tokenizer) must be called first")
        t0 = time.perf_counter()
        enc = encode_pairs(PromptFormat(tokenizer), self.rows)
        logps = reply_logprobs(model, enc)
        cases = []
        for i, (row, ref, lp) in enumerate(zip(self.rows, self.ref, logps, strict=True)):
            if ref.shape != lp.shape:
                raise ValueError(f"{self.name}: model and base disagree on the shape of item {i} "
                                 f"({tuple(lp.shape)} vs {tuple(ref.shape)}): not the same tokenizer")
            kl = (ref.exp() * (ref - lp)).sum(-1).clamp_min(0).mean().item()
            cases.append({"id": str(row.get("id", i)), "score": kl, "tokens": int(ref.shape[0])})
        return SuiteResult(name=self.name, kind="drift", cases=cases, metric=METRIC,
                           higher_is_better=False, model=model_name, wall_s=time.perf_counter() - t0,
                           notes=[f"base: {self.base}"] if self.base else [])
