"""Drift against the champion: how far the candidate's next-token distributions moved from the
champion's, measured on the champion's own greedy answers to everyday prompts.

The base-drift probe (skills.probes.drift) scores fixed reference replies against the base; after
a few promotions every candidate has drifted from the base, and a reply nobody generated says
little about what the model now does. Here the text is what the champion actually says, and the
question is whether the candidate would still say it:

    KL(champion ‖ candidate) per answer token, mean over an answer, mean over answers.

The champion's distributions are kept as its top-k log-probabilities per position plus the mass
left over as one bucket, so they can be cached with the champion's version (a few MB instead of
the full vocabulary) and a night need not load the champion at all. The KL between those coarsened
distributions is a lower bound on the full-vocabulary KL (coarsening never increases a
divergence); it is exactly zero for an identical model, because the same weights on the same
tokens give the same numbers.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from agent.prompt import PromptFormat
from skills.evaluate import SuiteResult

KIND = "drift_champion"
METRIC = "mean KL to the champion on its own answers (nats/token)"
TOP_K = 32


@torch.inference_mode()
def _logprobs(model, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """[len(answer), vocab] log-probabilities of the positions that predict `answer`."""
    x = torch.tensor([prompt + answer], device=model.device)
    logits = model(input_ids=x).logits[0, len(prompt) - 1: len(prompt) + len(answer) - 1].float()
    return F.log_softmax(logits, dim=-1).cpu()


def coarse_kl(top_idx: torch.Tensor, top_logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Per-position KL(p ‖ q) between p given as its top-k (indices, log-probs) plus one tail
    bucket and q over the full vocabulary, both coarsened onto those k+1 outcomes."""
    p = top_logp.exp()
    p_tail = (1.0 - p.sum(-1)).clamp_min(0.0)
    lq = logq.gather(-1, top_idx)
    q_tail = (1.0 - lq.exp().sum(-1)).clamp_min(1e-12)
    head = (p * (top_logp - lq)).sum(-1)
    tail = torch.where(p_tail > 0, p_tail * (torch.log(p_tail.clamp_min(1e-12)) - torch.log(q_tail)),
                       torch.zeros_like(p_tail))
    return (head + tail).clamp_min(0.0)


class ChampionDriftProbe:
    """Conversations (lists of messages); `reference(champion)` once, `run(candidate, ref)` after."""

    kind = KIND

    def __init__(self, name: str, conversations: list[list[dict]], *, max_new_tokens: int = 96,
                 top_k: int = TOP_K):
        if not conversations:
            raise ValueError(f"{name}: needs at least one conversation")
        self.name, self.conversations = name, conversations
        self.max_new_tokens, self.top_k = max_new_tokens, top_k

    def items_key(self) -> list:
        return [self.max_new_tokens, self.top_k, self.conversations]

    def reference(self, model, tokenizer, *, batch_size: int = 8, generations=None) -> dict:
        """The champion's greedy answers and its top-k distributions along them."""
        from skills.probes.generated import Generations

        fmt = PromptFormat(tokenizer)
        gen = generations if generations is not None and generations.model is model else Generations(model, fmt, batch_size)
        prompts = [fmt.encode(c) for c in self.conversations]
        answers = gen.ids(prompts, self.max_new_tokens)
        rows = []
        for prompt, ans in zip(prompts, answers, strict=True):
            ans = list(ans) + ([fmt.end_of_turn_id] if len(ans) < self.max_new_tokens else [])
            if not ans:
                rows.append({"prompt": prompt, "answer": [], "idx": None, "logp": None})
                continue
            lp = _logprobs(model, prompt, ans)
            top = lp.topk(min(self.top_k, lp.shape[-1]), dim=-1)
            rows.append({"prompt": prompt, "answer": ans, "idx": top.indices.to(torch.int32), "logp": top.values})
        return {"rows": rows, "top_k": self.top_k}

    def run(self, model, tokenizer, *, reference: dict | None = None, model_name: str | None = None,
            **_) -> SuiteResult:
        if reference is None:
            raise RuntimeError(f"{self.name}: needs the champion's reference (ChampionDriftProbe.reference)")
        t0 = time.perf_counter()
        cases = []
        for i, row in enumerate(reference["rows"]):
            if not row["answer"]:
                kl, n = 0.0, 0
            else:
                lq = _logprobs(model, row["prompt"], row["answer"])
                if lq.shape[0] != row["idx"].shape[0]:
                    raise ValueError(f"{self.name}: item {i} has another length under this model: not the same tokenizer")
                per = coarse_kl(row["idx"].long(), row["logp"], lq)
                kl, n = per.mean().item(), int(per.shape[0])
            cases.append({"id": f"c{i:02d}", "score": kl, "tokens": n,
                          "request": self.conversations[i][-1]["content"]})
        return SuiteResult(name=self.name, kind=KIND, cases=cases, metric=METRIC, higher_is_better=False,
                           model=model_name, wall_s=time.perf_counter() - t0)

    def zero(self, model_name: str | None = None) -> SuiteResult:
        """The champion against itself: zero on every case, by definition."""
        cases = [{"id": f"c{i:02d}", "score": 0.0, "tokens": 0, "request": c[-1]["content"]}
                 for i, c in enumerate(self.conversations)]
        return SuiteResult(name=self.name, kind=KIND, cases=cases, metric=METRIC, higher_is_better=False,
                           model=model_name)
