"""Batched decoding with a KV cache: the ONE decoding path for serving, evaluation, the gate and
training rollouts, with schema-constrained tool calls (agent.constrain).

Public API (what the HTTP server, the chat model, the evaluation harness and the gate call):

    from agent.decode import Request, complete

    done = complete(model, fmt, [
        Request(prompt=fmt.encode(messages, tools), tools=tools,   # OpenAI tool schemas, either
                tool_choice="auto",           # "none" | "auto" | "required" |
                                              # {"type": "function", "function": {"name": ...}}
                parallel_tool_calls=True,
                max_new_tokens=256, temperature=0.0, top_p=1.0, seed=None,
                stop=["\\n\\n"],              # stop strings: the row ends, the text is cut before
                constrain=True,               # False: the model's own tokens, no grammar
                call_threshold=None,          # the call decision; None: the default (off)
                messages=conversation),       # what `prompt` encodes: grounded calls (on by default)
        ...], batch_size=8, on_token=None)
    done[i].text, done[i].ids, done[i].finish_reason   # "stop" | "length"
    fmt.parse(done[i].text, tools)                     # content, calls, invalid calls

- One `Completion` per request, in order; requests of any mix of settings share a batch.
- Greedy at temperature 0; else softmax(logits / T) with nucleus top_p, each request drawing
  from its own `torch.Generator` seeded with `seed` (the global RNG when seed is None). A seeded
  request gives the same tokens alone or in any batch.
- Constrained (the default where tools are given, or tool_choice is "none"): free text, or
  `<tool_call>` blocks whose name is an offered tool and whose arguments validate against its
  schema; "required" / a named tool allow only calls (of that tool), "none" forbids the opening.
  Unconstrained, "required" / named force the call's opening instead (what the model could not
  refuse before), and "none" is left to the caller (e.g. hide the tools from the prompt).
- The call decision (`call_threshold`, off by default: `default_call_threshold()`): a greedy
  "auto" request with tools opens a call only when P(reply opens `<tool_call>`) ≥ the threshold,
  scored exactly first; below it the reply is decoded under the "none" grammar.
  `Completion.call_p` holds the score.
- Grounded calls (`default_grounding()`, on): where the request carries its conversation
  (`messages`) and the model chose to call (tool_choice "auto"), a reply whose calls take no value
  from the conversation's user and tool turns (agent.grounding) is replaced by the reply to the same
  conversation without the tools; `Completion.withheld` keeps the replaced text. Not for streamed
  requests (`on_token`): their tokens have been sent.
- `on_token(i, token_id)` is called for every new token of request i (streaming); returning True
  ends that request (a client that went away).
- `finish_reason`: "stop" when the model ended its turn, a stop string appeared or the grammar
  allowed nothing more; "length" at max_new_tokens.

`decode()` underneath is the loop itself, on token ids (the learner's rollouts call it). A
hand-written loop rather than `generate()`, for three reasons:
- the distribution sampled is exactly softmax(logits / T) with nucleus `top_p` (no generation
  config defaults such as top_k = 50 or a repetition penalty slipping in);
- a shared prompt prefix (the system message with every tool schema: ~300 of a skill prompt's
  ~360 tokens) is prefilled once, batch 1, and its cache repeated for each row;
- a row that has finished leaves the batch and its cache, so no compute is spent past its end
  of turn.

Layout: [shared prefix][left padding][own tokens + forced opening]; padding is masked out and
position ids count real tokens, so every row computes what it would alone.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

MIN_SHARED_PREFIX = 32  # below this, sharing saves less than the extra pass costs


def cache_kwarg(model) -> str:
    """transformers 5 names the cache argument `cache` in some releases, `past_key_values` in
    others; ask the model (through DDP and PEFT wrappers)."""
    model = getattr(model, "module", model)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def common_prefix(prompts: list[list[int]]) -> int:
    """Length of the longest prefix every prompt shares, leaving each at least one own token."""
    if not prompts:
        return 0
    return max(min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1), 0)


def shared_prefix_len(prompts: list[list[int]], minimum: int = MIN_SHARED_PREFIX) -> int:
    """`common_prefix`, but 0 when shorter than `minimum` or for a single prompt (nothing to
    share it with)."""
    if len(prompts) < 2:
        return 0
    k = common_prefix(prompts)
    return k if k >= minimum else 0


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def prefill(model, ids: list[int], cache: DynamicCache | None = None) -> DynamicCache:
    """The cache of one sequence (batch 1)."""
    inner = getattr(model, "module", model)
    cache = cache if cache is not None else DynamicCache(config=inner.config)
    device = inner.device
    model(input_ids=torch.tensor([ids], device=device),
          position_ids=torch.arange(len(ids), device=device).unsqueeze(0),
          use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cache})
    return cache


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, V] logits → [B] token ids (greedy when temperature is 0)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p  # smallest set whose mass reaches top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class Sampler:
    """One row's sampling: greedy at temperature 0, else softmax(logits / T) with nucleus top_p
    drawn from `generator` (the global RNG when None)."""

    temperature: float = 0.0
    top_p: float = 1.0
    generator: torch.Generator | None = None


def _layout(contexts: list[list[int]], K: int, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows after a shared K-token prefix, left-padded: (ids [B, L] of the own tokens, attention
    mask [B, K + L], position ids [B, L] counting real tokens only)."""
    L = max(len(c) for c in contexts) - K
    ids = torch.full((len(contexts), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(contexts), K + L), dtype=torch.long)
    mask[:, :K] = 1
    for j, c in enumerate(contexts):
        ids[j, L - len(c) + K:] = torch.tensor(c[K:], dtype=torch.long)
        mask[j, K + L - len(c) + K:] = 1
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, positions(mask)[:, K:]


