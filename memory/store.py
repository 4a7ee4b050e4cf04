"""The episodic memory: skills, episodes, demonstrations, eval cases, learning runs, gate reports.

One `Memory` per process (or per thread that wants its own connection); an instance may also be
shared between threads, its calls are serialised by a lock. Every write is one short
`BEGIN IMMEDIATE` transaction: the write lock is taken up front, so a writer waits on
busy_timeout instead of failing with "database is locked" when it would have had to upgrade a
read lock (which SQLite refuses to wait for). Readers in other processes never block writers
(WAL). Input is validated (memory.validate) before a row is written; a rejected call writes
nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from memory import recall as recall_mod
from memory.db import DB_NAME, open_db
from memory.home import resolve_home
from memory.toolschema import ToolSchemaError, check_tool_schema
from memory.validate import (
    MAX_EPISODE_BYTES,
    OUTCOMES,
    SOURCES,
    ValidationError,
    call_errors,
    check_choice,
    check_demonstration,
    check_expected,
    dumps,
    fingerprint,
    message_errors,
    normalise_calls,
)

__all__ = ["Memory", "NotFoundError", "ValidationError", "RUN_STATUSES"]

RUN_STATUSES = ("running", "succeeded", "failed", "promoted", "blocked", "cancelled", "interrupted", "skipped")
RUN_FIELDS = ("status", "phase", "metrics", "config", "base_version", "candidate_version", "error")

JSON_COLUMNS = frozenset(
    {"messages", "tool_calls", "provenance", "meta", "expected", "config", "metrics", "phases",
     "summary", "parameters"}
)

DEMO_SELECT = """
SELECT d.id, s.name AS skill, d.messages, d.tool_calls, d.content, d.source, d.episode_id,
       d.provenance, d.duplicates, d.fingerprint, d.created_at,
       (SELECT json_group_array(u.run_id) FROM demonstration_uses u
         WHERE u.demonstration_id = d.id) AS used_in_runs
FROM demonstrations d JOIN skills s ON s.id = d.skill_id
"""
EPISODE_SELECT = """
SELECT e.id, s.name AS skill, e.messages, e.tool_calls, e.answer, e.outcome, e.note, e.source,
       e.model_version, e.meta, e.created_at, e.updated_at
FROM episodes e LEFT JOIN skills s ON s.id = e.skill_id
"""
EVAL_SELECT = """
SELECT c.id, s.name AS skill, c.messages, c.expected, c.created_at
FROM eval_cases c JOIN skills s ON s.id = c.skill_id
"""


class NotFoundError(KeyError):
    """No row with that id. A KeyError, with a readable message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def decode(row: dict) -> dict:
    """A row with its JSON columns back as Python objects."""
    out = {k: (json.loads(v) if k in JSON_COLUMNS and v is not None else v) for k, v in row.items()}
    if "used_in_runs" in out:
        out["used_in_runs"] = sorted(json.loads(out["used_in_runs"] or "[]"))
    return out


