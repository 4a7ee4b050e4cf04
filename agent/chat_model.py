"""`LocalChatModel`: a langchain-core chat model over a model-store version.

Every render and parse goes through `agent.prompt.PromptFormat`, so what this model sends to
`generate` for a conversation is exactly what the learner's student sees for it. Tool calls come
back as `AIMessage.tool_calls`; a call that cannot be executed (malformed JSON, unknown tool,
arguments that break the schema) comes back in `invalid_tool_calls` with the reason, never as
an exception. Local models get the tool-call parsing that langchain-huggingface's
ChatHuggingFace lacks.

    llm = LocalChatModel(home="~/agent")             # the champion; follows promotions
    llm = LocalChatModel(version="v0003")            # one version, pinned by name
    ai = llm.bind_tools([multiply]).invoke("What is 6 times 7?")
    ai.tool_calls  # [{"name": "multiply", "args": {"a": 6, "b": 7}, "id": "call_…", …}]
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, model_validator

from agent.decode import default_constrain, default_grounding, generate_ids
from agent.grounding import drop_invented
from agent.messages import from_dicts, new_call_id, text_of, to_dicts, tool_schemas
from agent.prompt import CALL_OPEN, Parsed
from agent.runtime import Loaded, ModelRuntime, Pinned
from memory.toolschema import tool_name

__all__ = ["LocalChatModel", "from_dicts", "new_call_id", "text_of", "to_dicts", "tool_schemas"]

_PASSTHROUGH_KWARGS = ("stream",)  # langchain-level switches that reach _generate; not ours


# ---- the chat model -------------------------------------------------------------------------

@dataclass
class _Call:
    """One generation request, prepared: the model snapshot and exactly the ids it is fed."""

    loaded: Loaded
    tools: list[dict] | None  # offered (calls are parsed against them)
    prompt_ids: list[int]
    choice: str | dict  # the decoder's tool_choice: "auto" | "none" | "required" | {"name": …}
    constrain: bool
    options: dict
    stop: list[str] | None
    messages: list[dict] | None = None  # the conversation the ids encode (grounded calls: agent.decode)

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids


class LocalChatModel(BaseChatModel):
    """A local model (a model-store version) as a langchain-core chat model with tool calling.

    `runtime` decides which weights serve: a `ModelRuntime` follows the champion alias (hot
    reload between calls), a `Pinned` one stays put. `pinned()` freezes the current version,
    which is how an agent episode keeps its model while a promotion happens.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    runtime: Any = Field(default=None, exclude=True)
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    constrain: bool | None = None  # tool calls follow the offered schemas; None: agent.decode's default

    @model_validator(mode="before")
    @classmethod
    def _runtime_from_store(cls, data: Any) -> Any:
        """`LocalChatModel(home=…, version=…, device=…)`, the way LangChain chat models are
        built: without a `runtime`, serve from the model store at `home` (default: the
        SDFT_AGENT_HOME one), the champion unless `version` names one; loaded on first use."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        store_args = {k: data.pop(k) for k in ("home", "version", "device") if k in data}
        if data.get("runtime") is None:
            data["runtime"] = ModelRuntime(store_args.get("home"), version=store_args.get("version"),
                                           device=store_args.get("device"))
        elif store_args:
            raise ValueError(f"give either runtime or {', '.join(sorted(store_args))}, not both")
        return data

    @classmethod
    def from_store(cls, home: str | Path | None = None, *, version: str | None = None,
                   device: str | None = None, **fields) -> LocalChatModel:
        """The champion of the store at `home` (or one named `version`), loaded on first use."""
        return cls(home=home, version=version, device=device, **fields)

    @classmethod
    def from_model(cls, model, tokenizer, version: str = "local", **fields) -> LocalChatModel:
        """An already loaded (model, tokenizer), e.g. in tests or notebooks."""
        return cls(runtime=Pinned(Loaded.of(model, tokenizer, version)), **fields)

    def pinned(self) -> LocalChatModel:
        """A copy that serves the current version until dropped (for one episode)."""
        return self.model_copy(update={"runtime": Pinned(self.runtime.current())})

    @property
    def version(self) -> str | None:
        return self.runtime.version

    @property
    def _llm_type(self) -> str:
        return "sdft-agent-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_version": self.runtime.version, "max_new_tokens": self.max_new_tokens,
                "min_new_tokens": self.min_new_tokens, "temperature": self.temperature,
                "top_p": self.top_p}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any):
        params = super()._get_ls_params(stop=stop, **kwargs)
        # a per-call `model` (LangChain's tracing convention) names the model in the trace
        params.update(ls_provider="sdft-agent",
                      ls_model_name=kwargs.get("model") or self.runtime.version or "unloaded",
                      ls_max_tokens=kwargs.get("max_new_tokens", self.max_new_tokens),
                      ls_temperature=kwargs.get("temperature", self.temperature))
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer `tools` to the model (anything `convert_to_openai_tool` takes).

        tool_choice: None/"auto" (the model decides), "none" (no call), "any"/"required"/True
        (a call), or a tool name / {"type": "function", "function": {"name": …}} (that tool's
        call). Honoured by agent.decode: with constrained decoding the grammar allows only that;
        without it, the call's opening is forced and "none" hides the tools.
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        choice = _normalise_choice(tool_choice, [tool_name(t) for t in formatted])
        if choice is not None:
            kwargs["tool_choice"] = choice
        return super().bind(tools=formatted, **kwargs)

    # -- preparing and running one generation ----------------------------------------------

    def prepare(self, messages: list[BaseMessage], stop: list[str] | None = None,
                **kwargs: Any) -> _Call:
        """Snapshot the model and build the exact ids `generate` will be fed."""
        for key in _PASSTHROUGH_KWARGS:
            kwargs.pop(key, None)
        for key in [k for k in kwargs if k.startswith("ls_")]:  # tracing hints from langchain
            kwargs.pop(key)
        tools = tool_schemas(kwargs.pop("tools", None) or []) or None
        choice = _normalise_choice(kwargs.pop("tool_choice", None), [t["name"] for t in tools or []])
        options = {k: kwargs.pop(k, getattr(self, k))
                   for k in ("max_new_tokens", "min_new_tokens", "temperature", "top_p")}
        options["seed"] = kwargs.pop("seed", None)
        constrain = kwargs.pop("constrain", self.constrain)
        if kwargs:
            raise TypeError(f"LocalChatModel got unexpected arguments: {', '.join(sorted(kwargs))}")
        constrain = default_constrain() if constrain is None else bool(constrain)
        loaded = self.runtime.current()
        decoder_choice: str | dict = {None: "auto", "any": "required", "none": "none"}.get(choice, {"name": choice})
        shown = None if choice == "none" and not constrain else tools
        conversation = to_dicts(messages)
        prompt_ids = loaded.fmt.encode(conversation, shown)
        return _Call(loaded, shown, prompt_ids, decoder_choice, constrain, options, list(stop) if stop else None,
                     conversation)

    def _run(self, call: _Call, streamer=None, stopping_criteria=None) -> list[int]:
        """The completion's ids (a forced call opening, when there is one, first)."""
        return generate_ids(call.loaded.model, call.loaded.fmt, call.input_ids, stop=call.stop,
                            streamer=streamer, stopping_criteria=stopping_criteria, tools=call.tools,
                            tool_choice=call.choice, constrain=call.constrain, messages=call.messages,
                            **call.options)

    def _complete(self, call: _Call) -> tuple[_Call, list[int], str | None]:
        """One reply, not streamed: agent.decode checks its calls are grounded and, where they
        are not, answers the conversation without the tools. Returns the call as answered (no
        tools, when a reply was withheld), its ids and the withheld reply's text."""
        from agent.decode import Request, complete

        request = Request(prompt=call.input_ids, tools=call.tools, tool_choice=call.choice, stop=call.stop,
                          constrain=call.constrain, messages=call.messages, **call.options)
        (done,) = complete(call.loaded.model, call.loaded.fmt, [request])
        return (call if done.withheld is None else self._without_tools(call)), done.ids, done.withheld

    def _grounded(self, call: _Call, ids: list[int]) -> tuple[_Call, list[int], str | None]:
        """A streamed reply is decoded without the grounded-calls check (its text is sent as it
        comes; call blocks are held back): check it here, and where its calls take no value from
        the conversation, answer from the conversation without the tools (agent.decode)."""
        from agent.decode import Request, withholds

        text = call.loaded.fmt.tokenizer.decode(ids, skip_special_tokens=True)
        if not withholds(Request(prompt=call.input_ids, tools=call.tools, messages=call.messages), call.choice, text):
            return call, ids, None
        plain = self._without_tools(call)
        return plain, self._run(plain), text

    @staticmethod
    def _without_tools(call: _Call) -> _Call:
        """The same conversation with no tools offered: what a withheld call is answered from
        (and its reply parsed against: call markup there names no tool)."""
        return replace(call, tools=None, prompt_ids=call.loaded.fmt.encode(call.messages or [], None))

    def _message(self, call: _Call, new_ids: list[int], withheld: str | None = None) -> AIMessage:
        fmt = call.loaded.fmt
        text = fmt.tokenizer.decode(new_ids, skip_special_tokens=True)
        finish = "stop" if new_ids and new_ids[-1] == fmt.end_of_turn_id else "length"
        for s in call.stop or []:
            if s in text:
                text, finish = text[: text.index(s)], "stop"
        parsed = fmt.parse(text, call.tools or [])
        calls, dropped = parsed.calls, []
        if call.messages is not None and default_grounding():  # no filter the user never gave
            calls, dropped = drop_invented(parsed.calls, call.tools or [], call.messages)
        n_in, n_out = len(call.prompt_ids), len(new_ids)
        return AIMessage(
            content=parsed.content,
            tool_calls=[tool_call(name=c["name"], args=c["arguments"], id=new_call_id()) for c in calls],
            invalid_tool_calls=_invalid(parsed),
            usage_metadata={"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out},
            response_metadata={"model_name": call.loaded.version, "model_version": call.loaded.version,
                               "finish_reason": finish,
                               **({"withheld_call": withheld} if withheld is not None else {}),
                               **({"dropped_arguments": dropped} if dropped else {})},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self.prepare(messages, stop, **kwargs)
        message = self._message(*self._complete(call))
        return ChatResult(generations=[ChatGeneration(message=message)],
                          llm_output={"model_version": call.loaded.version})

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Text as it is generated; tool-call blocks are held back and arrive, parsed, in the
        last chunk (with usage and metadata). Merged chunks carry the calls as langchain parses
        tool_call_chunks, which keeps no schema errors: callers that need them validate the
        calls (the agent loop does) or use invoke."""
        call = self.prepare(messages, stop, **kwargs)
        tokens: queue.Queue = queue.Queue()
        cancel = threading.Event()
        result: dict = {}

        def work():
            try:
                result["ids"] = self._run(call, streamer=_QueueStreamer(tokens),
                                          stopping_criteria=_cancellable(cancel))
            except BaseException as exc:  # re-raised in the caller's thread
                result["error"] = exc
            finally:
                tokens.put(None)

        thread = threading.Thread(target=work, name="local-chat-generate", daemon=True)
        thread.start()
        decode = call.loaded.fmt.tokenizer.decode
        new: list[int] = []
        shown = ""
        try:
            while (ids := tokens.get()) is not None:
                new.extend(ids)
                visible = _visible(decode(new, skip_special_tokens=True), call.stop)
                if len(visible) > len(shown) and visible.startswith(shown):
                    delta, shown = visible[len(shown):], visible
                    yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
        finally:
            cancel.set()
            thread.join()
        if "error" in result:
            raise result["error"]
        final = self._message(*self._grounded(call, result["ids"]))
        rest = final.content[len(shown):] if final.content.startswith(shown) else final.content
        chunks = [tool_call_chunk(name=c["name"], args=json.dumps(c["args"], ensure_ascii=False),
                                  id=c["id"], index=i) for i, c in enumerate(final.tool_calls)]
        chunks += [tool_call_chunk(name=c["name"], args=c["args"], id=c["id"], index=len(chunks) + i)
                   for i, c in enumerate(final.invalid_tool_calls)]
        yield ChatGenerationChunk(
            message=AIMessageChunk(content=rest, tool_call_chunks=chunks, usage_metadata=final.usage_metadata,
                                   response_metadata=final.response_metadata, chunk_position="last"),
            generation_info={"finish_reason": final.response_metadata["finish_reason"]},
        )


def _invalid(parsed: Parsed) -> list:
    return [invalid_tool_call(name=c.name, args=c.raw, id=new_call_id(), error=c.error) for c in parsed.invalid]


def _normalise_choice(choice: Any, names: list[str]) -> str | None:
    """'any', 'none', a tool name, or None (auto)."""
    if choice in (None, "auto", False):
        return None
    if choice in ("any", "required", True):
        return "any"
    if choice == "none":
        return "none"
    if isinstance(choice, dict):
        choice = (choice.get("function") or choice).get("name")
    if not isinstance(choice, str) or choice not in names:
        raise ValueError(f"tool_choice {choice!r} is not one of the bound tools ({', '.join(names) or 'none'})")
    return choice


def _visible(text: str, stop: list[str] | None) -> str:
    """The streamable part of generated text: before any tool-call block or stop string, minus
    a tail that could still turn into one, and without surrounding whitespace (as parse gives)."""
    text = text.rstrip("\ufffd")  # an unfinished multi-byte character waits for its bytes
    cut = text.find(CALL_OPEN)
    if cut >= 0:
        text = text[:cut]
    for s in stop or []:
        if s in text:
            text = text[: text.index(s)]
    for marker in [CALL_OPEN, *(stop or [])]:
        for n in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:n]):
                text = text[:-n]
                break
    return text.strip()


class _QueueStreamer:
    """A transformers streamer that hands new token ids to another thread (prompt skipped)."""

    def __init__(self, q: queue.Queue):
        self.q = q
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.q.put(value.reshape(-1).tolist())

    def end(self) -> None:
        pass


def _cancellable(event: threading.Event):
    """Stopping criteria that end generation once the stream's consumer has gone away."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Cancelled()])