@torch.no_grad()
def opening_logprobs(model, prompts: list[list[int]], opening: list[int], *, pad_id: int = 0,
                     prefix: tuple[int, DynamicCache] | None = None, batch_size: int = 8) -> list[float]:
    """log P(the reply opens with `opening` | prompt), per prompt: one forward of each prompt's
    own tokens and the opening, after `prefix=(K, cache)` (the prompts' common first K tokens,
    computed once by the caller) — what a reply's first len(opening) greedy-or-not steps would
    see, without sampling any of them."""
    inner = getattr(model, "module", model)
    device = inner.device
    want = torch.tensor(opening, device=device)
    kw = cache_kwarg(model)
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        contexts = [p + opening for p in prompts[start:start + batch_size]]
        K = prefix[0] if prefix is not None else 0
        if prefix is not None and K:
            cache = copy.deepcopy(prefix[1])
            if len(contexts) > 1:
                cache.batch_repeat_interleave(len(contexts))
        else:
            cache = DynamicCache(config=inner.config)
        ids, mask, pos = _layout(contexts, K, pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                       logits_to_keep=len(opening) + 1, **{kw: cache}).logits[:, :-1]
        logp = torch.log_softmax(logits.double(), -1)
        out += logp.gather(-1, want.expand(len(contexts), -1).unsqueeze(-1)).squeeze(-1).sum(-1).tolist()
    return out


def _mask_logits(logits: torch.Tensor, matchers: list, vocab_size: int) -> torch.Tensor:
    from agent.constrain import allowed

    ok = allowed(matchers, vocab_size, logits.shape[-1]).to(logits.device)
    return logits.masked_fill(~ok, float("-inf"))


def _sample_rows(logits: torch.Tensor, rule: list[Sampler]) -> torch.Tensor:
    """One token per row; rows sharing one sampler are drawn together (the RNG is then used as
    one batched draw, as before per-row samplers existed)."""
    if all(r.temperature == 0 for r in rule):
        return logits.argmax(-1)
    if all(r is rule[0] or (r.generator is None and rule[0].generator is None and
                            (r.temperature, r.top_p) == (rule[0].temperature, rule[0].top_p)) for r in rule):
        return sample_next(logits, rule[0].temperature, rule[0].top_p, rule[0].generator)
    return torch.stack([sample_next(logits[j:j + 1], r.temperature, r.top_p, r.generator)[0]
                        for j, r in enumerate(rule)])