class Memory:
    """The episodic memory in `<home>/memory.db` (DESIGN.md §6)."""

    def __init__(self, home: str | Path | None = None):
        self.home = resolve_home(home)
        self.db: sqlite_utils.Database = open_db(self.home)
        self.path = self.home / DB_NAME
        self._lock = threading.RLock()
        self._df: dict[str, int] = {}  # recall's document-frequency cache (a hint, may be stale)
        self._df_top = 0

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction holding the write lock from its first statement. Inside
        another write it is a savepoint of that transaction, so several calls can be one
        atomic unit: `with mem.write(): mem.add_skill(...); mem.add_demonstration(...)`."""
        with self._lock:
            if self.db.conn.in_transaction:
                with self.db.atomic():
                    yield self.db
                return
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.rollback()
                raise
            self.db.commit()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite_utils.Database]:
        """Several reads that see one consistent state (a read transaction; writers go on)."""
        with self._lock, self.db.atomic():
            yield self.db

    def _rows(self, sql: str, params: Any = None) -> list[dict]:
        with self._lock:
            return [decode(r) for r in self.db.query(sql, params)]

    def _one(self, sql: str, params: Any, missing: str) -> dict:
        rows = self._rows(sql, params)
        if not rows:
            raise NotFoundError(missing)
        return rows[0]

    def _skill_id(self, name: Any, where: str = "skill") -> int:
        if not isinstance(name, str):
            raise ValidationError(f"{where}: expected a skill name, got {type(name).__name__}")
        row = self.db.execute("SELECT id FROM skills WHERE name = ?", [name]).fetchone()
        if row is None:
            known = [r[0] for r in self.db.execute("SELECT name FROM skills ORDER BY name")]
            raise ValidationError(
                f"{where}: unknown skill {name!r} (known: {', '.join(known) or 'none'}); add it with add_skill"
            )
        return row[0]

    def _tools(self, skill_id: int) -> dict[str, dict]:
        return {
            r["name"]: decode(r)
            for r in self.db.query(
                "SELECT name, description, parameters FROM tools WHERE skill_id = ? ORDER BY position",
                [skill_id],
            )
        }

    # -- skills & tools -------------------------------------------------------------------------

    def add_skill(self, name: str, description: str, tools: list[dict]) -> int:
        """Create or update the skill `name`; its tool set becomes exactly `tools`."""
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("skill.name: a non-empty string is required")
        if not isinstance(description, str):
            raise ValidationError(f"skill.description: expected a string, got {type(description).__name__}")
        if not isinstance(tools, list):
            raise ValidationError(f"skill.tools: expected a list of tool schemas, got {type(tools).__name__}")
        flat: list[dict] = []
        try:
            for i, tool in enumerate(tools):
                flat.append(check_tool_schema(tool, f"skill.tools[{i}]"))
        except ToolSchemaError as exc:
            raise ValidationError(str(exc)) from None
        names = [t["name"] for t in flat]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            raise ValidationError(f"skill.tools: the tool name {dup!r} appears more than once")
        with self.write() as db:
            return self._upsert_skill(db, name, description, flat)

    def _upsert_skill(self, db, name: str, description: str, flat: list[dict]) -> int:
        ts = now()
        db.execute(
            """INSERT INTO skills (name, description, created_at, updated_at) VALUES (?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET description = excluded.description,
                                                updated_at = excluded.updated_at""",
            [name, description, ts, ts],
        )
        skill_id = db.execute("SELECT id FROM skills WHERE name = ?", [name]).fetchone()[0]
        db.execute(
            f"DELETE FROM tools WHERE skill_id = ? AND name NOT IN ({','.join('?' * len(flat))})",
            [skill_id, *[t["name"] for t in flat]],
        )
        for pos, t in enumerate(flat):
            db.execute(
                """INSERT INTO tools (skill_id, name, description, parameters, position)
                   VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT(skill_id, name) DO UPDATE SET description = excluded.description,
                       parameters = excluded.parameters, position = excluded.position""",
                [skill_id, t["name"], t["description"], dumps(t["parameters"], "tool.parameters"), pos],
            )
        return skill_id

    def get_skill(self, name: str) -> dict | None:
        rows = self._rows("SELECT * FROM skills WHERE name = ?", [name])
        if not rows:
            return None
        return {**rows[0], "tools": self.tools_for(name)}

    def list_skills(self) -> list[dict]:
        return [{**s, "tools": self.tools_for(s["name"])} for s in self._rows("SELECT * FROM skills ORDER BY name")]

    def tools_for(self, skill: str | None = None) -> list[dict]:
        """Tool schemas in the flat OpenAI function form, in pack order (all skills: by skill name)."""
        with self._lock:
            if skill is None:
                rows = self.db.query(
                    """SELECT t.name, t.description, t.parameters FROM tools t
                       JOIN skills s ON s.id = t.skill_id ORDER BY s.name, t.position"""
                )
                return [decode(r) for r in rows]
            return list(self._tools(self._skill_id(skill)).values())

    # -- episodes -------------------------------------------------------------------------------

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
    ) -> int:
        """Store one conversation the agent had (or was taught); returns its id."""
        episode = dict(messages=messages, tool_calls=tool_calls, answer=answer, outcome=outcome,
                       source=source, model_version=model_version, skill=skill, meta=meta)
        return self._record([("episode", episode)])[0]

    def record_episodes(self, episodes: Iterable[dict]) -> list[int]:
        """Store many episodes (dicts with record_episode's arguments) in one transaction;
        one invalid episode rejects them all."""
        return self._record([(f"episodes[{i}]", e) for i, e in enumerate(episodes)])

    def _record(self, items: list[tuple[str, dict]]) -> list[int]:
        prepared = [(where, *self._prepare_episode(e, where)) for where, e in items]
        ids: list[int] = []
        with self.write() as db:
            skill_ids: dict[str, int] = {}
            for where, row, skill in prepared:
                if skill is not None and skill not in skill_ids:
                    skill_ids[skill] = self._skill_id(skill, f"{where}.skill")
                row[1] = skill_ids.get(skill)
                ids.append(db.execute(
                    """INSERT INTO episodes (messages, skill_id, tool_calls, answer, outcome, source,
                       model_version, meta, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)""",
                    row,
                ).lastrowid)
        return ids

    def _prepare_episode(self, e: dict, where: str) -> tuple[list, str | None]:
        if not isinstance(e, dict):
            raise ValidationError(f"{where}: expected an object with record_episode's arguments, got {type(e).__name__}")
        errors = message_errors(e.get("messages"), f"{where}.messages")
        calls = e.get("tool_calls") or []
        errors += call_errors(calls, f"{where}.tool_calls")
        answer = e.get("answer")
        if answer is not None and not isinstance(answer, str):
            errors.append(f"{where}.answer: expected a string or None, got {type(answer).__name__}")
        meta = e.get("meta") or {}
        if not isinstance(meta, dict):
            errors.append(f"{where}.meta: expected an object, got {type(meta).__name__}")
        mv = e.get("model_version")
        if mv is not None and not isinstance(mv, str):
            errors.append(f"{where}.model_version: expected a string, got {type(mv).__name__}")
        unknown = set(e) - {"messages", "tool_calls", "answer", "outcome", "source", "model_version", "skill", "meta"}
        errors += [f"{where}.{k}: unknown field" for k in sorted(unknown)]
        if errors:
            raise ValidationError(errors)
        check_choice(e.get("outcome", "unknown"), OUTCOMES, f"{where}.outcome")
        check_choice(e.get("source", "live"), SOURCES, f"{where}.source")
        messages_json = dumps(e["messages"], f"{where}.messages")
        calls_json = dumps(normalise_calls(calls) if calls else [], f"{where}.tool_calls")
        meta_json = dumps(meta, f"{where}.meta")
        size = len(messages_json) + len(calls_json) + len(meta_json) + len(answer or "")
        if size > MAX_EPISODE_BYTES:
            raise ValidationError(f"{where}: about {size} bytes as JSON, the limit is {MAX_EPISODE_BYTES}")
        ts = now()
        row = [messages_json, None, calls_json, answer, e.get("outcome", "unknown"),
               e.get("source", "live"), mv, meta_json, ts, ts]
        return row, e.get("skill")

    def set_outcome(self, episode_id: int, outcome: str, note: str | None = None) -> None:
        """Judge an episode (success | failure | unknown), with an optional note saying why."""
        check_choice(outcome, OUTCOMES, "outcome")
        if note is not None and not isinstance(note, str):
            raise ValidationError(f"note: expected a string, got {type(note).__name__}")
        with self.write() as db:
            cur = db.execute(
                "UPDATE episodes SET outcome = ?, note = ?, updated_at = ? WHERE id = ?",
                [outcome, note, now(), episode_id],
            )
            if cur.rowcount == 0:
                raise NotFoundError(f"episode {episode_id} does not exist")

    def episode(self, episode_id: int) -> dict:
        return self._one(EPISODE_SELECT + " WHERE e.id = ?", [episode_id], f"episode {episode_id} does not exist")

    def last_episode(self) -> dict | None:
        rows = self._rows(EPISODE_SELECT + " ORDER BY e.id DESC LIMIT 1")
        return rows[0] if rows else None

    def episodes(self, outcome: str | None = None, limit: int = 100) -> list[dict]:
        """Most recent first, optionally only one outcome."""
        if outcome is None:
            return self._rows(EPISODE_SELECT + " ORDER BY e.id DESC LIMIT ?", [limit])
        check_choice(outcome, OUTCOMES, "outcome")
        return self._rows(EPISODE_SELECT + " WHERE e.outcome = ? ORDER BY e.id DESC LIMIT ?", [outcome, limit])

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
        return self._add_demos(skill, [("demonstration", demo)])[0]

    def add_demonstrations(self, skill: str, demos: Iterable[dict]) -> list[tuple[int, bool]]:
        """Many demonstrations (dicts with add_demonstration's arguments) in one transaction;
        one invalid demonstration rejects them all."""
        return self._add_demos(skill, [(f"demonstrations[{i}]", d) for i, d in enumerate(demos)])

    def _add_demos(self, skill: str, items: list[tuple[str, dict]]) -> list[tuple[int, bool]]:
        with self.write() as db:
            skill_id = self._skill_id(skill, f"{items[0][0] if len(items) == 1 else 'demonstrations'}.skill")
            tools = self._tools(skill_id)
            return [self._insert_demo(db, skill, skill_id, tools, d, where) for where, d in items]

    def _insert_demo(self, db, skill: str, skill_id: int, tools: dict, d: dict, where: str,
                     *, count_duplicate: bool = True) -> tuple[int, bool]:
        if not isinstance(d, dict):
            raise ValidationError(f"{where}: expected an object with add_demonstration's arguments, got {type(d).__name__}")
        unknown = set(d) - {"messages", "tool_calls", "content", "source", "provenance", "episode_id",
                            "duplicates", "created_at"}
        if unknown:
            raise ValidationError([f"{where}.{k}: unknown field" for k in sorted(unknown)])
        messages = d.get("messages")
        calls, content = check_demonstration(skill, tools, messages, d.get("tool_calls"), d.get("content"), where)
        source = check_choice(d.get("source", "imported"), SOURCES, f"{where}.source")
        provenance = d.get("provenance") or {}
        if not isinstance(provenance, dict):
            raise ValidationError(f"{where}.provenance: expected an object, got {type(provenance).__name__}")
        episode_id = d.get("episode_id")
        if episode_id is not None and db.execute("SELECT 1 FROM episodes WHERE id = ?", [episode_id]).fetchone() is None:
            raise ValidationError(f"{where}.episode_id: episode {episode_id} does not exist")
        duplicates = d.get("duplicates", 0)
        if not isinstance(duplicates, int) or isinstance(duplicates, bool) or duplicates < 0:
            raise ValidationError(f"{where}.duplicates: expected a count >= 0, got {duplicates!r}")
        fp = fingerprint(messages, calls, content)
        cur = db.execute(
            """INSERT INTO demonstrations (skill_id, messages, tool_calls, content, source, episode_id,
                   provenance, fingerprint, duplicates, prompt_text, calls_text, created_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(skill_id, fingerprint) DO NOTHING""",
            [skill_id, dumps(messages, f"{where}.messages"), dumps(calls, f"{where}.tool_calls"), content,
             source, episode_id, dumps(provenance, f"{where}.provenance"), fp, duplicates,
             recall_mod.prompt_text(messages), recall_mod.calls_text(calls, content),
             d.get("created_at") or now()],
        )
        if cur.rowcount == 1:
            return cur.lastrowid, True
        existing = db.execute(
            "SELECT id FROM demonstrations WHERE skill_id = ? AND fingerprint = ?", [skill_id, fp]
        ).fetchone()[0]
        if count_duplicate:
            db.execute("UPDATE demonstrations SET duplicates = duplicates + 1 WHERE id = ?", [existing])
        return existing, False

    def promote_episode(self, episode_id: int, skill: str) -> int:
        """Turn a successful episode into a demonstration of `skill`; returns the demonstration id.

        The turn learned is the episode's first assistant turn that calls tools (the prefix before
        it is the prompt); with no such turn, its recorded tool calls follow the conversation up to
        the first assistant turn; with no calls at all, the final answer is the turn learned.
        Promoting the same episode again returns the same demonstration.
        """
        with self.write() as db:
            ep = self.episode(episode_id)
            if ep["outcome"] != "success":
                raise ValidationError(
                    f"episode {episode_id}: outcome is {ep['outcome']!r}; only successful episodes become "
                    f"demonstrations (mark it with set_outcome({episode_id}, 'success') first)"
                )
            skill_id = self._skill_id(skill)
            row = db.execute(
                "SELECT id FROM demonstrations WHERE episode_id = ? AND skill_id = ?", [episode_id, skill_id]
            ).fetchone()
            if row is not None:
                return row[0]
            messages, calls, content = demonstration_from_episode(ep)
            demo = dict(messages=messages, tool_calls=calls, content=content,
                        source="taught" if ep["source"] == "taught" else "live",
                        provenance={"episode_id": episode_id, "model_version": ep["model_version"],
                                    "episode_source": ep["source"]},
                        episode_id=episode_id)
            try:
                return self._insert_demo(db, skill, skill_id, self._tools(skill_id), demo, "demonstration")[0]
            except ValidationError as exc:
                raise exc.prefixed(f"episode {episode_id} as a demonstration of {skill!r}: ") from None

    def demonstration(self, demo_id: int) -> dict:
        return self._one(DEMO_SELECT + " WHERE d.id = ?", [demo_id], f"demonstration {demo_id} does not exist")

    def demonstrations(self, skill: str | None = None) -> list[dict]:
        if skill is None:
            return self._rows(DEMO_SELECT + " ORDER BY d.id")
        with self._lock:
            return self._rows(DEMO_SELECT + " WHERE d.skill_id = ? ORDER BY d.id", [self._skill_id(skill)])

    def recall(self, query: str, k: int = 3, skill: str | None = None, *, exact: bool = False) -> list[dict]:
        """The k demonstrations most relevant to `query` by BM25, best first, each with a `score`
        (higher is better). Empty when the query has no searchable word or nothing matches.

        On a large memory the most frequent query terms are left out of the ranking to bound its
        cost (memory.recall); `exact=True` ranks with every term.
        """
        terms = recall_mod.query_terms(query)
        if not terms or k <= 0:
            return []
        with self._lock:
            skill_id = None if skill is None else self._skill_id(skill)
            hits = self._recall_hits(terms, k, skill_id, exact)
            if not hits:
                return []
            rows = {r["id"]: r for r in self._rows(
                DEMO_SELECT + f" WHERE d.id IN ({','.join('?' * len(hits))})", [h[0] for h in hits])}
        return [{**rows[i], "score": -r} for i, r in hits if i in rows]

    def _recall_hits(self, terms: list[str], k: int, skill_id: int | None, exact: bool) -> list[tuple]:
        # BM25's cost grows with the rows each term matches in the whole index (its IDF is
        # counted there even within one skill), so the terms are chosen by global frequency.
        if not exact:
            self._refresh_df_cache()
            kept, dropped = recall_mod.choose_terms({t: self._doc_freq(t) for t in terms})
            if not kept:
                return []  # no term occurs anywhere
            hits = self._bm25(kept, k, skill_id)
            if len(hits) >= k or not dropped:
                return hits
            # Fewer than k: the dropped terms may still match (a small skill, a short memory).
        return self._bm25(terms, k, skill_id)

    def _bm25(self, terms: list[str], k: int, skill_id: int | None) -> list[tuple]:
        rank = f"bm25(demonstrations_fts, {', '.join(map(str, recall_mod.WEIGHTS))})"
        return self.db.execute(
            f"""SELECT rowid, {rank} AS r FROM demonstrations_fts
                WHERE demonstrations_fts MATCH ? ORDER BY r LIMIT ?""",
            [recall_mod.match_expression(terms, skill_id), k],
        ).fetchall()

    def _refresh_df_cache(self) -> None:
        """Forget cached document frequencies once the memory has grown by a tenth."""
        top = self.db.execute("SELECT coalesce(max(id), 0) FROM demonstrations").fetchone()[0]
        if top < self._df_top or top > self._df_top * 1.1 + 100 or len(self._df) > 100_000:
            self._df.clear()
            self._df_top = top

    def _doc_freq(self, term: str) -> int:
        """Demonstrations containing `term` (stemmed as the index does), cached per process."""
        if term in self._df:
            return self._df[term]
        n = self.db.execute("SELECT count(*) FROM demonstrations_fts WHERE demonstrations_fts MATCH ?",
                            [recall_mod.term_expression(term)]).fetchone()[0]
        if n:  # a zero may stop being one with the next write (and is cheap to count again)
            self._df[term] = n
        return n

    def unlearned_demonstrations(self, skill: str | None = None, limit: int | None = None) -> list[dict]:
        """Demonstrations no learning run has used yet, oldest first."""
        sql = DEMO_SELECT + " WHERE NOT EXISTS (SELECT 1 FROM demonstration_uses u WHERE u.demonstration_id = d.id)"
        params: list = []
        with self._lock:
            if skill is not None:
                sql += " AND d.skill_id = ?"
                params.append(self._skill_id(skill))
            sql += " ORDER BY d.id LIMIT ?"
            params.append(-1 if limit is None else int(limit))
            return self._rows(sql, params)

    def mark_used(self, demo_ids: list[int], run_id: int) -> None:
        """Record that learning run `run_id` trained on these demonstrations (idempotent)."""
        ids = sorted(set(demo_ids))
        if not ids:
            return
        with self.write() as db:
            if db.execute("SELECT 1 FROM learn_runs WHERE id = ?", [run_id]).fetchone() is None:
                raise NotFoundError(f"learn run {run_id} does not exist")
            found = {r[0] for r in db.execute(
                f"SELECT id FROM demonstrations WHERE id IN ({','.join('?' * len(ids))})", ids)}
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFoundError(f"demonstrations do not exist: {missing}")
            ts = now()
            db.conn.executemany(
                "INSERT OR IGNORE INTO demonstration_uses (demonstration_id, run_id, at) VALUES (?, ?, ?)",
                [(i, run_id, ts) for i in ids],
            )

    # -- eval cases -----------------------------------------------------------------------------

    def add_eval_case(self, skill: str, messages: list[dict], expected: list[dict]) -> int:
        """A held-out case of `skill`; an identical case returns the existing id."""
        with self.write() as db:
            return self._insert_eval(db, skill, self._skill_id(skill, "eval_case.skill"),
                                     {"messages": messages, "expected": expected}, "eval_case")[0]

    def _insert_eval(self, db, skill: str, skill_id: int, case: dict, where: str) -> tuple[int, bool]:
        unknown = set(case) - {"messages", "expected", "created_at"}
        if unknown:
            raise ValidationError([f"{where}.{k}: unknown field" for k in sorted(unknown)])
        messages, expected = case.get("messages"), case.get("expected")
        errors = message_errors(messages, f"{where}.messages")
        if errors:
            raise ValidationError(errors)
        check_expected(skill, self._tools(skill_id), expected, f"{where}.expected")
        fp = fingerprint(messages, expected)
        cur = db.execute(
            """INSERT INTO eval_cases (skill_id, messages, expected, fingerprint, created_at)
               VALUES (?,?,?,?,?) ON CONFLICT(skill_id, fingerprint) DO NOTHING""",
            [skill_id, dumps(messages, where), dumps(expected, where), fp, case.get("created_at") or now()],
        )
        if cur.rowcount == 1:
            return cur.lastrowid, True
        return db.execute(
            "SELECT id FROM eval_cases WHERE skill_id = ? AND fingerprint = ?", [skill_id, fp]
        ).fetchone()[0], False

    def eval_cases(self, skill: str) -> list[dict]:
        with self._lock:
            return self._rows(EVAL_SELECT + " WHERE c.skill_id = ? ORDER BY c.id", [self._skill_id(skill)])

    # -- learning runs & gate reports ----------------------------------------------------------

    def start_run(self, method: str, config: dict, skill: str | None = None) -> int:
        """A learning run begins (status 'running')."""
        if not isinstance(method, str) or not method.strip():
            raise ValidationError("run.method: a non-empty string is required (e.g. 'sdft')")
        if not isinstance(config, dict):
            raise ValidationError(f"run.config: expected an object, got {type(config).__name__}")
        with self.write() as db:
            if skill is not None:
                self._skill_id(skill, "run.skill")
            ts = now()
            return db.execute(
                """INSERT INTO learn_runs (method, skill, status, config, started_at, updated_at)
                   VALUES (?, ?, 'running', ?, ?, ?)""",
                [method, skill, dumps(config, "run.config"), ts, ts],
            ).lastrowid

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Change fields of a run: status, phase (appended to `phases`), metrics and config
        (merged into the stored dicts), base_version, candidate_version, error."""
        unknown = sorted(set(fields) - set(RUN_FIELDS))
        if unknown:
            raise ValidationError([f"run.{k}: not a run field (allowed: {', '.join(RUN_FIELDS)})" for k in unknown])
        if "status" in fields:
            check_choice(fields["status"], RUN_STATUSES, "run.status")
        for key in ("metrics", "config"):
            if key in fields and not isinstance(fields[key], dict):
                raise ValidationError(f"run.{key}: expected an object, got {type(fields[key]).__name__}")
        with self.write() as db:
            run = self.run(run_id)
            ts = now()
            sets: dict[str, Any] = {"updated_at": ts}
            for key in ("status", "base_version", "candidate_version", "error"):
                if key in fields:
                    sets[key] = fields[key]
            for key in ("metrics", "config"):
                if key in fields:
                    sets[key] = dumps({**run[key], **fields[key]}, f"run.{key}")
            if "phase" in fields:
                sets["phase"] = fields["phase"]
                sets["phases"] = dumps(run["phases"] + [{"phase": fields["phase"], "at": ts}], "run.phase")
            if fields.get("status", "running") != "running":
                sets["finished_at"] = ts
            db.execute(
                f"UPDATE learn_runs SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                [*sets.values(), run_id],
            )

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
        return self._one("SELECT * FROM learn_runs WHERE id = ?", [run_id], f"learn run {run_id} does not exist")

    def runs(self, limit: int = 20) -> list[dict]:
        """Most recent first."""
        return self._rows("SELECT * FROM learn_runs ORDER BY id DESC LIMIT ?", [limit])

    def add_gate_report(self, run_id: int, decision: str, summary: dict, path: str | None) -> int:
        if not isinstance(decision, str) or not decision.strip():
            raise ValidationError("gate_report.decision: a non-empty string is required (e.g. 'promote', 'block')")
        if not isinstance(summary, dict):
            raise ValidationError(f"gate_report.summary: expected an object, got {type(summary).__name__}")
        with self.write() as db:
            self.run(run_id)
            return db.execute(
                "INSERT INTO gate_reports (run_id, decision, summary, path, created_at) VALUES (?,?,?,?,?)",
                [run_id, decision, dumps(summary, "gate_report.summary"), None if path is None else str(path), now()],
            ).lastrowid

    def gate_reports(self, run_id: int | None = None) -> list[dict]:
        if run_id is None:
            return self._rows("SELECT * FROM gate_reports ORDER BY id")
        return self._rows("SELECT * FROM gate_reports WHERE run_id = ? ORDER BY id", [run_id])

    # -- whole-memory views ---------------------------------------------------------------------

    def stats(self) -> dict:
        """Counts of everything, from one consistent snapshot, plus the file sizes."""
        with self.snapshot() as db:
            def count(sql: str) -> int:
                return db.execute(sql).fetchone()[0]

            out = {
                "skills": count("SELECT count(*) FROM skills"),
                "tools": count("SELECT count(*) FROM tools"),
                "episodes": count("SELECT count(*) FROM episodes"),
                "episodes_by_outcome": {o: 0 for o in OUTCOMES} | dict(
                    db.execute("SELECT outcome, count(*) FROM episodes GROUP BY outcome").fetchall()),
                "demonstrations": count("SELECT count(*) FROM demonstrations"),
                "demonstrations_unlearned": count(
                    "SELECT count(*) FROM demonstrations d WHERE NOT EXISTS "
                    "(SELECT 1 FROM demonstration_uses u WHERE u.demonstration_id = d.id)"),
                "duplicates_seen": count("SELECT coalesce(sum(duplicates), 0) FROM demonstrations"),
                "demonstrations_by_skill": dict(db.execute(
                    "SELECT s.name, count(d.id) FROM skills s LEFT JOIN demonstrations d ON d.skill_id = s.id "
                    "GROUP BY s.id ORDER BY s.name").fetchall()),
                "eval_cases": count("SELECT count(*) FROM eval_cases"),
                "learn_runs": count("SELECT count(*) FROM learn_runs"),
                "runs_by_status": dict(db.execute(
                    "SELECT status, count(*) FROM learn_runs GROUP BY status ORDER BY status").fetchall()),
                "gate_reports": count("SELECT count(*) FROM gate_reports"),
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
        from memory.db import checkpoint

        with self._lock:
            checkpoint(self.db)


def demonstration_from_episode(ep: dict) -> tuple[list[dict], list[dict], str | None]:
    """(messages, tool_calls, content) of the turn an episode teaches; see promote_episode."""
    messages = ep["messages"]
    for i, m in enumerate(messages):
        if m.get("role") == "assistant" and m.get("tool_calls"):
            return messages[:i], normalise_calls(m["tool_calls"]), m.get("content") or None
    first_assistant = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    if ep["tool_calls"]:
        return messages[:first_assistant], normalise_calls(ep["tool_calls"]), None
    if messages and messages[-1].get("role") == "assistant":
        return messages[:-1], [], messages[-1].get("content") or None
    return messages, [], ep["answer"]


def is_locked_error(exc: BaseException) -> bool:
    """The error every caller must never see (used by tests and the benchmark)."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
