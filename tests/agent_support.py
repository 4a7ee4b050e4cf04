"""Helpers for the agent tests: a model whose replies are scripted, and the tools they call.

`Scripted` wraps a real (tiny) model: `generate` records the exact input ids it is fed and
returns the next scripted reply as tokens (then end of turn), so the whole agent path — render,
encode, decode, parse, tools, recording — is the real one; only the model's choice is fixed.
When the script runs out it defers to the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from langchain_core.tools import tool

from agent.chat_model import LocalChatModel
from agent.prompt import call_block
from agent.runtime import Loaded, Pinned
from tiny import build_tiny_model, build_tiny_tokenizer

DATE_TOOLS = json.loads((Path(__file__).resolve().parents[1] / "skills" / "packs" / "date_math.json")
                        .read_text())["tools"]

MULTIPLY = {
    "name": "multiply",
    "description": "Multiply two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]},
}


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def call(name: str, **arguments) -> str:
    """A reply that is exactly one tool-call block."""
    return call_block({"name": name, "arguments": arguments})


class Scripted:
    """A model stand-in: scripted replies, real model otherwise; remembers every input."""

    def __init__(self, model, tokenizer, replies=(), on_generate=None):
        self.model = model
        self.tokenizer = tokenizer
        self.replies = list(replies)
        self.inputs: list[list[int]] = []
        self.on_generate = on_generate  # called before each reply (e.g. to promote a model)
        self.eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._reply: list[int] | None = None
        self._step = 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, **kwargs):
        """A forward pass as agent.decode makes them (one sequence: a call on an empty cache is
        its whole prompt, each later call one step): the real model runs (so the cache and
        shapes are real), then the next scripted token is made the top logit."""
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        ids = kwargs["input_ids"]
        if cache is None or cache.get_seq_length() == 0:  # a new sequence: its prompt
            self.inputs.append(ids[0].tolist())
            if self.on_generate:
                self.on_generate(len(self.inputs))
            self._reply = (self.tokenizer(self.replies.pop(0), add_special_tokens=False)["input_ids"] + [self.eot]
                           if self.replies else None)
            self._step = 0
        out = self.model(*args, **kwargs)
        if self._reply is not None and ids.shape[0] == 1:
            token = self._reply[min(self._step, len(self._reply) - 1)]
            out.logits[:, -1, token] = out.logits[:, -1].max() + 1e4
            self._step += 1
        return out

    def generate(self, input_ids, streamer=None, **kwargs):
        self.inputs.append(input_ids[0].tolist())
        if self.on_generate:
            self.on_generate(len(self.inputs))
        if not self.replies:
            return self.model.generate(input_ids=input_ids, streamer=streamer, **kwargs)
        new = self.tokenizer(self.replies.pop(0), add_special_tokens=False)["input_ids"] + [self.eot]
        if streamer is not None:
            streamer.put(input_ids.cpu())
            for t in new:
                streamer.put(torch.tensor([t]))
            streamer.end()
        return torch.cat([input_ids, torch.tensor([new], device=input_ids.device)], dim=1)


def scripted_llm(replies, kind: str = "fallback", version: str = "tiny", **fields):
    """(LocalChatModel over a scripted tiny model, the Scripted model, the tokenizer)."""
    tok = build_tiny_tokenizer(kind)
    model = Scripted(build_tiny_model(tok), tok, replies)
    fields.setdefault("constrain", False)  # the script decides, including invalid calls
    fields.setdefault("max_new_tokens", 96)  # the decode loop enforces it: room for a whole scripted call
    llm = LocalChatModel(runtime=Pinned(Loaded.of(model, tok, version)), **fields)
    return llm, model, tok

