"""LangChain's own standard tests for chat models (the `langchain-tests` package) against
LocalChatModel over the tiny in-process model (issue 15).

The unit suite checks construction with the standard parameters, tool binding and the tracing
metadata. The integration suite talks to the model: the tiny model is random, so the tests that
check the shape of what comes back (invoke, stream, batch, async, usage, stop sequences, tool
message histories, structured output through a forced call) pass, while the few that need the
model to *understand* the question (which argument value, or whether to call at all) are marked
xfail with that reason. Tool calls are forced by `tool_choice` through constrained decoding.
"""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_tests")

from langchain_core.language_models import BaseChatModel  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ChatModelUnitTests  # noqa: E402

from agent.chat_model import LocalChatModel  # noqa: E402
from agent.runtime import Loaded, Pinned  # noqa: E402
from tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402

_TOK = build_tiny_tokenizer("fallback")
_RUNTIME = Pinned(Loaded.of(build_tiny_model(_TOK), _TOK, "tiny"))

RANDOM = "the tiny test model is random: it cannot pick the argument the question asks for"


class TestLocalChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[LocalChatModel]:
        return LocalChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"runtime": _RUNTIME}


class TestLocalChatModelIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[LocalChatModel]:
        return LocalChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"runtime": _RUNTIME, "max_new_tokens": 64}  # room for a whole forced call

    @pytest.mark.xfail(reason=RANDOM + " (magic_function(input=3))", strict=False)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=RANDOM + " (magic_function(input=3))", strict=False)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=RANDOM + " (the weather in a named city)", strict=False)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason=RANDOM + " (it writes an unbounded string where the name goes)",
                       strict=False)
    def test_unicode_tool_call_integration(self, model: BaseChatModel, *, tool_choice: str | None = None,
                                           force_tool_call: bool = True) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice,
                                                   force_tool_call=force_tool_call)
