"""Episodes: every conversation the agent had or was taught, judged later (table `episodes`).

An episode names its learned turn (memory.records.Episode), so turning a good one into a
demonstration reads that turn instead of guessing it from the conversation.
"""

from __future__ import annotations

from memory.catalog import Catalog
from memory.database import Database, NotFoundError, now, row_id
from memory.records import Episode
from memory.validate import OUTCOMES, ValidationError, check_choice, dumps

EPISODE_SELECT = """
SELECT e.id, s.name AS skill, e.messages, e.tool_calls, e.answer, e.outcome, e.note, e.source,
       e.model_version, e.meta, e.learned_turn, e.created_at, e.updated_at
FROM episodes e LEFT JOIN skills s ON s.id = e.skill_id
"""


class Episodes:
    def __init__(self, database: Database, catalog: Catalog):
        self.database = database
        self.catalog = catalog

    def add(self, episodes: list[tuple[str, Episode | dict]]) -> list[int]:
        """Store (where, episode) pairs in one transaction; one invalid episode rejects them all."""
        prepared = [(where, e if isinstance(e, Episode) else Episode.parse(e, where)) for where, e in episodes]
        ids: list[int] = []
        with self.database.write() as db:
            for where, ep in prepared:
                ep.with_learned_turn()
                skill_id = None if ep.skill is None else self.catalog.skill_id(ep.skill, f"{where}.skill")
                ts = now()
                ids.append(row_id(db.execute(
                    """INSERT INTO episodes (messages, skill_id, tool_calls, answer, outcome, source,
                       model_version, meta, learned_turn, created_at, updated_at)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
                    [dumps([m.dump() for m in ep.messages], f"{where}.messages"), skill_id,
                     dumps([c.plain() for c in ep.tool_calls], f"{where}.tool_calls"), ep.answer,
                     ep.outcome, ep.source, ep.model_version, dumps(ep.meta, f"{where}.meta"),
                     ep.learned_turn, ts, ts],
                )))
        return ids

    def set_outcome(self, episode_id: int, outcome: str, note: str | None = None) -> None:
        check_choice(outcome, OUTCOMES, "outcome")
        if note is not None and not isinstance(note, str):
            raise ValidationError(f"note: expected a string, got {type(note).__name__}")
        with self.database.write() as db:
            cur = db.execute("UPDATE episodes SET outcome = ?, note = ?, updated_at = ? WHERE id = ?",
                             [outcome, note, now(), episode_id])
            if cur.rowcount == 0:
                raise NotFoundError(f"episode {episode_id} does not exist")

    def get(self, episode_id: int) -> dict:
        return self.database.one(EPISODE_SELECT + " WHERE e.id = ?", [episode_id],
                                 f"episode {episode_id} does not exist")

    def by_response_id(self, response_id: str) -> int | None:
        """The id of the episode the HTTP server answered as `response_id` (its meta's
        `response_id`), or None. A scan of the meta column: the server resolves recent ids
        from its own map and comes here only for older ones."""
        return self.database.value(
            "SELECT id FROM episodes WHERE json_extract(meta, '$.response_id') = ? ORDER BY id LIMIT 1",
            [response_id])

    def last(self) -> dict | None:
        rows = self.database.rows(EPISODE_SELECT + " ORDER BY e.id DESC LIMIT 1")
        return rows[0] if rows else None

    def recent(self, outcome: str | None = None, limit: int = 100) -> list[dict]:
        """Most recent first, optionally only one outcome."""
        if outcome is None:
            return self.database.rows(EPISODE_SELECT + " ORDER BY e.id DESC LIMIT ?", [limit])
        check_choice(outcome, OUTCOMES, "outcome")
        return self.database.rows(EPISODE_SELECT + " WHERE e.outcome = ? ORDER BY e.id DESC LIMIT ?",
                                  [outcome, limit])