@torch.no_grad()
def decode(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int | list[int],
    stop_ids: set[int] | list[int],
    pad_id: int = 0,
    forced: list[list[int]] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    min_shared_prefix: int | None = MIN_SHARED_PREFIX,
    prefix: tuple[int, DynamicCache] | None = None,
    samplers: list[Sampler] | None = None,
    matchers: list | None = None,
    vocab_size: int | None = None,
    min_new_tokens: list[int] | None = None,
    on_token: Callable[[int, int], Any] | None = None,
) -> list[list[int]]:
    """One completion per prompt: forced opening + new tokens, through the first stop token
    (included) or until the completion is `max_new_tokens` long (one budget, or one per row).

    `prefix=(K, cache)`: the cache of the prompts' common first K tokens, computed by the caller
    once for many calls (it is copied, not changed); else the prompts' shared prefix (at least
    `min_shared_prefix` tokens; None: no sharing) is prefilled here.

    Per-row options (lists in prompt order): `samplers` replace temperature/top_p/generator;
    `matchers` (agent.constrain; None for a free row) mask each step's logits to what the row's
    grammar allows and advance on the token taken, and a row whose grammar allows nothing more
    ends; `min_new_tokens` keeps stop tokens out until that many were generated; `on_token(row,
    token)` sees each new token, and a true return ends that row."""
    B = len(prompts)
    forced = forced or [[] for _ in range(B)]
    limits = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * B
    out = [list(f) for f in forced]
    budget = [limits[i] - len(f) for i, f in enumerate(forced)]
    inner = getattr(model, "module", model)
    device = inner.device
    stop = torch.tensor(sorted(set(stop_ids)) or [-1], device=device)
    constrained = matchers is not None and any(m is not None for m in matchers)
    if constrained and vocab_size is None:
        raise ValueError("decode with matchers needs vocab_size (the tokenizer's)")

    rows = [i for i in range(B) if budget[i] > 0]
    if not rows:
        return out
    active = torch.tensor(rows, device=device, dtype=torch.long)
    contexts = [prompts[i] + forced[i] for i in rows]
    if prefix is not None:
        K, cache = prefix[0], copy.deepcopy(prefix[1])
        if K and len(rows) > 1:
            cache.batch_repeat_interleave(len(rows))
    else:
        K = 0 if min_shared_prefix is None else shared_prefix_len(contexts, min_shared_prefix)
        cache = DynamicCache(config=inner.config)
        if K:
            prefill(model, contexts[0][:K], cache)
            cache.batch_repeat_interleave(len(rows))
    ids, mask, step_pos = _layout(contexts, K, pad_id, device)

    kw = cache_kwarg(model)
    shared = Sampler(temperature, top_p, generator)
    step_ids = ids
    while True:
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                       use_cache=True, logits_to_keep=1, **{kw: cache}).logits[:, -1]
        now = active.tolist()
        if min_new_tokens is not None:
            early = [j for j, r in enumerate(now) if len(out[r]) - len(forced[r]) < min_new_tokens[r]]
            if early:
                logits[early] = logits[early].index_fill(-1, stop, float("-inf"))
        rule = [samplers[r] for r in now] if samplers is not None else [shared] * len(now)
        if constrained:
            # Masks cost ~1 ms a row over a 50k vocabulary; checking one token costs µs. A row
            # sampled greedily or without nucleus takes its token from the full distribution and
            # is masked only when that token breaks the grammar: the argmax is the masked argmax,
            # and draw-then-redraw-masked is exactly the masked distribution. Nucleus rows are
            # masked first (the nucleus of the masked distribution is not the masked nucleus).
            first = [j for j, r in enumerate(now) if matchers[r] is not None and rule[j].top_p < 1
                     and rule[j].temperature > 0]
            if first:
                logits[first] = _mask_logits(logits[first], [matchers[now[j]] for j in first], vocab_size)
        tokens = _sample_rows(logits, rule)
        if constrained:
            redo = [j for j, (r, t) in enumerate(zip(now, tokens.tolist(), strict=True))
                    if matchers[r] is not None and j not in first and not matchers[r].validate_tokens([t])]
            if redo:
                masked = _mask_logits(logits[redo], [matchers[now[j]] for j in redo], vocab_size)
                tokens[redo] = _sample_rows(masked, [rule[j] for j in redo])
        done = torch.isin(tokens, stop)
        for j, (row, tok) in enumerate(zip(now, tokens.tolist(), strict=True)):
            out[row].append(tok)
            if len(out[row]) - len(forced[row]) >= budget[row]:
                done[j] = True
            if constrained and matchers[row] is not None and not done[j]:
                m = matchers[row]
                if not m.consume_token(tok) or m.is_stopped():
                    done[j] = True  # the grammar is complete (or, never expected, broken)
            if on_token is not None and on_token(row, tok):
                done[j] = True
        if done.all():
            return out
        if done.any():  # drop finished rows from the batch and the cache
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            active, tokens, mask, step_pos = active[keep], tokens[keep], mask[keep], step_pos[keep]
        step_ids = tokens.unsqueeze(-1)
        step_pos = step_pos[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)


