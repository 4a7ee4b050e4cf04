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
from transformers import DynamicCache

from agent.decode import cache_kwarg
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


def _split(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids): the continuation is what tokenising context+continuation
    adds after the context's own tokens (lm-eval's split), so a leading space that merges into
    the first continuation token is scored with it."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    if len(whole) <= len(ctx):  # an empty continuation: score the context's last token
        ctx = whole[:-1]
    if whole[: len(ctx)] != ctx:  # the boundary merged: keep what the context still owns
        n = 0
        while n < min(len(ctx), len(whole) - 1) and ctx[n] == whole[n]:
            n += 1
        ctx = whole[:n]
    ctx = ctx or whole[:1]  # at least one token of context
    return ctx, whole[len(ctx):]


@torch.inference_mode()
def _group_logprobs(model, contexts: list[list[int]], conts: list[list[list[int]]], pad: int) -> list[list[float]]:
    """Log-likelihood of every continuation of several items, each context run once.

    The contexts run as one left-padded batch; their cache rows are then repeated, one per
    choice, and all choices run as one batch laid out [padding][context][choice][padding] with
    positions continuing each context's own, so every row computes what it would alone.
    """
    kw, dev = cache_kwarg(model), model.device
    B, wc = len(contexts), max(len(c) for c in contexts)
    ids = torch.full((B, wc), pad, dtype=torch.long)
    mask = torch.zeros((B, wc), dtype=torch.long)
    pos = torch.zeros((B, wc), dtype=torch.long)
    for r, c in enumerate(contexts):
        ids[r, wc - len(c):] = torch.tensor(c)
        mask[r, wc - len(c):] = 1
        pos[r, wc - len(c):] = torch.arange(len(c))
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                use_cache=True, logits_to_keep=1, **{kw: cache})
    first = F.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
    totals = [[first[r, x[0]].item() for x in xs] for r, xs in enumerate(conts)]
    rows = [(r, x) for r, xs in enumerate(conts) for x in xs]
    wx = max(len(x) for _, x in rows) - 1
    if wx == 0:
        return totals
    cache.batch_select_indices(torch.tensor([r for r, _ in rows], device=dev))
    ids = torch.full((len(rows), wx), pad, dtype=torch.long)
    xmask = torch.zeros((len(rows), wx), dtype=torch.long)
    xpos = torch.zeros((len(rows), wx), dtype=torch.long)
    for k, (r, x) in enumerate(rows):
        ids[k, : len(x) - 1] = torch.tensor(x[:-1])
        xmask[k, : len(x) - 1] = 1
        xpos[k] = len(contexts[r]) + torch.arange(wx)
    full_mask = torch.cat([mask[[r for r, _ in rows]], xmask], dim=1)
    logits = model(input_ids=ids.to(dev), attention_mask=full_mask.to(dev), position_ids=xpos.to(dev),
                   use_cache=True, **{kw: cache}).logits
    k = 0
    for r, xs in enumerate(conts):
        for j, x in enumerate(xs):
            if len(x) > 1:
                logp = F.log_softmax(logits[k, : len(x) - 1].float(), dim=-1)
                totals[r][j] += logp.gather(-1, torch.tensor(x[1:], device=logp.device)[:, None]).sum().item()
            k += 1
    return totals


def continuation_logprobs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Sum of log p(continuation | context) for each (context, continuation) pair.

    Pairs that share a context (the choices of one item) are scored from one pass over it;
    `batch_size` contexts (items) run together, sorted by length so padding stays small.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    groups: dict[tuple, list[int]] = {}
    split = [_split(tokenizer, c, x) for c, x in pairs]
    for i, (ctx, _) in enumerate(split):
        groups.setdefault(tuple(ctx), []).append(i)
    keys = sorted(groups, key=lambda g: (len(g), max(len(split[i][1]) for i in groups[g])))
    out = [0.0] * len(pairs)
    for start in range(0, len(keys), batch_size):
        chunk = keys[start: start + batch_size]
        scores = _group_logprobs(model, [list(g) for g in chunk],
                                 [[split[i][1] for i in groups[g]] for g in chunk], pad)
        for g, vals in zip(chunk, scores, strict=True):
            for i, v in zip(groups[g], vals, strict=True):
                out[i] = v
    return out


def score_items(model, tokenizer, items: list[dict], *, name: str = "multiple_choice",
                batch_size: int = 8, model_name: str | None = None) -> SuiteResult:
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
