"""Demonstrations: what the learner trains on and what recall puts in context (tables
`demonstrations`, its FTS5 index, `demonstration_uses`).

A demonstration is stored once per skill and fingerprint (a duplicate is counted), carries where
it came from, and records which learning runs trained on it. Recall ranks them by BM25 (the query
rules are memory.recall's).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlite_utils

from memory import recall as recall_mod
from memory.catalog import Catalog
from memory.database import Database, NotFoundError, now, row_id
from memory.records import StoredDemonstration, demonstration_of
from memory.validate import ValidationError, dumps, fingerprint

DEMO_SELECT = """
SELECT d.id, s.name AS skill, d.messages, d.tool_calls, d.content, d.source, d.episode_id,
       d.provenance, d.duplicates, d.fingerprint, d.created_at,
       (SELECT json_group_array(u.run_id) FROM demonstration_uses u
         WHERE u.demonstration_id = d.id) AS used_in_runs
FROM demonstrations d JOIN skills s ON s.id = d.skill_id
"""
# A run that did not land (the gate blocked its candidate, or it failed or was cut off after
# training) has not learned its demonstrations: they stay in the queue until ATTEMPTS such runs
# have tried them. A skill blocked one night is tried again the next, against whatever the
# champion has become, and a skill that cannot pass does not take every later night with it.
NOT_LANDED = ("blocked", "failed", "cancelled", "interrupted")
ATTEMPTS = 2


def _uses(what: str, op: str, statuses: tuple[str, ...] = NOT_LANDED) -> str:
    listed = ", ".join(f"'{s}'" for s in statuses)
    return (f"SELECT {what} FROM demonstration_uses u JOIN learn_runs r ON r.id = u.run_id "
            f"WHERE u.demonstration_id = d.id AND r.status {op} ({listed})")


# `d` not learned: no run that landed (or is running) used it, and fewer than ? runs that did not
UNLEARNED = f"NOT EXISTS ({_uses('1', 'NOT IN')}) AND ({_uses('count(*)', 'IN')}) < ?"
# A run that landed: its candidate was promoted, or (learning outside the gate) made.
LANDED = ("promoted", "succeeded")
# `d` learned: a run that landed used it. Rehearsal draws only from these: a blocked skill's
# demonstrations rehearsed every later night taught its half-learned calls for everything (six
# nights, catalog blocked on night 3: 6 of night 4's 9 failures on no-tool requests called its tools).
LEARNED = f"EXISTS ({_uses('1', 'IN', LANDED)})"

# The skills a model version learned: its lineage's learning runs' demonstrations.
LEARNED_BY = """
WITH RECURSIVE lineage(version, parent, run_id) AS (
    SELECT version, parent, learn_run_id FROM model_versions WHERE version = ?
    UNION SELECT m.version, m.parent, m.learn_run_id FROM model_versions m JOIN lineage l ON m.version = l.parent)