# ---- the public API: requests in, completions out ------------------------------------------

@dataclass
class Request:
    """One completion to make (see the module docstring)."""

    prompt: list[int]
    tools: list[dict] | None = None
    tool_choice: str | dict | None = "auto"
    parallel_tool_calls: bool = True
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    constrain: bool = True
    call_threshold: float | None = None  # None: default_call_threshold()
    # the conversation `prompt` encodes; given, a call that takes no value from it is not made
    # (agent.grounding) and the reply is decoded again from it without the tools
    messages: list[dict] | None = None
    grounded_calls: bool | None = None  # None: default_grounding()


@dataclass
class Completion:
    ids: list[int]  # every generated token (an unconstrained forced opening first), end of turn included
    text: str  # ids decoded without special tokens, cut before the first stop string
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    constrained: bool
    forced: list[int] = field(default_factory=list)  # the forced opening (unconstrained required/named)
    call_p: float | None = None  # P(reply opens a tool call), where the call decision scored it
    withheld: str | None = None  # the reply whose calls were not grounded, when it was replaced

    @property
    def completion_tokens(self) -> int:
        return len(self.ids)


_CONSTRAIN: ContextVar[bool | None] = ContextVar("sdft_agent_constrain", default=None)


def default_constrain() -> bool:
    """Whether tool calls are constrained when a caller does not say: yes, unless a
    `constraining(False)` block is in force, or the environment sets SDFT_AGENT_CONSTRAIN=0
    (a switch for a whole run, e.g. a gate or a bench)."""
    scoped = _CONSTRAIN.get()
    if scoped is not None:
        return scoped
    return os.environ.get("SDFT_AGENT_CONSTRAIN", "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def constraining(on: bool | None) -> Iterator[bool]:
    """Within the block (this thread or task), `default_constrain()` answers `on`; None leaves
    it as it was. Yields the setting in force. This is how a command's `--no-constrain` reaches
    code that decodes with the default (the general probes) as well as the code it passes it to."""
    token = _CONSTRAIN.set(on) if on is not None else None
    try:
        yield default_constrain()
    finally:
        if token is not None:
            _CONSTRAIN.reset(token)


_CALL_THRESHOLD: ContextVar[float | None] = ContextVar("sdft_agent_call_threshold", default=None)
CALL_THRESHOLD = 0.0  # off; 0.5 is greedy over the decision itself (benchmarks/call_decision.py)


def default_call_threshold() -> float:
    """The call decision's threshold when a request does not say: a `deciding_calls(t)` block's,
    else SDFT_AGENT_CALL_THRESHOLD, else CALL_THRESHOLD. 0 turns the decision off."""
    scoped = _CALL_THRESHOLD.get()
    if scoped is not None:
        return scoped
    raw = os.environ.get("SDFT_AGENT_CALL_THRESHOLD", "").strip()
    if not raw:
        return CALL_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"SDFT_AGENT_CALL_THRESHOLD must be a number in [0, 1] (0: off), got {raw!r}") from None
    return _threshold_ok(value, "SDFT_AGENT_CALL_THRESHOLD")


def _threshold_ok(value: float, what: str) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{what} must be in [0, 1] (0: off), got {value}")
    return float(value)


@contextmanager
def deciding_calls(threshold: float | None) -> Iterator[float]:
    """Within the block, `default_call_threshold()` answers `threshold`; None leaves it as it was.
    How a gate or a benchmark compares the decision on and off (0) in one process."""
    token = _CALL_THRESHOLD.set(_threshold_ok(threshold, "call threshold")) if threshold is not None else None
    try:
        yield default_call_threshold()
    finally:
        if token is not None:
            _CALL_THRESHOLD.reset(token)


