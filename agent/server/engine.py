"""The model behind the server: requests queue onto one generation worker.

One worker thread owns the model, so concurrent requests run one after another in arrival order
(FIFO) and cannot corrupt each other's state (the KV cache, the global RNG a `seed` sets). The
champion is looked up before every generation (agent.runtime.ModelRuntime), so a promotion is
picked up between two requests; a request that names a version gets that version, pinned.

`bind` is the one place tool_choice reaches the decoder.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.answer import answer_after_tools
from agent.chat_model import LocalChatModel, from_dicts, new_call_id
from agent.decode import default_constrain
from agent.runtime import ModelRuntime
from agent.server.errors import APIError

CHAMPION_NAMES = ("sdft-agent", "champion", "default")
MAX_PINNED = 1  # named versions kept loaded besides the champion


@dataclass
class Job:
    """One validated request, in the project's vocabulary."""

    messages: list[dict]
    tools: list[dict]
    choice: str | None  # None/'auto' | 'none' | 'required' | a function name
    version: str | None  # None: the champion
    options: dict  # max_new_tokens, temperature, top_p
    stop: list[str] | None = None
    seed: int | None = None
    parallel_tool_calls: bool = True


@dataclass
class Reply:
    content: str
    calls: list[dict]  # [{"id", "name", "arguments": JSON string}]
    finish: str  # stop | length | tool_calls
    usage: dict  # OpenAI names: prompt_tokens, completion_tokens, total_tokens
    version: str
    raw: str = ""  # what the model wrote, before the answer step
    answer_source: str | None = None  # model | grounded, for an answer after tool results
    invalid: list[dict] = field(default_factory=list)
    streamed: str = ""  # content already sent as deltas
    constrained: bool | None = None  # decoded under the schema grammar (Engine.constrained_for)
    withheld: str | None = None  # a reply whose calls took no value from the conversation (agent.grounding)
    dropped: list[dict] = field(default_factory=list)  # optional arguments the conversation never gave


def bind(llm: LocalChatModel, tools: list[dict], choice: str | None):
    """The chat model with `tools` offered under `choice` (OpenAI's none/auto/required/name).

    LocalChatModel hands the choice to agent.decode, whose grammar allows only what the choice
    does (constrained decoding; unconstrained, the call opening is forced instead)."""
    if not tools:
        return llm
    lc_choice = {"required": "any", "auto": None}.get(choice, choice) if choice else None
    return llm.bind_tools(tools, tool_choice=lc_choice)


def ends_with_tool_results(messages: list[dict]) -> list[dict]:
    """The trailing tool results of a conversation, each with the arguments of its call."""
    results: list[dict] = []
    i = len(messages)
    while i > 0 and messages[i - 1]["role"] == "tool":
        i -= 1
    if i == len(messages):
        return []
    calls = list(messages[i - 1].get("tool_calls") or []) if i > 0 and messages[i - 1]["role"] == "assistant" else []
    for m in messages[i:]:
        call = next((c for c in calls if c["name"] == m.get("name")), None)
        if call is not None:
            calls.remove(call)
        error = m["content"].lstrip().lower().startswith(("error", "traceback"))
        results.append({"name": m.get("name"), "arguments": (call or {}).get("arguments", {}),
                        "content": m["content"], "status": "error" if error else "success"})
    return results


