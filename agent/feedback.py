"""The feedback rule, one function for every front end (HTTP server, `chat`, the stdin daemon).

Feedback always names its episode: nothing here judges "the latest" episode, which in a shared
memory may belong to another client or process.
- good: the episode succeeded; its calls become a demonstration of the skill that owns them.
- bad: the episode failed; a demonstration made from it earlier (a /good taken back) is retracted,
  so it is neither recalled nor trained on again. A correction someone taught stays.
- tool_calls: the right call(s) for the episode's question, checked against the skill's tool
  schemas and kept as a taught demonstration (the episode is a failure when they differ from
  what it did).
"""

from __future__ import annotations

from typing import Any

from memory.records import ToolCall, demonstration_of
from memory.validate import ValidationError

OUTCOMES = {"good": "success", "bad": "failure"}


def judge(memory, episode_id: int, outcome: str | None = None, *, note: str | None = None,
          tool_calls: list[dict] | None = None, skill: str | None = None) -> dict:
    """Apply feedback to episode `episode_id`; returns what changed."""
    if isinstance(episode_id, bool) or not isinstance(episode_id, int):
        raise ValueError(f"feedback must name its episode by id (got {episode_id!r})")
    if outcome is None and not tool_calls:
        raise ValueError("feedback needs an outcome ('good' or 'bad') or the right tool_calls")
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"outcome must be 'good' or 'bad' (got {outcome!r})")
    with memory.write():  # all of it or none: a failure below leaves the episode as it was
        return _judge(memory, episode_id, outcome, note, tool_calls, skill)


def _judge(memory, episode_id: int, outcome: str | None, note: str | None,
           tool_calls: list[dict] | None, skill: str | None) -> dict:
    ep = memory.episode(episode_id)  # NotFoundError (a KeyError) names the missing id
    out: dict[str, Any] = {"episode_id": episode_id, "outcome": None, "demonstration_id": None,
                           "retracted": [], "taught_id": None}
    if tool_calls:
        calls = _calls(tool_calls)
        skill_name = skill or ep.get("skill") or skill_of(memory, calls)
        if skill_name is None:
            raise ValueError("no installed skill owns these tools; install its pack or name the skill")
        demo_id, created = memory.add_demonstration(
            skill_name, prompt_of(ep), calls, source="taught", episode_id=episode_id,
            provenance={"episode_id": episode_id, "model_version": ep.get("model_version"), "via": "teach"},
        )
        out.update(taught_id=demo_id, created=created, skill=skill_name)
        if outcome is None:
            outcome = "good" if calls == _own_calls(ep) else "bad"
    status = OUTCOMES[outcome]
    memory.set_outcome(episode_id, status, note)
    out["outcome"] = status
    if status == "failure":
        out["retracted"] = memory.retract_demonstrations(episode_id)
    elif out["taught_id"] is None:
        skill_name = skill or ep.get("skill") or skill_of(memory, _own_calls(ep))
        if skill_name is None:
            out["note"] = "not kept as a demonstration: no skill owns its tool calls"
        else:
            try:  # a savepoint: a refused promotion undoes only itself
                out["demonstration_id"] = memory.promote_episode(episode_id, skill_name)
                out["skill"] = skill_name
            except ValueError as exc:
                out["note"] = f"not kept as a demonstration: {exc}"
    return out


def skill_of(memory, calls: list[dict]) -> str | None:
    """The installed skill whose tools include every called tool (None without calls)."""
    names = {c["name"] for c in calls}
    if not names:
        return None
    for s in memory.list_skills():
        if names <= {t["name"] for t in s["tools"]}:
            return s["name"]
    return None


def _calls(tool_calls: object) -> list[dict]:
    """The calls someone taught (one call or a list), by memory.records.ToolCall's rules."""
    calls = [tool_calls] if isinstance(tool_calls, dict) else tool_calls
    if not isinstance(calls, list):
        raise ValidationError('tool_calls: give [{"name": <tool>, "arguments": {...}}, ...]')
    return [ToolCall.parse({"arguments": {}, **c} if isinstance(c, dict) else c, f"tool_calls[{i}]").plain()
            for i, c in enumerate(calls)]


def prompt_of(ep: dict) -> list[dict]:
    """The conversation before the turn being judged: the messages before the episode's learned
    turn, all of them when it names none (memory.records.demonstration_of, the one rule)."""
    return demonstration_of(ep["messages"], ep.get("tool_calls") or [], ep.get("answer"),
                            ep.get("learned_turn"))["messages"]


def _own_calls(ep: dict) -> list[dict]:
    return [{"name": c["name"], "arguments": c.get("arguments", {})} for c in ep.get("tool_calls") or []]