SELECT DISTINCT s.name FROM lineage l
JOIN demonstration_uses u ON u.run_id = l.run_id
JOIN demonstrations d ON d.id = u.demonstration_id
JOIN skills s ON s.id = d.skill_id
ORDER BY s.name
"""


def check_attempts(attempts: int) -> int:
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        raise ValidationError(f"attempts must be a whole number ≥ 1 (runs that may try a demonstration "
                              f"before it is given up), got {attempts!r}")
    return attempts


class Demonstrations:
    def __init__(self, database: Database, catalog: Catalog):
        self.database = database
        self.catalog = catalog
        self._df: dict[str, int] = {}  # recall's document-frequency cache (a hint, may be stale)
        self._df_top = 0

    # -- writing --------------------------------------------------------------------------------

    def add(self, skill: str, items: list[tuple[str, Any]]) -> list[tuple[int, bool]]:
        """(where, demonstration) pairs of `skill` in one transaction; all or nothing."""
        with self.database.write() as db:
            where = items[0][0] if len(items) == 1 else "demonstrations"
            skill_id = self.catalog.skill_id(skill, f"{where}.skill")
            tools = self.catalog.tools(skill_id)
            return [self.insert(db, skill, skill_id, tools, d, w) for w, d in items]

    def insert(self, db: sqlite_utils.Database, skill: str, skill_id: int, tools: dict, d: Any, where: str,
               *, count_duplicate: bool = True) -> tuple[int, bool]:
        """Inside a write: validate and store one; (id, created). A duplicate of an existing
        demonstration returns that id (and is counted unless `count_duplicate` is False)."""
        rec = StoredDemonstration.parse(d, where, skill=skill, tools=tools)
        if rec.episode_id is not None and db.execute(
                "SELECT 1 FROM episodes WHERE id = ?", [rec.episode_id]).fetchone() is None:
            raise ValidationError(f"{where}.episode_id: episode {rec.episode_id} does not exist")
        messages, calls, content = rec.learned()
        fp = fingerprint(messages, calls, content)
        cur = db.execute(
            """INSERT INTO demonstrations (skill_id, messages, tool_calls, content, source, episode_id,
                   provenance, fingerprint, duplicates, prompt_text, calls_text, created_at)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(skill_id, fingerprint) DO NOTHING""",
            [skill_id, dumps(messages, f"{where}.messages"), dumps(calls, f"{where}.tool_calls"), content,
             rec.source, rec.episode_id, dumps(rec.provenance, f"{where}.provenance"), fp, rec.duplicates,
             recall_mod.prompt_text(messages), recall_mod.calls_text(calls, content), rec.created_at or now()],
        )
        if cur.rowcount == 1:
            return row_id(cur), True
        existing = db.execute("SELECT id FROM demonstrations WHERE skill_id = ? AND fingerprint = ?",
                              [skill_id, fp]).fetchone()[0]
        if count_duplicate:
            db.execute("UPDATE demonstrations SET duplicates = duplicates + 1 WHERE id = ?", [existing])
        return existing, False

    def from_episode(self, ep: dict, skill: str) -> int:
        """A successful episode's learned turn as a demonstration of `skill` (once per episode)."""
        episode_id = ep["id"]
        if ep["outcome"] != "success":
            raise ValidationError(
                f"episode {episode_id}: outcome is {ep['outcome']!r}; only successful episodes become "
                f"demonstrations (mark it with set_outcome({episode_id}, 'success') first)"
            )
        with self.database.write() as db:
            skill_id = self.catalog.skill_id(skill)
            row = db.execute("SELECT id FROM demonstrations WHERE episode_id = ? AND skill_id = ?",
                             [episode_id, skill_id]).fetchone()
            if row is not None:
                return row[0]
            demo = demonstration_of(ep["messages"], ep["tool_calls"], ep["answer"], ep["learned_turn"])
            demo.update(source="taught" if ep["source"] == "taught" else "live", episode_id=episode_id,
                        provenance={"episode_id": episode_id, "model_version": ep["model_version"],
                                    "episode_source": ep["source"]})
            try:
                return self.insert(db, skill, skill_id, self.catalog.tools(skill_id), demo, "demonstration")[0]
            except ValidationError as exc:
                raise exc.prefixed(f"episode {episode_id} as a demonstration of {skill!r}: ") from None

    def mark_used(self, demo_ids: list[int], run_id: int) -> None:
        """Record that learning run `run_id` trained on these demonstrations (idempotent)."""
        ids = sorted(set(demo_ids))
        if not ids:
            return
        with self.database.write() as db:
            if db.execute("SELECT 1 FROM learn_runs WHERE id = ?", [run_id]).fetchone() is None:
                raise NotFoundError(f"learn run {run_id} does not exist")
            found = {r[0] for r in db.execute(
                f"SELECT id FROM demonstrations WHERE id IN ({','.join('?' * len(ids))})", ids)}
            missing = [i for i in ids if i not in found]
            if missing:
                raise NotFoundError(f"demonstrations do not exist: {missing}")
            ts = now()  # executemany: sqlite-utils' insert_all reads rowid, which this table has not
            db.conn.executemany(
                "INSERT OR IGNORE INTO demonstration_uses (demonstration_id, run_id, at) VALUES (?, ?, ?)",
                [(i, run_id, ts) for i in ids])

    def retract(self, episode_id: int) -> list[int]:
        """Delete the demonstrations promoted from this episode (not taught corrections)."""
        with self.database.write() as db:
            rows = db.execute("SELECT id, provenance FROM demonstrations WHERE episode_id = ? ORDER BY id",
                              [episode_id]).fetchall()
            ids = [r[0] for r in rows if json.loads(r[1] or "{}").get("via") != "teach"]
            if ids:
                db.execute(f"DELETE FROM demonstrations WHERE id IN ({','.join('?' * len(ids))})", ids)
        return ids

    # -- reading --------------------------------------------------------------------------------

    def get(self, demo_id: int) -> dict:
        return self.database.one(DEMO_SELECT + " WHERE d.id = ?", [demo_id], f"demonstration {demo_id} does not exist")

    def many(self, ids: list[int]) -> list[dict]:
        """These demonstrations, in the order given; NotFoundError naming any that is gone."""
        if not ids:
            return []
        rows = {r["id"]: r for r in self.database.rows(
            DEMO_SELECT + f" WHERE d.id IN ({','.join('?' * len(ids))})", list(ids))}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise NotFoundError(f"demonstrations do not exist: {missing}")
        return [rows[i] for i in ids]

    def all(self, skill: str | None = None) -> list[dict]:
        if skill is None:
            return self.database.rows(DEMO_SELECT + " ORDER BY d.id")
        with self.database.lock:
            return self.database.rows(DEMO_SELECT + " WHERE d.skill_id = ? ORDER BY d.id",
                                      [self.catalog.skill_id(skill)])

    def unlearned(self, skill: str | None = None, limit: int | None = None, attempts: int = ATTEMPTS) -> list[dict]:
        """Demonstrations no learning run has learned yet, oldest first: never used, or used only
        by fewer than `attempts` runs that did not land (NOT_LANDED)."""
        sql, params = DEMO_SELECT + " WHERE " + UNLEARNED, [check_attempts(attempts)]
        with self.database.lock:
            if skill is not None:
                sql += " AND d.skill_id = ?"
                params.append(self.catalog.skill_id(skill))
            sql += " ORDER BY d.id LIMIT ?"
            params.append(-1 if limit is None else int(limit))
            return self.database.rows(sql, params)

    def learned(self) -> list[dict]:
        """Demonstrations a run that landed (LANDED) trained on, oldest first."""
        with self.database.lock:
            return self.database.rows(DEMO_SELECT + " WHERE " + LEARNED + " ORDER BY d.id")

    def skills_learned_by(self, version: str) -> list[str]:
        """The skills whose demonstrations trained `version` or a version it descends from (its
        lineage in model_versions, each learned version's learning run): what that model has in
        its weights, whichever version is champion now. Empty for a base or an unknown version."""
        with self.database.lock:
            return [r["name"] for r in self.database.rows(LEARNED_BY, [version])]

    # -- recall ---------------------------------------------------------------------------------

    def recall(self, query: str, k: int = 3, skill: str | None = None, *, exact: bool = False,
               exclude: Iterable[str] = ()) -> list[dict]:
        """The k demonstrations most relevant to `query` by BM25, best first, each with a `score`
        (higher is better), none of a skill named in `exclude`. Empty when the query has no
        searchable word or nothing matches.

        On a large memory the most frequent query terms are left out of the ranking to bound its
        cost (memory.recall); `exact=True` ranks with every term.
        """
        terms = recall_mod.query_terms(query)
        if not terms or k <= 0:
            return []
        with self.database.lock:
            skill_id = None if skill is None else self.catalog.skill_id(skill)
            excluded = self._skill_ids(exclude)
            if skill_id in excluded:
                return []
            hits = self._hits(terms, k, skill_id, exact, excluded)
            if not hits:
                return []
            rows = {r["id"]: r for r in self.database.rows(
                DEMO_SELECT + f" WHERE d.id IN ({','.join('?' * len(hits))})", [h[0] for h in hits])}
        return [{**rows[i], "score": -r} for i, r in hits if i in rows]

    def _skill_ids(self, names: Iterable[str]) -> list[int]:
        """The ids of the named skills that exist (an unknown name excludes nothing; one name may
        be given as a plain string)."""
        names = sorted({names} if isinstance(names, str) else set(names))
        if not names:
            return []
        return [r["id"] for r in self.database.rows(
            f"SELECT id FROM skills WHERE name IN ({','.join('?' * len(names))})", names)]

    def _hits(self, terms: list[str], k: int, skill_id: int | None, exact: bool,
              excluded: list[int]) -> list[tuple]:
        # BM25's cost grows with the rows each term matches in the whole index (its IDF is
        # counted there even within one skill), so the terms are chosen by global frequency.
        if not exact:
            self._refresh_df_cache()
            kept, dropped = recall_mod.choose_terms({t: self._doc_freq(t) for t in terms})
            if not kept:
                return []  # no term occurs anywhere
            hits = self._bm25(kept, k, skill_id, excluded)
            if len(hits) >= k or not dropped:
                return hits
            # Fewer than k: the dropped terms may still match (a small skill, a short memory).
        return self._bm25(terms, k, skill_id, excluded)

    def _bm25(self, terms: list[str], k: int, skill_id: int | None, excluded: list[int]) -> list[tuple]:
        rank = f"bm25(demonstrations_fts, {', '.join(map(str, recall_mod.WEIGHTS))})"
        return self.database.db.execute(
            f"""SELECT rowid, {rank} AS r FROM demonstrations_fts
                WHERE demonstrations_fts MATCH ? ORDER BY r LIMIT ?""",
            [recall_mod.match_expression(terms, skill_id, excluded), k],
        ).fetchall()

    def _refresh_df_cache(self) -> None:
        """Forget cached document frequencies once the memory has grown by a tenth."""
        top = self.database.value("SELECT coalesce(max(id), 0) FROM demonstrations")
        if top < self._df_top or top > self._df_top * 1.1 + 100 or len(self._df) > 100_000:
            self._df.clear()
            self._df_top = top

    def _doc_freq(self, term: str) -> int:
        """Demonstrations containing `term` (stemmed as the index does), cached per process."""
        if term in self._df:
            return self._df[term]
        n = self.database.value("SELECT count(*) FROM demonstrations_fts WHERE demonstrations_fts MATCH ?",
                                [recall_mod.term_expression(term)])
        if n:  # a zero may stop being one with the next write (and is cheap to count again)
            self._df[term] = n
        return n