_GROUNDING: ContextVar[bool | None] = ContextVar("sdft_agent_grounded_calls", default=None)
GROUNDED_CALLS = True  # benchmarks/results/README.md, "Grounded calls"


def default_grounding() -> bool:
    """Whether calls must be grounded when a request does not say: a `grounding(on)` block's
    setting, else SDFT_AGENT_GROUNDED_CALLS (0 turns it off), else GROUNDED_CALLS."""
    scoped = _GROUNDING.get()
    if scoped is not None:
        return scoped
    raw = os.environ.get("SDFT_AGENT_GROUNDED_CALLS", "").strip().lower()
    return GROUNDED_CALLS if not raw else raw not in ("0", "false", "no", "off")


@contextmanager
def grounding(on: bool | None) -> Iterator[bool]:
    """Within the block, `default_grounding()` answers `on`; None leaves it as it was."""
    token = _GROUNDING.set(bool(on)) if on is not None else None
    try:
        yield default_grounding()
    finally:
        if token is not None:
            _GROUNDING.reset(token)


def _check(r: Request, i: int) -> None:
    if not r.prompt:
        raise ValueError(f"requests[{i}]: the prompt needs at least one token")
    if r.temperature < 0:
        raise ValueError(f"requests[{i}]: temperature must be >= 0, got {r.temperature}")
    if not 0 < r.top_p <= 1:
        raise ValueError(f"requests[{i}]: top_p must be in (0, 1], got {r.top_p}")
    if r.stop is not None and (isinstance(r.stop, str) or not all(isinstance(s, str) and s for s in r.stop)):
        raise ValueError(f"requests[{i}]: stop must be a list of non-empty strings")
    if r.call_threshold is not None:
        _threshold_ok(r.call_threshold, f"requests[{i}]: call_threshold")


def _choice(r: Request) -> str | dict:
    from agent.constrain import normalise_choice
    from memory.toolschema import tool_name

    return normalise_choice(r.tool_choice, [tool_name(t) for t in r.tools or []])


def _constrained(r: Request, choice: str | dict) -> bool:
    return bool(r.constrain and (r.tools or choice == "none"))


def forced_ids(fmt, r: Request) -> list[int]:
    """The opening an unconstrained "required" / named tool_choice puts at the start of the
    reply (the first ids of its completion); none when constrained (the grammar does it)."""
    from agent.prompt import CALL_OPEN, call_json

    choice = _choice(r)
    if _constrained(r, choice) or choice in ("auto", "none"):
        return []
    text = f"{CALL_OPEN}\n"
    if isinstance(choice, dict):
        text += call_json({"name": choice["name"], "arguments": {}})[: -len("{}}")]
    return fmt.tokenizer(text, add_special_tokens=False)["input_ids"]


def _cut(text: str, stop: list[str] | None) -> tuple[str, bool]:
    hits = [text.index(s) for s in stop or [] if s in text]
    return (text[: min(hits)], True) if hits else (text, False)