class Engine:
    """Generation for the server: the champion and named versions of one model store."""

    def __init__(self, home=None, *, store=None, loader: Callable | None = None,
                 max_new_tokens: int = 256, device: str | None = None, constrain: bool | None = None):
        from memory.models import ModelStore

        self.store = store or ModelStore(home, quiet=True)
        self.loader = loader
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.constrain = default_constrain() if constrain is None else bool(constrain)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdft-generate")
        self._champion = self._runtime(None)
        self._pinned: OrderedDict[str, ModelRuntime] = OrderedDict()
        self._lock = threading.Lock()

    def _runtime(self, version: str | None) -> ModelRuntime:
        return ModelRuntime(store=self.store, version=version, loader=self.loader, device=self.device)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    # -- which model ---------------------------------------------------------------------------

    def version_of(self, model: str) -> str | None:
        """The version a request's `model` names (None: the champion), or a 404."""
        from memory.models import ModelStoreError

        if model in CHAMPION_NAMES:
            return None
        try:
            return self.store.get(model).version
        except ModelStoreError:
            known = ", ".join([CHAMPION_NAMES[0], *(v.version for v in self.store.versions())])
            raise APIError(f"the model {model!r} does not exist (known: {known})", 404,
                           param="model", code="model_not_found") from None

    def runtime(self, version: str | None) -> ModelRuntime:
        if version is None:
            return self._champion
        with self._lock:
            rt = self._pinned.pop(version, None) or self._runtime(version)
            self._pinned[version] = rt
            while len(self._pinned) > MAX_PINNED:
                self._pinned.popitem(last=False)  # freed when no request holds it
            return rt

    # -- one generation (runs on the worker thread) --------------------------------------------

    def constrained_for(self, job: Job) -> bool:
        """Whether `job` decodes under the schema grammar: as the server was started (on by
        default; `--no-constrain` turns it off), except that "required" and a named tool are
        always constrained, since only the grammar can promise the client that call ("none" is
        honoured unconstrained too: the tools are not shown and no call is parsed)."""
        return self.constrain or (bool(job.tools) and job.choice not in (None, "auto", "none"))

    def generate(self, job: Job, on_text: Callable[[str], None] | None = None,
                 cancelled: Callable[[], bool] = lambda: False) -> Reply:
        """The assistant's reply to `job`. With `on_text`, content is handed over as it is
        generated, except for an answer after tool results, which is checked first."""
        constrained = self.constrained_for(job)
        llm = LocalChatModel(runtime=self.runtime(job.version), constrain=constrained)
        bound = bind(llm, job.tools, job.choice)
        kwargs: dict[str, Any] = {"max_new_tokens": job.options.get("max_new_tokens") or self.max_new_tokens}
        for key in ("temperature", "top_p"):
            if job.options.get(key) is not None:
                kwargs[key] = job.options[key]
        if job.stop:
            kwargs["stop"] = job.stop
        if job.seed is not None:
            kwargs["seed"] = job.seed
        results = ends_with_tool_results(job.messages)
        prompt = from_dicts(job.messages)
        streamed = ""
        if on_text is None or results:
            ai = bound.invoke(prompt, **kwargs)
        else:
            ai = None
            for chunk in bound.stream(prompt, **kwargs):
                if chunk.content:
                    streamed += chunk.content
                    on_text(chunk.content)
                ai = chunk if ai is None else ai + chunk
                if cancelled():
                    break
        reply = self._reply(ai, job, results, streamed)
        reply.constrained = constrained
        return reply

    def _reply(self, ai, job: Job, results: list[dict], streamed: str) -> Reply:
        withheld = (ai.response_metadata or {}).get("withheld_call")
        # a withheld call was answered without the tools: call markup in that answer is not a call
        offered = {t["name"] for t in job.tools} if job.choice != "none" and withheld is None else set()
        calls = [{"id": c.get("id") or new_call_id(), "name": c["name"],
                  "arguments": json.dumps(c["args"], ensure_ascii=False)} for c in ai.tool_calls]
        invalid, text_back = [], []
        for c in ai.invalid_tool_calls:
            invalid.append({"name": c.get("name"), "raw": c.get("args"), "error": c.get("error")})
            args = _arguments_text(c.get("args"))
            if c.get("name") in offered and args is not None:  # off-schema but readable: the client decides
                calls.append({"id": c.get("id") or new_call_id(), "name": c["name"], "arguments": args})
            else:
                text_back.append(c.get("args") or "")
        if not job.parallel_tool_calls:
            calls = calls[:1]
        raw = ai.content if isinstance(ai.content, str) else str(ai.content)
        content = "\n".join([raw, *text_back]).strip() if text_back else raw
        meta = ai.response_metadata or {}
        finish = "tool_calls" if calls else meta.get("finish_reason", "stop")
        source = None
        if results and not calls:
            answer = answer_after_tools(content, results)
            content, source = answer.text, answer.source
        usage = ai.usage_metadata or {}
        n_in, n_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        return Reply(content=content, calls=calls, finish=finish, version=meta.get("model_version") or "unknown",
                     usage={"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
                     raw=raw, answer_source=source, invalid=invalid, streamed=streamed, withheld=withheld,
                     dropped=list(meta.get("dropped_arguments") or []))


def _arguments_text(raw: str | None) -> str | None:
    """The `arguments` object of a raw call block as JSON text, if the block is readable."""
    try:
        obj = json.loads(raw or "")
    except ValueError:
        return None
    args = obj.get("arguments") if isinstance(obj, dict) else None
    return json.dumps(args, ensure_ascii=False) if isinstance(args, dict) else None
