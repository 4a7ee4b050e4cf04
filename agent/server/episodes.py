"""Every completion is an episode; the response id is how a client names it in feedback.

The id (`chatcmpl-<hex>`) exists before the first streamed chunk, the episode row only once the
reply is complete, so the id is stored in the episode's meta (`response_id`) and looked up from
there; the learned turn (the reply, last in the stored conversation) is recorded as
`meta.learned_turn`, which the feedback rule reads.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import OrderedDict

from agent.feedback import skill_of
from agent.server.engine import Job, Reply

log = logging.getLogger(__name__)
ID_PREFIX = "chatcmpl-"
KEEP_IDS = 10_000  # recent response ids resolved without a query


def new_response_id() -> str:
    return f"{ID_PREFIX}{uuid.uuid4().hex}"


class EpisodeLog:
    """Writes completion episodes through `memory` and resolves response ids to episode ids."""

    def __init__(self, memory):
        self.memory = memory
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, response_id: str, job: Job, reply: Reply, *, cancelled: bool = False) -> int | None:
        """Store the conversation and its reply; None (and a log line) if memory refused it,
        so the client still gets its answer."""
        turn: dict = {"role": "assistant", "content": reply.content}
        calls = []
        for c in reply.calls:
            try:
                calls.append({"name": c["name"], "arguments": json.loads(c["arguments"])})
            except ValueError:
                pass
        if calls:
            turn["tool_calls"] = calls
        messages = [*job.messages, turn]
        skill = skill_of(self.memory, calls) or skill_of(self.memory, [{"name": t["name"]} for t in job.tools])
        failed = bool(reply.invalid) or cancelled
        meta = {"response_id": response_id, "via": "http", "learned_turn": len(messages) - 1,
                "status": "cancelled" if cancelled else ("tool_calls" if calls else "answered"),
                "finish_reason": reply.finish, "usage": reply.usage, "tools": [t["name"] for t in job.tools],
                "tool_choice": job.choice, "invalid_calls": reply.invalid, "constrained": reply.constrained}
        if reply.answer_source is not None:
            meta.update(answer_source=reply.answer_source, model_text=reply.raw)
        if reply.withheld is not None:
            meta["withheld"] = reply.withheld
        if reply.dropped:
            meta["dropped_arguments"] = reply.dropped
        try:
            episode_id = self.memory.record_episode(
                messages, calls, None if calls else reply.content,
                outcome="failure" if failed else "unknown", source="live",
                model_version=reply.version, skill=skill, meta=meta)
        except Exception as exc:  # the client still gets its answer; the loss is logged
            log.warning("episode for %s not recorded: %s", response_id, exc)
            return None
        with self._lock:
            self._recent[response_id] = episode_id
            while len(self._recent) > KEEP_IDS:
                self._recent.popitem(last=False)
        return episode_id

    def resolve(self, ident: str | int) -> int | None:
        """The episode id for a response id (or an episode id given as a number)."""
        if isinstance(ident, int) and not isinstance(ident, bool):
            return ident
        text = str(ident).strip()
        if text.isdigit():
            return int(text)
        with self._lock:
            if text in self._recent:
                return self._recent[text]
        if not text.startswith(ID_PREFIX):
            return None
        # older than the map, or answered by another server process on this home
        return self.memory.episode_by_response_id(text)