@torch.inference_mode()
def complete(
    model,
    fmt,
    requests: list[Request],
    *,
    batch_size: int = 8,
    on_token: Callable[[int, int], Any] | None = None,
) -> list[Completion]:
    """One `Completion` per request, in order (see the module docstring)."""
    from agent.constrain import grammars_for

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i, r in enumerate(requests):
        _check(r, i)
    eot = fmt.end_of_turn_id
    tok = fmt.tokenizer
    choices = [_choice(r) for r in requests]
    use_grammar = [_constrained(r, c) for r, c in zip(requests, choices, strict=True)]
    forced = [forced_ids(fmt, r) for r in requests]
    out: list[list[int]] = [[] for _ in requests]
    stopped = [False] * len(requests)
    grammar_done = [False] * len(requests)

    contexts = [r.prompt + f for r, f in zip(requests, forced, strict=True)]
    deciding = [_deciding(r, c) for r, c in zip(requests, choices, strict=True)]
    # one prompt alone shares its prefix with the call decision's forward
    k = common_prefix(contexts) if len(contexts) > 1 or any(deciding) else 0
    prefix = (k, prefill(model, contexts[0][:k])) if k else None  # once, for every batch
    order = sorted(range(len(requests)), key=lambda i: len(contexts[i]))
    call_p = _decide_calls(model, fmt, requests, [i for i in order if deciding[i]], prefix, batch_size)
    for i, p in enumerate(call_p):
        if p is not None and p < _threshold(requests[i]):
            choices[i], use_grammar[i] = "none", True  # answer in words: the no-call grammar
    grammars = grammars_for(tok, eot) if any(use_grammar) else None
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        matchers = [grammars.matcher(requests[i].tools, choices[i], requests[i].parallel_tool_calls)
                    if use_grammar[i] else None for i in idx]
        samplers = [Sampler(requests[i].temperature, requests[i].top_p,
                            torch.Generator().manual_seed(requests[i].seed)
                            if requests[i].seed is not None and requests[i].temperature > 0 else None)
                    for i in idx]
        need_hook = on_token is not None or any(requests[i].stop for i in idx)

        def hook(row: int, token: int, idx=idx) -> bool:
            i = idx[row]
            out[i].append(token)
            end = bool(on_token(i, token)) if on_token is not None else False
            if requests[i].stop and token != eot:
                text = tok.decode(forced[i] + out[i], skip_special_tokens=True)
                if _cut(text, requests[i].stop)[1]:
                    stopped[i] = True
                    end = True
            return end

        rows = decode(model, [requests[i].prompt for i in idx], forced=[forced[i] for i in idx],
                      max_new_tokens=[len(forced[i]) + requests[i].max_new_tokens for i in idx],
                      stop_ids={eot}, pad_id=tok.pad_token_id or 0, prefix=prefix, min_shared_prefix=None,
                      samplers=samplers, matchers=matchers if any(m is not None for m in matchers) else None,
                      vocab_size=grammars.vocab_size if grammars is not None else None,
                      min_new_tokens=[requests[i].min_new_tokens for i in idx],
                      on_token=hook if need_hook else None)
        for i, row, m in zip(idx, rows, matchers, strict=True):
            out[i] = row
            grammar_done[i] = m is not None and m.is_stopped()
    done = []
    for i, r in enumerate(requests):
        ids = out[i]
        new = ids[len(forced[i]):]
        text, cut = _cut(tok.decode(ids, skip_special_tokens=True), r.stop)
        ended = (bool(new) and new[-1] == eot) or stopped[i] or cut or grammar_done[i]
        done.append(Completion(ids=ids, text=text, finish_reason="stop" if ended else "length",
                               prompt_tokens=len(r.prompt), constrained=use_grammar[i], forced=forced[i],
                               call_p=call_p[i]))
    if on_token is None:  # a streamed reply has been sent as it came: it is what it is
        _ground(model, fmt, requests, choices, done, batch_size)
    return done


def withholds(r: Request, choice, text: str) -> bool:
    """Whether reply `text` to request `r` (its tool_choice normalised: `choice`) is withheld:
    the model chose to call ("auto", tools offered), the conversation is given, grounding is on,
    and a call in it takes no value from the conversation (agent.grounding)."""
    from agent.grounding import ungrounded

    on = default_grounding() if r.grounded_calls is None else r.grounded_calls
    return bool(on and r.messages is not None and r.tools and choice == "auto" and ungrounded(text, r.messages))


def _ground(model, fmt, requests: list[Request], choices: list, done: list[Completion], batch_size: int) -> None:
    """Replace, in place, each reply whose calls take no value from the conversation with the
    reply to that conversation without the tools (agent.grounding). Only where the model chose:
    tool_choice "auto", tools offered, the conversation given and grounding on."""
    redo = [i for i, (r, c) in enumerate(zip(requests, choices, strict=True)) if withholds(r, c, done[i].text)]
    if not redo:
        return
    again = complete(model, fmt, [Request(prompt=fmt.encode(requests[i].messages, None), tools=None,
                                          max_new_tokens=requests[i].max_new_tokens,
                                          min_new_tokens=requests[i].min_new_tokens,
                                          temperature=requests[i].temperature, top_p=requests[i].top_p,
                                          seed=requests[i].seed, stop=requests[i].stop,
                                          constrain=requests[i].constrain) for i in redo], batch_size=batch_size)
    for i, c in zip(redo, again, strict=True):
        c.withheld, c.call_p = done[i].text, done[i].call_p
        done[i] = c


