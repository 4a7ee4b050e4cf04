"""`EpisodeRecorder`: an optional langchain callback handler that writes episodes to memory.

The agent loop writes its own episodes (Agent.run → Memory.add_episode); this handler is for
users' own chains and tracers. It follows a root chain run tagged EPISODE_TAG (the loop opens one
per episode and ends it with the episode as a dict) and writes that dict when the run ends, or a
failure when it errors, with the model version each generation reported in its `llm_output`.
Do not hand it to an Agent that has a memory: the episode would be written twice.
"""
from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

log = logging.getLogger(__name__)

EPISODE_TAG = "sdft-agent-episode"


class EpisodeRecorder(BaseCallbackHandler):
    """Writes one `memory` episode per agent episode; `episode_ids[run_id]` gives the row id."""

    def __init__(self, memory, *, source: str = "live"):
        self.memory = memory
        self.source = source
        self.episode_ids: dict[UUID, int] = {}
        self.errors: dict[UUID, Exception] = {}
        self.last_episode_id: int | None = None
        self._roots: dict[UUID, UUID] = {}  # any run in an episode -> the episode's root run
        self._versions: dict[UUID, list[str]] = {}
        self._inputs: dict[UUID, dict] = {}

    # -- following the runs of an episode ----------------------------------------------------

    def on_chain_start(self, serialized, inputs, *, run_id: UUID, parent_run_id: UUID | None = None,
                       tags: list[str] | None = None, **kwargs: Any) -> None:
        if parent_run_id is None and EPISODE_TAG in (tags or []):
            self._roots[run_id] = run_id
            self._versions[run_id] = []
            self._inputs[run_id] = dict(inputs) if isinstance(inputs, dict) else {}
        else:
            self._follow(run_id, parent_run_id)

    def on_chat_model_start(self, serialized, messages, *, run_id: UUID,
                            parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._follow(run_id, parent_run_id)

    def on_tool_start(self, serialized, input_str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self._follow(run_id, parent_run_id)

    def _follow(self, run_id: UUID, parent_run_id: UUID | None) -> None:
        if parent_run_id in self._roots:
            self._roots[run_id] = self._roots[parent_run_id]

    def on_llm_end(self, response, *, run_id: UUID, parent_run_id: UUID | None = None,
                   **kwargs: Any) -> None:
        root = self._roots.pop(run_id, None)
        if root is None:
            return
        version = (response.llm_output or {}).get("model_version")
        if version is None and response.generations and response.generations[0]:
            message = getattr(response.generations[0][0], "message", None)
            version = getattr(message, "response_metadata", {}).get("model_version")
        if version:
            self._versions[root].append(version)

    # -- writing ------------------------------------------------------------------------------

    def on_chain_end(self, outputs, *, run_id: UUID, parent_run_id: UUID | None = None,
                     **kwargs: Any) -> None:
        if self._roots.get(run_id) != run_id:
            self._roots.pop(run_id, None)
            return
        self._write(run_id, dict(outputs))

    def on_chain_error(self, error: BaseException, *, run_id: UUID,
                       parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        if self._roots.get(run_id) != run_id:
            self._roots.pop(run_id, None)
            return
        inputs = self._inputs.get(run_id, {})
        record = {
            "messages": inputs.get("messages") or [{"role": "user", "content": str(inputs.get("question", ""))}],
            "outcome": "failure",
            "skill": inputs.get("skill"),
            "model_version": inputs.get("model_version"),
            "meta": {"status": "crashed", "error": f"{type(error).__name__}: {error}"},
        }
        self._write(run_id, record)

    def _write(self, run_id: UUID, record: dict) -> None:
        versions = self._versions.pop(run_id, [])
        self._inputs.pop(run_id, None)
        for rid in [r for r, root in self._roots.items() if root == run_id]:
            del self._roots[rid]
        meta = dict(record.get("meta") or {})
        if len(set(versions)) > 1:  # cannot happen with a pinned model; recorded if it does
            meta["model_versions"] = versions
        try:
            episode_id = self.memory.record_episode(
                record["messages"],
                record.get("tool_calls"),
                record.get("answer"),
                outcome=record.get("outcome", "unknown"),
                source=self.source,
                model_version=versions[0] if versions else record.get("model_version"),
                skill=record.get("skill"),
                meta=meta,
                learned_turn=record.get("learned_turn"),
            )
        except Exception as exc:  # the user still gets the answer; the loop reports the loss
            log.warning("episode not recorded: %s", exc)
            self.errors[run_id] = exc
            return
        self.episode_ids[run_id] = self.last_episode_id = episode_id
