"""The agent loop: one question -> (recall, generate, validate, run tools, feed back)* -> answer.

An episode, step by step:
1. Pin the model: the chat model's current version serves the whole episode (a promotion during
   it takes effect at the next episode).
2. Recall: up to k similar demonstrations from memory go in front of the question as earlier
   exchanges (user -> assistant tool call). k=0 turns this off (evaluation runs without it).
3. Generate; check every call against the tool schemas. Valid calls run (tools.execute: errors
   and oversized outputs become text), and the results go back as tool messages.
4. Invalid calls (malformed JSON, unknown tool, wrong argument types) are answered with an
   error tool message: one repair turn. Invalid again -> the episode fails, clearly.
5. Stop at a reply with no calls (the answer) or at the turn limit (a failure).
The episode is written to memory by `run` itself, as a memory.records.Episode naming its learned
turn and the version that produced it (docs/ARCHITECTURE.md, "The loop"). The root chain run and
its callbacks stay, for users' own tracers (agent.recorder.EpisodeRecorder is one).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManager
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from agent.answer import answer_after_tools  # issue 13 hook
from agent.chat_model import LocalChatModel, from_dicts, text_of, to_dicts
from agent.feedback import judge, prompt_of, skill_of
from agent.recorder import EPISODE_TAG
from agent.routing import Router
from agent.tools import (
    MAX_OUTPUT_CHARS,
    Tool,
    as_tools,
    call_error,
    execute,
    neutralise,
    special_markers,
    validate_calls,
)
from memory.records import Episode as EpisodeRecord

log = logging.getLogger(__name__)


@dataclass
class AgentConfig:
    max_turns: int = 6  # model calls per episode, the repair turn included
    recall_k: int = 3  # demonstrations recalled into the context; 0 = none (evaluation)
    repair_turns: int = 1  # turns that show the model its invalid call before failing
    max_tool_output_chars: int = MAX_OUTPUT_CHARS
    system: str | None = None  # None: the prompt format's default (what the learner trains on)
    # offer only the tools of skills whose demonstrations the question resembles (agent.routing);
    # False: every tool, every question. Never when the episode names its skill.
    route_tools: bool = False
    # recall demonstrations of skills the serving model was already trained on. Off: in context
    # they cost a learned skill accuracy (benchmarks/results/README.md, "Recall into context").
    recall_learned: bool = False


@dataclass
class Episode:
    """What happened for one question; `id` is its row in memory (None when not recorded)."""

    question: str
    model_version: str | None
    skill: str | None = None
    messages: list[dict] = field(default_factory=list)  # the conversation, recall excluded
    tool_calls: list[dict] = field(default_factory=list)  # executed [{"name", "arguments"}]
    tool_results: list[dict] = field(default_factory=list)  # [{"name", "arguments", "content", "status"}]
    invalid_calls: list[dict] = field(default_factory=list)  # [{"turn", "name", "raw", "error"}]
    answer: str | None = None
    status: str = "running"  # answered | failed | turn_limit | crashed
    error: str | None = None
    recalled: list[int] = field(default_factory=list)  # demonstration ids put in the context
    recall_skipped: list[str] = field(default_factory=list)  # skills not recalled: the model learned them
    offered: list[str] | None = None  # tool names offered; None: every tool (not routed)
    withheld: list[dict] = field(default_factory=list)  # [{"turn", "reply"}]: calls not grounded (agent.grounding)
    dropped: list[dict] = field(default_factory=list)  # [{"turn", "name", "arguments"}]: invented optional values
    turns: int = 0
    usage: dict = field(default_factory=lambda: {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0})
    learned_turn: int | None = None  # index in `messages` of the turn a demonstration would learn
    id: int | None = None

    @property
    def outcome(self) -> str:
        """The memory outcome before anyone judges it: failures are known, answers are not."""
        return "unknown" if self.status == "answered" else "failure"

    def to_dict(self) -> dict:
        return {**asdict(self), "outcome": self.outcome}

    def record(self) -> dict:
        """The memory record as a dict (memory.records.Episode's fields)."""
        return {
            "messages": self.messages,
            "learned_turn": self.learned_turn,
            "tool_calls": self.tool_calls,
            "answer": self.answer,
            "outcome": self.outcome,
            "skill": self.skill,
            "model_version": self.model_version,
            "meta": {"status": self.status, "error": self.error, "turns": self.turns,
                     "recalled": self.recalled, "recall_skipped": self.recall_skipped, "offered": self.offered,
                     "withheld": self.withheld, "dropped_arguments": self.dropped,
                     "invalid_calls": self.invalid_calls,
                     "tool_results": [{k: r[k] for k in ("name", "status", "truncated")} for r in self.tool_results],
                     "usage": self.usage},
        }


def demonstration_messages(demos: Sequence[dict]) -> list[dict]:
    """Recalled demonstrations as earlier exchanges: their conversation, then the demonstrated
    assistant turn (system messages dropped: only the real conversation may have one)."""
    out: list[dict] = []
    for d in demos:
        out += [m for m in d["messages"] if m["role"] != "system"]
        turn: dict = {"role": "assistant", "content": d.get("content") or ""}
        if d.get("tool_calls"):
            turn["tool_calls"] = [{"name": c["name"], "arguments": c["arguments"]} for c in d["tool_calls"]]
        out.append(turn)
    return out


class Agent:
    """Answers questions with `llm` and `tools`; remembers and learns through `memory`.

    tools: langchain tools, (schema, callable) pairs, schema dicts (callable but not runnable
    here), or agent.tools.Tool. memory: a memory.store.Memory, or None to neither recall nor
    record.
    """

    def __init__(
        self,
        llm: LocalChatModel,
        tools: Sequence[Any] = (),
        *,
        memory=None,
        skill: str | None = None,
        config: AgentConfig | None = None,
        callbacks: Sequence[Any] = (),
        router: Router | None = None,
    ):
        self.llm = llm
        self.tools: list[Tool] = as_tools(tools)
        self.memory = memory
        self.skill = skill
        self.config = config or AgentConfig()
        self.callbacks = list(callbacks)
        self.last: Episode | None = None
        # with route_tools: `router`, else one knowing only the demonstrations (no "no tool" examples)
        self.router = router

    @property
    def schemas(self) -> list[dict]:
        return [t.schema for t in self.tools]

    # -- one episode ----------------------------------------------------------------------------

    def run(self, question: str, *, recall: int | None = None, skill: str | None = None,
            callbacks: Sequence[Any] = ()) -> Episode:
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty")
        cfg = self.config
        llm = self.llm.pinned()
        skill = skill or self.skill
        episode = Episode(question=question, model_version=llm.version, skill=skill)
        k = cfg.recall_k if recall is None else recall
        tools = self._offered(question, skill, episode)
        demos = self._recall(question, k, skill, episode) if self.memory is not None and k > 0 else []
        if episode.offered is not None:  # routed: no demonstration of a tool the model is not offered
            demos = [d for d in demos if {c["name"] for c in d.get("tool_calls") or []} <= set(episode.offered)]
        episode.recalled = [d["id"] for d in demos]
        head: list[BaseMessage] = [SystemMessage(cfg.system)] if cfg.system else []
        convo: list[BaseMessage] = [HumanMessage(question)]
        prefix = head + from_dicts(demonstration_messages(demos))

        manager = CallbackManager.configure(inheritable_callbacks=[*self.callbacks, *callbacks],
                                            local_tags=[EPISODE_TAG])
        run = manager.on_chain_start({"name": "agent_episode"},
                                     {"question": question, "skill": skill, "model_version": llm.version,
                                      "messages": to_dicts(head + convo)},
                                     name="agent_episode")
        try:
            self._loop(llm, episode, prefix, convo, {"callbacks": run.get_child()}, len(head), tools)
        except BaseException as exc:
            run.on_chain_error(exc)
            episode.status, episode.error = "crashed", f"{type(exc).__name__}: {exc}"
            episode.messages, episode.learned_turn = to_dicts(head + [HumanMessage(question)]), None
            self._write({**episode.record(), "tool_calls": [], "answer": None,
                         "meta": {"status": "crashed", "error": episode.error}}, episode)
            raise
        episode.messages = to_dicts(head + convo)
        run.on_chain_end(episode.record())
        self._write(episode.record(), episode)
        self.last = episode
        return episode

    def _recall(self, question: str, k: int, skill: str | None, episode: Episode) -> list[dict]:
        """The demonstrations put before the question: the k most similar, none of a skill the
        serving model learned (unless config.recall_learned)."""
        if not self.config.recall_learned and episode.model_version is not None:
            episode.recall_skipped = self.memory.skills_learned_by(episode.model_version)
        return self.memory.recall(question, k=k, skill=skill, exclude=episode.recall_skipped)

    def _offered(self, question: str, skill: str | None, episode: Episode) -> list[Tool]:
        """The tools this question is offered: all of them, or the routed ones (agent.routing)."""
        if not (self.config.route_tools and self.memory is not None and self.tools and skill is None):
            return self.tools
        if self.router is None:
            self.router = Router(self.memory)
        offered = set(self.router.route(question, [t.name for t in self.tools]).offered)
        episode.offered = [t.name for t in self.tools if t.name in offered]
        return [t for t in self.tools if t.name in offered]

    def _write(self, record: dict, episode: Episode) -> None:
        """The episode's one write to memory (memory.records.Episode through Memory.add_episode).
        A refused record is logged, not raised: the user still gets the answer."""
        if self.memory is None:
            return
        try:
            episode.id = self.memory.add_episode(EpisodeRecord.parse(record, "episode"))
        except Exception as exc:
            log.warning("episode not recorded: %s", exc)

    def _loop(self, llm: LocalChatModel, episode: Episode, prefix: list[BaseMessage],
              convo: list[BaseMessage], config: Any, offset: int, tools: list[Tool]) -> None:
        """`offset`: messages before `convo` in the recorded conversation (the system message)."""
        cfg = self.config
        bound = llm.bind_tools([t.schema for t in tools]) if tools else llm
        by_name = {t.name: t for t in tools}
        markers = special_markers(llm.runtime.current().tokenizer)
        repairs = 0
        for turn in range(1, cfg.max_turns + 1):
            episode.turns = turn
            ai: AIMessage = bound.invoke(prefix + convo, config=config)
            convo.append(ai)
            if (withheld := (ai.response_metadata or {}).get("withheld_call")) is not None:
                episode.withheld.append({"turn": turn, "reply": withheld})
            episode.dropped += [{"turn": turn, **d} for d in (ai.response_metadata or {}).get("dropped_arguments", [])]
            for key in episode.usage:
                episode.usage[key] += (ai.usage_metadata or {}).get(key, 0)
            valid, invalid = _checked_calls(ai, by_name)
            if episode.learned_turn is None and (valid or not invalid):
                episode.learned_turn = offset + len(convo) - 1  # the first valid call, else the answer
            if not valid and not invalid:
                episode.answer, episode.status = text_of(ai.content), "answered"
                if episode.tool_results:  # issue 13 hook: after tool results, a sentence (agent.answer)
                    episode.answer = answer_after_tools(episode.answer, episode.tool_results).text
                    convo[-1] = AIMessage(content=episode.answer, usage_metadata=ai.usage_metadata,
                                          response_metadata=ai.response_metadata)
                return
            for call in valid:
                tool = by_name[call["name"]]
                result = execute(tool, copy.deepcopy(call["args"]), max_chars=cfg.max_tool_output_chars,
                                 markers=markers, config=config)
                convo.append(ToolMessage(result.content, tool_call_id=call["id"], name=tool.name,
                                         status=result.status))
                episode.tool_calls.append({"name": tool.name, "arguments": call["args"]})
                episode.tool_results.append({"name": tool.name, "arguments": call["args"], "content": result.content,
                                             "status": result.status, "truncated": result.truncated})
            if not invalid:
                continue
            episode.invalid_calls += [{"turn": turn, "name": c.get("name"), "raw": c.get("args"),
                                       "error": c["error"]} for c in invalid]
            if repairs >= cfg.repair_turns:
                episode.status = "failed"
                episode.error = ("invalid tool call after the repair turn: " if repairs else "invalid tool call: ") \
                    + "; ".join(c["error"] for c in invalid)
                return
            repairs += 1
            for c in invalid:
                text = f"Error: invalid tool call: {c['error']}. Correct it: use only the listed tools, their parameters and valid JSON."
                convo.append(ToolMessage(neutralise(text, markers), tool_call_id=c["id"], name=c.get("name"),
                                         status="error"))
        episode.status = "turn_limit"
        episode.error = f"no final answer within {cfg.max_turns} model turns"

    # -- feedback -------------------------------------------------------------------------------

    def _memory(self):
        if self.memory is None:
            raise RuntimeError("this agent has no memory to keep feedback in")
        return self.memory

    def _episode_id(self, episode_id: int | None) -> int:
        if episode_id is not None:
            return episode_id
        if self.last is not None and self.last.id is not None:
            return self.last.id
        # Never "the newest episode in the database": it may be another client's (issue 13).
        raise LookupError("this agent has answered nothing yet: ask something first, or name the episode id")

    def mark(self, good: bool, note: str | None = None, episode_id: int | None = None) -> dict:
        """Judge an episode (this agent's last by default) by the one feedback rule (agent.feedback.judge):
        a good one becomes a demonstration of its skill when the skill is known (named, or the
        one owning the tools it called); a bad one retracts a demonstration made from it."""
        return judge(self._memory(), self._episode_id(episode_id), "good" if good else "bad", note=note)

    def teach(self, calls: Any, *, episode_id: int | None = None, skill: str | None = None) -> dict:
        """Store the correct call(s) for an episode's question (the last by default) as a taught
        demonstration, after checking them against the tool schemas. Default: this agent's last episode."""
        memory = self._memory()
        eid = self._episode_id(episode_id)
        ep = memory.episode(eid)
        calls = validate_calls(calls, self.tools)
        prompt = prompt_of(ep)  # the messages before its learned turn
        skill = skill or ep.get("skill") or skill_of(memory, calls)
        if skill is None:
            raise ValueError("no skill owns these tools; name the skill to teach")
        demo_id, created = memory.add_demonstration(
            skill, prompt, calls, source="taught", episode_id=eid,
            provenance={"episode_id": eid, "model_version": ep.get("model_version"), "via": "teach"},
        )
        if ep["outcome"] == "unknown" and (ep.get("tool_calls") or []) != calls:
            memory.set_outcome(eid, "failure", "corrected with teach")
        return {"episode_id": eid, "demonstration_id": demo_id, "created": created, "skill": skill, "tool_calls": calls}


def _checked_calls(ai: AIMessage, tools: dict[str, Tool]) -> tuple[list[dict], list[dict]]:
    """(valid tool calls, invalid ones with an `error`), re-checking every call against the
    schemas (a streamed or foreign message may carry calls nobody validated)."""
    valid: list[dict] = []
    invalid: list[dict] = []
    for c in ai.tool_calls:
        error = call_error(c["name"], c["args"], tools)
        if error:
            invalid.append({"name": c["name"], "args": c["args"], "id": c["id"], "error": error})
        else:
            valid.append(dict(c))
    for bad in ai.invalid_tool_calls:
        invalid.append({"name": bad.get("name"), "args": bad.get("args"), "id": bad.get("id"),
                        "error": bad.get("error") or "the call could not be parsed"})
    return valid, invalid
