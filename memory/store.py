"""`Memory`: the episodic memory in `<home>/memory.db`, one object with the methods everyone calls.

The work is done by one repository per concept, all writing through one Database
(memory.database: one `BEGIN IMMEDIATE` write path):

    catalog         skills, tools, eval cases        memory.catalog
    episode_repo    episodes                         memory.episodes
    demo_repo       demonstrations and recall        memory.demonstrations
    run_repo        learning runs, gate reports      memory.runs

One `Memory` per process (or per thread that wants its own connection); an instance may also be
shared between threads. Input is validated as typed records (memory.records) before a row is
written; a rejected call writes nothing (docs/ARCHITECTURE.md, "Memory").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from memory.catalog import Catalog
from memory.database import Database, NotFoundError, is_locked_error
from memory.demonstrations import ATTEMPTS, UNLEARNED, Demonstrations
from memory.episodes import Episodes
from memory.home import absolute, relative
from memory.records import Episode, Skill
from memory.runs import RUN_FIELDS, RUN_STATUSES, Runs
from memory.validate import OUTCOMES, ValidationError

DEMOS_BY_SKILL = ("SELECT s.name, count(d.id) FROM skills s LEFT JOIN demonstrations d ON d.skill_id = s.id "
                  "GROUP BY s.id ORDER BY s.name")

__all__ = ["Memory", "NotFoundError", "ValidationError", "RUN_STATUSES", "RUN_FIELDS", "is_locked_error"]


class Memory:
    """The episodic memory (docs/ARCHITECTURE.md, "Memory")."""

    def __init__(self, home: str | Path | None = None):
        self.database = Database(home)
        self.home, self.path, self.db = self.database.home, self.database.path, self.database.db
        self.catalog = Catalog(self.database)
        self.episode_repo = Episodes(self.database, self.catalog)
        self.demo_repo = Demonstrations(self.database, self.catalog)
        self.run_repo = Runs(self.database, self.catalog)

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction; nested, a savepoint (see memory.database.Database.write)."""
        with self.database.write() as db:
            yield db

    @contextmanager
    def snapshot(self) -> Iterator[sqlite_utils.Database]:
        with self.database.snapshot() as db:
            yield db

    # -- skills, tools, eval cases --------------------------------------------------------------

    def add_skill(self, name: str, description: str, tools: list[dict]) -> int:
        """Create or update the skill `name`; its tool set becomes exactly `tools`."""
        return self.catalog.add(Skill.parse({"name": name, "description": description, "tools": tools}, "skill"))

    def get_skill(self, name: str) -> dict | None:
        return self.catalog.get(name)

    def list_skills(self) -> list[dict]:
        return self.catalog.all()

    def tools_for(self, skill: str | None = None) -> list[dict]:
        """Tool schemas in the flat OpenAI function form, in pack order (all skills: by skill name)."""
        return self.catalog.tools_for(skill)

    def served_tools(self) -> list[dict]:
        """The tool list the agent serves with every skill installed: one system prompt with
        all of them (memory.catalog.Catalog.served; cli.agent_cmd.skill_tools, the learner's
        retention prompts)."""
        return [tool for _, tool in self.catalog.served()]

    def served_tools_by_skill(self) -> list[tuple[str, dict]]:
        """`served_tools`, each with the skill it comes from."""
        return self.catalog.served()

    def add_eval_case(self, skill: str, messages: list[dict], expected: list[dict]) -> int:
        """A held-out case of `skill`; an identical case returns the existing id."""
        with self.write() as db:
            return self.catalog.add_eval_case(db, skill, {"messages": messages, "expected": expected}, "eval_case")[0]

    def eval_cases(self, skill: str) -> list[dict]:
        return self.catalog.eval_cases(skill)

    # -- episodes -------------------------------------------------------------------------------

    def add_episode(self, episode: Episode) -> int:
        """Store an episode record (the agent's own write path); returns its id."""
        return self.episode_repo.add([("episode", episode)])[0]

    def record_episode(
        self,
        messages: list[dict],
        tool_calls: list[dict] | None = None,
        answer: str | None = None,
        *,
        outcome: str = "unknown",
        source: str = "live",
        model_version: str | None = None,
        skill: str | None = None,
        meta: dict | None = None,
        learned_turn: int | None = None,
    ) -> int:
        """Store one conversation the agent had (or was taught); returns its id. `learned_turn`
        names the assistant turn a demonstration of it learns (memory.records.Episode)."""
        if learned_turn is None and isinstance(meta, dict) and type(meta.get("learned_turn")) is int:
            learned_turn = meta["learned_turn"]  # the HTTP server's spelling, until it passes the argument
        episode = dict(messages=messages, tool_calls=tool_calls, answer=answer, outcome=outcome, source=source,
                       model_version=model_version, skill=skill, meta=meta, learned_turn=learned_turn)
        return self.episode_repo.add([("episode", episode)])[0]

    def record_episodes(self, episodes: Iterable[dict]) -> list[int]:
        """Store many episodes (dicts with record_episode's arguments) in one transaction;
        one invalid episode rejects them all."""
        return self.episode_repo.add([(f"episodes[{i}]", e) for i, e in enumerate(episodes)])

    def set_outcome(self, episode_id: int, outcome: str, note: str | None = None) -> None:
        """Judge an episode (success | failure | unknown), with an optional note saying why."""
        self.episode_repo.set_outcome(episode_id, outcome, note)

    def episode(self, episode_id: int) -> dict:
        return self.episode_repo.get(episode_id)

    def episode_by_response_id(self, response_id: str) -> int | None:
        """The id of the episode a chat completion answered as `response_id`, or None."""
        return self.episode_repo.by_response_id(response_id)

    def last_episode(self) -> dict | None:
        return self.episode_repo.last()

    def episodes(self, outcome: str | None = None, limit: int = 100) -> list[dict]:
        """Most recent first, optionally only one outcome."""
        return self.episode_repo.recent(outcome, limit)

    # -- demonstrations -------------------------------------------------------------------------

    def add_demonstration(
        self,
        skill: str,
        messages: list[dict],
        tool_calls: list[dict] | None = None,
        content: str | None = None,
        *,
        source: str = "imported",
        provenance: dict | None = None,
        episode_id: int | None = None,
    ) -> tuple[int, bool]:
        """Store a demonstration of `skill`; an exact duplicate is kept once and counted.

        Returns (id, created): created is False when it was a duplicate of that existing id.
        """
        demo = dict(messages=messages, tool_calls=tool_calls, content=content, source=source,
                    provenance=provenance, episode_id=episode_id)
        return self.demo_repo.add(skill, [("demonstration", demo)])[0]

    def add_demonstrations(self, skill: str, demos: Iterable[dict]) -> list[tuple[int, bool]]:
        """Many demonstrations (dicts with add_demonstration's arguments) in one transaction;
        one invalid demonstration rejects them all."""
        return self.demo_repo.add(skill, [(f"demonstrations[{i}]", d) for i, d in enumerate(demos)])

    def promote_episode(self, episode_id: int, skill: str) -> int:
        """Turn a successful episode into a demonstration of `skill`: the turn it names as learned
        (memory.records.Episode.learned_turn) after the messages before it. Promoting the same
        episode again returns the same demonstration."""
        with self.write():
            return self.demo_repo.from_episode(self.episode(episode_id), skill)

    def retract_demonstrations(self, episode_id: int) -> list[int]:
        """Delete the demonstrations made from this episode's own turn (a taught correction,
        provenance via "teach", stays); returns their ids. They leave recall and the unlearned set."""
        return self.demo_repo.retract(episode_id)

    def demonstration(self, demo_id: int) -> dict:
        return self.demo_repo.get(demo_id)

    def demonstrations(self, skill: str | None = None, ids: list[int] | None = None) -> list[dict]:
        """All demonstrations (of `skill`), or exactly those with these `ids`, in that order."""
        if ids is not None:
            return self.demo_repo.many(ids)
        return self.demo_repo.all(skill)

    def demonstration_counts(self) -> dict[str, int]:
        """Demonstrations per installed skill, by name (0 for a skill with none yet)."""
        with self.snapshot() as db:
            return dict(db.execute(DEMOS_BY_SKILL).fetchall())

    def recall(self, query: str, k: int = 3, skill: str | None = None, *, exact: bool = False,
               exclude: Iterable[str] = ()) -> list[dict]:
        """The k demonstrations most relevant to `query` by BM25, best first, none of the skills
        in `exclude` (memory.demonstrations)."""
        return self.demo_repo.recall(query, k, skill, exact=exact, exclude=exclude)

    def skills_learned_by(self, version: str) -> list[str]:
        """The skills `version` (or a version it descends from) was trained on, by name."""
        return self.demo_repo.skills_learned_by(version)

    def unlearned_demonstrations(self, skill: str | None = None, limit: int | None = None,
                                 attempts: int = ATTEMPTS) -> list[dict]:
        """Demonstrations no learning run has learned yet, oldest first: a run the gate blocked
        (or that failed after training) gives its back until `attempts` such runs have tried them
        (memory.demonstrations.UNLEARNED)."""
        return self.demo_repo.unlearned(skill, limit, attempts)

    def learned_demonstrations(self) -> list[dict]:
        """Demonstrations a promoted (or, outside the gate, succeeded) run trained on: what the
        models learned, never a blocked or failed run's alone (memory.demonstrations.LEARNED)."""
        return self.demo_repo.learned()

    def mark_used(self, demo_ids: list[int], run_id: int) -> None:
        """Record that learning run `run_id` trained on these demonstrations (idempotent)."""
        self.demo_repo.mark_used(demo_ids, run_id)

    # -- learning runs & gate reports ----------------------------------------------------------

    def start_run(self, method: str, config: dict, skill: str | None = None,
                  demonstration_ids: list[int] | None = None) -> int:
        """A learning run begins (status 'running'), optionally with the demonstrations it trains on."""
        return self.run_repo.start(method, config, skill, demonstration_ids)

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Change fields of a run (memory.runs.Runs.update)."""
        self.run_repo.update(run_id, **fields)

    def finish_run(self, run_id: int, status: str, metrics: dict | None = None, error: str | None = None) -> None:
        """End a run with a final status (anything but 'running')."""
        if status == "running":
            raise ValidationError("run.status: a finished run needs a final status, not 'running'")
        fields: dict[str, Any] = {"status": status}
        if metrics is not None:
            fields["metrics"] = metrics
        if error is not None:
            fields["error"] = error
        self.update_run(run_id, **fields)

    def run(self, run_id: int) -> dict:
        return self.run_repo.get(run_id)

    def runs(self, limit: int = 20) -> list[dict]:
        """Most recent first."""
        return self.run_repo.recent(limit)

    def add_gate_report(self, run_id: int, decision: str, summary: dict, path: str | None) -> int:
        """The report's path (and summary["report"]) are stored relative to the home, so a home
        copied or moved keeps its reports; gate_reports gives them back absolute."""
        if isinstance(summary, dict) and isinstance(summary.get("report"), str):
            summary = {**summary, "report": relative(summary["report"], self.home)}
        return self.run_repo.add_report(run_id, decision, summary, relative(path, self.home))

    def gate_reports(self, run_id: int | None = None) -> list[dict]:
        out = []
        for r in self.run_repo.reports(run_id):
            r = {**r, "path": absolute(r.get("path"), self.home)}
            if isinstance(r.get("summary"), dict) and isinstance(r["summary"].get("report"), str):
                r["summary"] = {**r["summary"], "report": absolute(r["summary"]["report"], self.home)}
            out.append(r)
        return out

    # -- whole-memory views ---------------------------------------------------------------------

    def stats(self) -> dict:
        """Counts of everything, from one consistent snapshot, plus the file sizes."""
        with self.snapshot() as db:
            def count(sql: str, params: list | None = None) -> int:
                return db.execute(sql, params or []).fetchone()[0]

            out = {
                "skills": db["skills"].count,
                "tools": db["tools"].count,
                "episodes": db["episodes"].count,
                "episodes_by_outcome": {o: 0 for o in OUTCOMES} | dict(
                    db.execute("SELECT outcome, count(*) FROM episodes GROUP BY outcome").fetchall()),
                "demonstrations": db["demonstrations"].count,
                "demonstrations_unlearned": count(
                    "SELECT count(*) FROM demonstrations d WHERE " + UNLEARNED, [ATTEMPTS]),
                "duplicates_seen": count("SELECT coalesce(sum(duplicates), 0) FROM demonstrations"),
                "demonstrations_by_skill": dict(db.execute(DEMOS_BY_SKILL).fetchall()),
                "eval_cases": db["eval_cases"].count,
                "learn_runs": db["learn_runs"].count,
                "runs_by_status": dict(db.execute(
                    "SELECT status, count(*) FROM learn_runs GROUP BY status ORDER BY status").fetchall()),
                "gate_reports": db["gate_reports"].count,
            }
        wal = self.path.with_name(self.path.name + "-wal")
        out["db_bytes"] = self.path.stat().st_size
        out["wal_bytes"] = wal.stat().st_size if wal.exists() else 0
        return out

    def export_jsonl(self, path: str | Path) -> int:
        """Write skills, demonstrations and eval cases to a JSONL file; returns the record count."""
        from memory.transfer import export_jsonl

        return export_jsonl(self, path)

    def import_jsonl(self, path: str | Path) -> dict:
        """Read a file written by export_jsonl (or a hand-written one); all or nothing."""
        from memory.transfer import import_jsonl

        return import_jsonl(self, path)

    def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (after big batches)."""
        self.database.checkpoint()