def _threshold(r: Request) -> float:
    return default_call_threshold() if r.call_threshold is None else r.call_threshold


def _deciding(r: Request, choice) -> bool:
    """Whether the call decision applies: a greedy request that leaves the choice to the model
    (tools offered, tool_choice "auto") with a threshold above 0."""
    return bool(r.tools) and choice == "auto" and r.temperature == 0 and _threshold(r) > 0


def _decide_calls(model, fmt, requests: list[Request], rows: list[int],
                  prefix: tuple[int, DynamicCache] | None, batch_size: int) -> list[float | None]:
    """P(the reply opens `<tool_call>`) for the requests `rows` (where `_deciding`); None for
    the others.

    Greedy decoding takes the likeliest *token*, and a call's opening can be that token with a
    small share of the probability when the rest is spread over many words (a 135M model after
    learning a tool: P(call) 0.1–0.3 on "Good night!", every word below it). Deciding "call or
    answer" as the binary choice it is — call only when the call is at least `threshold` likely,
    0.5 being greedy over the decision — costs one forward of each prompt's own tokens (the
    shared prefix is reused) and never changes a reply the model was sure of."""
    from agent.prompt import CALL_OPEN

    found: list[float | None] = [None] * len(requests)
    if not rows:
        return found
    opening = fmt.tokenizer(CALL_OPEN, add_special_tokens=False)["input_ids"]
    scores = opening_logprobs(model, [requests[i].prompt for i in rows], opening,
                              pad_id=fmt.tokenizer.pad_token_id or 0, prefix=prefix, batch_size=batch_size)
    for i, lp in zip(rows, scores, strict=True):
        found[i] = math.exp(lp)
    return found


# ---- single-prompt helpers (what `ask`, the chat model and the overhead benchmark call) ------

@torch.inference_mode()
def generate_ids(
    model,
    fmt,
    input_ids: list[int],
    *,
    max_new_tokens: int = 128,
    min_new_tokens: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: list[str] | None = None,
    streamer=None,
    stopping_criteria=None,
    tools: list[dict] | None = None,
    tool_choice: str | dict | None = "auto",
    constrain: bool = False,
    seed: int | None = None,
    messages: list[dict] | None = None,
) -> list[int]:
    """The new token ids after `input_ids`, ending at (and including) the end-of-turn token
    when the model wrote one. `streamer` (transformers' put/end protocol: the prompt first, then
    each token) and `stopping_criteria` (called with the ids so far) keep `generate()`'s hooks.
    `messages`: the conversation `input_ids` encode, for the grounded-calls check (a reply that
    is not streamed; see `Request.messages`)."""
    request = Request(prompt=list(input_ids), tools=tools, tool_choice=tool_choice, max_new_tokens=max_new_tokens,
                      min_new_tokens=min_new_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stop,
                      constrain=constrain, messages=messages)
    if streamer is None and stopping_criteria is None:
        return complete(model, fmt, [request])[0].ids
    ids: list[int] = list(forced_ids(fmt, request))
    if streamer is not None:
        streamer.put(torch.tensor([input_ids]))
        for token in ids:
            streamer.put(torch.tensor([token]))

    def on_token(_i: int, token: int) -> bool:
        ids.append(token)
        if streamer is not None:
            streamer.put(torch.tensor([token]))
        if stopping_criteria is not None:
            seen = torch.tensor([input_ids + ids])
            return bool(torch.as_tensor(stopping_criteria(seen, None)).any())
        return False

    try:
        (c,) = complete(model, fmt, [request], on_token=on_token)
    finally:
        if streamer is not None:
            streamer.end()
    return c.ids


def generate_reply(
    model,
    tokenizer,
    messages: list[dict],
    tools: list[dict] | None = None,
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    fmt=None,
    constrain: bool = True,
) -> str:
    """The assistant's reply text (greedy when temperature is 0), stopped at end of turn."""
    from agent.prompt import PromptFormat

    fmt = fmt or PromptFormat(tokenizer)
    (c,) = complete(model, fmt, [Request(prompt=fmt.encode(messages, tools), tools=tools,
                                         max_new_tokens=max_new_tokens, temperature=temperature,
                                         constrain=constrain)])
    return c.text
