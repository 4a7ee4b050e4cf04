"""Tool-call grammars: free text, or `<tool_call>` blocks whose name is an offered tool and whose
arguments follow that tool's JSON schema.

Backed by llguidance (chosen over xgrammar by measurement: benchmarks/constrained_decoding.py;
a 3 MB wheel with no dependencies, where xgrammar declares triton on Linux x86_64). The grammar
is Lark with inline JSON schemas:

    start: seg* tail                        (tool_choice "auto")
    seg:   pre "\\n" call "\\n</tool_call>"
    pre[lazy]: /(.|\\n)*<tool_call>/          free text up to the first opening, then the call
    tail:  TEXT                             free text that never contains the opening

"required" and a named tool allow only calls (the named one: only that tool); "none" allows only
TEXT. Inside a call the JSON has no optional whitespace and the separators `json.dumps` writes
(", " and ": "), which is exactly the spelling training data uses (agent.prompt.call_json), so a
grammar cannot let the model pad to its token limit. Objects with declared properties get
`additionalProperties: false` unless they say otherwise: an argument the schema does not declare
is an invalid call (memory.toolschema.argument_errors).

Special tokens other than the end of turn are not text: a constrained row never emits them.

Compiled grammars are cached per (tokenizer, tool set, choice, parallel); each row gets a copy
of the compiled matcher (`deep_copy`, microseconds).
"""

from __future__ import annotations

import copy
import json
import threading
from functools import lru_cache
from typing import Any

import torch

from agent.prompt import CALL_CLOSE, CALL_OPEN
from memory.toolschema import function_schema

# The JSON spelling of a call (agent.prompt.call_json): default json.dumps separators, no other
# whitespace. llguidance keeps properties in schema order.
JSON_OPTIONS = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False,
                "lenient": True}
CHOICES = ("auto", "none", "required")


class ToolChoiceError(ValueError):
    """A tool_choice that names no offered tool, or has an unknown form."""


def normalise_choice(choice: Any, names: list[str]) -> str | dict:
    """"auto" | "none" | "required" | {"name": tool} from any OpenAI / LangChain spelling."""
    if choice in (None, "auto", False):
        return "auto"
    if choice in ("any", "required", True):
        if not names:
            raise ToolChoiceError("tool_choice 'required' needs at least one tool in `tools`")
        return "required"
    if choice == "none":
        return "none"
    name = choice
    if isinstance(choice, dict):
        name = (choice.get("function") or choice).get("name")
    if not isinstance(name, str) or name not in names:
        raise ToolChoiceError(
            f"tool_choice {choice!r} names no offered tool; use 'auto', 'none', 'required' or "
            f"{{'type': 'function', 'function': {{'name': one of {sorted(names)}}}}}")
    return {"name": name}


