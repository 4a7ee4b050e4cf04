"""Multiple-choice probes scored by length-normalised log-likelihood, as lm-evaluation-harness does.

Each item becomes a context and several continuations; the model's choice is the continuation
with the highest log-likelihood per character (lm-eval's `acc_norm`), so a long right answer is
not beaten by a short wrong one merely for being short. No generation, no prompt template: the
figure is deterministic for any model, a random one included, which makes it a fine regression
signal.

Item shapes read (one JSON object a line), detected from the keys:
- ARC:   question, choices.text[], choices.label[], answerKey
- PIQA:  goal, sol1, sol2, label
- COPA:  premise, choice1, choice2, question (cause | effect), label
- plain: context, choices[] (continuations as written), gold (index)
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from skills.evaluate import SuiteResult


def arc_item(d: dict, i: int) -> dict:
    labels = list(d["choices"]["label"])
    return {"id": str(d.get("id", i)), "context": f"Question: {d['question']}\nAnswer:",
            "choices": [" " + t for t in d["choices"]["text"]], "gold": labels.index(d["answerKey"])}


def piqa_item(d: dict, i: int) -> dict:
    return {"id": str(d.get("id", i)), "context": f"Question: {d['goal']}\nAnswer:",
            "choices": [" " + d["sol1"], " " + d["sol2"]], "gold": int(d["label"])}


def copa_item(d: dict, i: int) -> dict:
    connector = {"cause": " because", "effect": " therefore"}[d["question"]]
    premise = d["premise"].strip()
    premise = premise[:-1] if premise.endswith(".") else premise

    def lower_first(s: str) -> str:
        return " " + s[:1].lower() + s[1:]

    return {"id": str(d.get("idx", i)), "context": premise + connector,
            "choices": [lower_first(d["choice1"]), lower_first(d["choice2"])], "gold": int(d["label"])}


def plain_item(d: dict, i: int) -> dict:
    return {"id": str(d.get("id", i)), "context": d["context"], "choices": list(d["choices"]),
            "gold": int(d["gold"])}


SHAPES = {
    "arc": (("question", "choices", "answerKey"), arc_item),
    "piqa": (("goal", "sol1", "sol2", "label"), piqa_item),
    "copa": (("premise", "choice1", "choice2", "question", "label"), copa_item),
    "plain": (("context", "choices", "gold"), plain_item),
}


def shape_of(row: dict) -> str | None:
    """Which multiple-choice shape a row has, or None."""
    for name, (keys, _) in SHAPES.items():
        if all(k in row for k in keys):
            return name
    return None


def to_items(rows: list[dict], where: str = "probe file") -> list[dict]:
    """Rows of one shape → {"id", "context", "choices", "gold"} items."""
    if not rows:
        raise ValueError(f"{where}: no items")
    shape = shape_of(rows[0])
    if shape is None:
        raise ValueError(f"{where}: row 1 is not a multiple-choice item (keys: {', '.join(rows[0])})")
    items = []
    for i, row in enumerate(rows):
        try:
            item = SHAPES[shape][1](row, i)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{where}: row {i + 1} is not a valid {shape} item ({exc!r})") from None
        if not 0 <= item["gold"] < len(item["choices"]) or len(item["choices"]) < 2:
            raise ValueError(f"{where}: row {i + 1}: gold {item['gold']} is not one of its {len(item['choices'])} choices")
        items.append(item)
    return items


@torch.inference_mode()
def continuation_logprobs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16) -> list[float]:
    """Sum of log p(continuation | context) for each (context, continuation) pair.

    The continuation's tokens are those of context+continuation after the context's own tokens
    (lm-eval's split), so a space that merges into the first continuation token is scored.
    """
    encoded = []
    for context, continuation in pairs:
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        n_ctx = len(ctx) if whole[: len(ctx)] == ctx else len(tokenizer(context.rstrip(), add_special_tokens=False)["input_ids"])
        n_ctx = max(1, min(n_ctx, len(whole) - 1))  # at least one token of each
        encoded.append((whole, n_ctx))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = [0.0] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(encoded[i][0]))
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            whole = encoded[i][0]
            ids[row, : len(whole)] = torch.tensor(whole)
            mask[row, : len(whole)] = 1
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        for row, i in enumerate(idx):
            whole, n_ctx = encoded[i]
            target = torch.tensor(whole[n_ctx:], device=logits.device)
            logp = F.log_softmax(logits[row, n_ctx - 1: len(whole) - 1].float(), dim=-1)
            out[i] = logp.gather(-1, target[:, None]).sum().item()
    return out


def score_items(model, tokenizer, items: list[dict], *, name: str = "multiple_choice",
                batch_size: int = 16, model_name: str | None = None) -> SuiteResult:
    """Pick, for each item, the choice with the highest log-likelihood per character."""
    t0 = time.perf_counter()
    pairs = [(it["context"], ch) for it in items for ch in it["choices"]]
    lls = continuation_logprobs(model, tokenizer, pairs, batch_size=batch_size)
    cases, k = [], 0
    for it in items:
        n = len(it["choices"])
        raw = lls[k: k + n]
        k += n
        norm = [ll / max(1, len(ch)) for ll, ch in zip(raw, it["choices"], strict=True)]
        pick = max(range(n), key=norm.__getitem__)
        cases.append({"id": it["id"], "score": 1.0 if pick == it["gold"] else 0.0,
                      "correct": pick == it["gold"], "pick": pick, "gold": it["gold"],
                      "request": it["context"], "answer": it["choices"][pick].strip(),
                      "loglik_per_char": [round(x, 5) for x in norm]})
    return SuiteResult(name=name, kind="multiple_choice", cases=cases, model=model_name,
                       wall_s=time.perf_counter() - t0)