def _closed(schema: Any) -> Any:
    """`schema` with additionalProperties false on every object that declares properties and
    says nothing about extra ones."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) if k in ("properties", "items", "anyOf", "oneOf", "allOf", "$defs",
                                   "definitions", "prefixItems") else v
           for k, v in schema.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            out[key] = {k: _closed(v) for k, v in schema[key].items()}
    return out


def call_schema(tools: list[dict]) -> dict:
    """JSON schema of one call object {"name": …, "arguments": …} over `tools`."""
    variants = []
    for tool in tools:
        fn = function_schema(tool)
        params = _closed(fn.get("parameters") or {"type": "object", "properties": {}})
        variants.append({"type": "object",
                         "properties": {"name": {"const": fn["name"]}, "arguments": params},
                         "required": ["name", "arguments"], "additionalProperties": False})
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {**schema, "x-guidance": JSON_OPTIONS}


def lark_grammar(tools: list[dict] | None, choice: str | dict = "auto", parallel: bool = True) -> str:
    """The Lark grammar for one request (see the module docstring)."""
    tools = tools or []
    if choice == "none" or not tools:
        if choice not in ("none", "auto"):
            raise ToolChoiceError("tool_choice needs tools")
        return "%llguidance {}\nstart: TEXT\n" + _TEXT
    if isinstance(choice, dict):
        tools = [t for t in tools if function_schema(t)["name"] == choice["name"]]
    body = "call: %json " + json.dumps(call_schema(tools), ensure_ascii=False)
    block = f'{json.dumps(CALL_OPEN + chr(10))} call {json.dumps(chr(10) + CALL_CLOSE)}'
    if choice == "auto":
        start = "start: seg* tail\n" if parallel else "start: seg? tail\n"
        rules = (start + f'seg: pre "\\n" call {json.dumps(chr(10) + CALL_CLOSE)}\n'
                 f"pre[lazy]: /(.|\\n)*{_regex_literal(CALL_OPEN)}/\ntail: TEXT\n")
    else:  # required, or one named tool: calls only
        more = f' ("\\n" {block})*' if parallel else ""
        rules = f"start: {block}{more}\n"
    return "%llguidance {}\n" + rules + body + "\n" + _TEXT


def _regex_literal(s: str) -> str:
    return "".join("\\" + c if c in r"\.^$|?*+()[]{}/" else c for c in s)


_TEXT = f"TEXT: /(.|\\n)*/ & ~/(.|\\n)*{_regex_literal(CALL_OPEN)}(.|\\n)*/\n"


class Grammars:
    """Compiled tool-call grammars for one tokenizer (llguidance's tokenizer view is built once,
    ~1 s for a 50k vocabulary; each grammar once per tool set and choice)."""

    def __init__(self, tokenizer, end_of_turn_id: int):
        import llguidance
        import llguidance.hf

        self._ll = llguidance
        self.tokenizer = tokenizer
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, eos_token=end_of_turn_id)
        self.vocab_size = self.ll_tokenizer.vocab_size
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()

    def matcher(self, tools: list[dict] | None, choice: Any = "auto", parallel: bool = True):
        """A fresh matcher (its own parse state) for one row."""
        names = [function_schema(t)["name"] for t in tools or []]
        choice = normalise_choice(choice, names)
        key = json.dumps([tools or [], choice, parallel], sort_keys=True, ensure_ascii=False)
        with self._lock:
            proto = self._compiled.get(key)
            if proto is None:
                grammar = self._ll.LLMatcher.grammar_from_lark(lark_grammar(tools, choice, parallel))
                proto = self._ll.LLMatcher(self.ll_tokenizer, grammar, log_level=0)
                if proto.is_error():
                    raise ValueError(f"the tool schemas do not compile to a grammar: {proto.get_error()}")
                self._compiled[key] = proto
        return proto.deep_copy()

    @property
    def cached(self) -> int:
        return len(self._compiled)


_by_tokenizer: dict[int, tuple[Any, Grammars]] = {}
_by_tokenizer_lock = threading.Lock()


def grammars_for(tokenizer, end_of_turn_id: int) -> Grammars:
    """The one `Grammars` of a tokenizer object (kept while the tokenizer lives)."""
    key = id(tokenizer)
    with _by_tokenizer_lock:
        hit = _by_tokenizer.get(key)
        if hit is None or hit[0] is not tokenizer:
            hit = (tokenizer, Grammars(tokenizer, end_of_turn_id))
            _by_tokenizer[key] = hit
        return hit[1]


@lru_cache(maxsize=8)
def _bit_positions(device: str) -> torch.Tensor:
    return torch.arange(32, dtype=torch.int32, device=device)


def allowed(matchers: list, vocab_size: int, n_logits: int) -> torch.Tensor:
    """[B, n_logits] bool: the tokens each row's matcher allows next (every token for None)."""
    import llguidance.torch as llt

    words = (vocab_size + 31) // 32
    bitmask = torch.full((len(matchers), words), -1, dtype=torch.int32)
    for i, m in enumerate(matchers):
        if m is not None:
            llt.fill_next_token_bitmask(m, bitmask, i)
    bits = (bitmask.unsqueeze(-1) >> _bit_positions("cpu")) & 1
    mask = bits.reshape(len(matchers), words * 32)[:, :vocab_size].bool()
    if n_logits > vocab_size:  # padded embedding rows: never a real token
        pad = torch.zeros((len(matchers), n_logits - vocab_size), dtype=torch.bool)
        mask = torch.cat([mask, pad], dim=-1)
        for i, m in enumerate(matchers):
            if m is None:
                mask[i, vocab_size:] = True
    return mask[:, :n_logits]


def copy_matcher(m):
    return None if m is None else (m.deep_copy() if hasattr(m, "deep_copy") else copy.deepcopy(m))
