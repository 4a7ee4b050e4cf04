"""Skills, their tools, and their held-out eval cases (the tables `skills`, `tools`, `eval_cases`).

Tools are stored in the flat OpenAI function form in pack order; a skill's tool set is replaced
whole by `add`. Eval cases are deduplicated by fingerprint within a skill.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from memory.database import Database, now, row_id
from memory.records import Skill, StoredEvalCase
from memory.validate import ValidationError, dumps, fingerprint

EVAL_SELECT = """
SELECT c.id, s.name AS skill, c.messages, c.expected, c.created_at
FROM eval_cases c JOIN skills s ON s.id = c.skill_id
"""



def tool_key(tools: list[dict]) -> str:
    """What makes two tool sets the same skill (names, descriptions, parameter schemas), in any order."""
    return json.dumps(sorted(({"name": t["name"], "description": t.get("description", ""),
                               "parameters": t.get("parameters", {})} for t in tools),
                             key=lambda t: t["name"]), sort_keys=True)


def tool_changes(old: list[dict], new: list[dict]) -> str:
    """What differs between two tool lists, in words ("adds x; removes y; changes z")."""
    a, b = {t["name"]: t for t in old}, {t["name"]: t for t in new}
    parts = []
    if added := sorted(set(b) - set(a)):
        parts.append(f"adds {', '.join(added)}")
    if removed := sorted(set(a) - set(b)):
        parts.append(f"removes {', '.join(removed)}")
    changed = sorted(n for n in set(a) & set(b) if tool_key([a[n]]) != tool_key([b[n]]))
    if changed:
        parts.append(f"changes {', '.join(changed)}")
    return "; ".join(parts) or "reorders the tools"

class Catalog:
    def __init__(self, database: Database):
        self.database = database

    # -- skills & tools -------------------------------------------------------------------------

    def add(self, skill: Skill) -> int:
        """Create or update the skill; its tool set becomes exactly the record's."""
        with self.database.write() as db:
            return self.upsert(db, skill)

    def upsert(self, db: sqlite_utils.Database, skill: Skill) -> int:
        """Inside a write the caller holds (import, install)."""
        ts = now()
        db.execute(
            """INSERT INTO skills (name, description, created_at, updated_at) VALUES (?, ?, ?, ?)
               ON CONFLICT(name) DO UPDATE SET description = excluded.description,
                                                updated_at = excluded.updated_at""",
            [skill.name, skill.description, ts, ts],
        )
        skill_id = db.execute("SELECT id FROM skills WHERE name = ?", [skill.name]).fetchone()[0]
        names = [t.name for t in skill.tools]
        db.execute(f"DELETE FROM tools WHERE skill_id = ? AND name NOT IN ({','.join('?' * len(names))})",
                   [skill_id, *names])
        db.table("tools").upsert_all(
            ({"skill_id": skill_id, "name": t.name, "description": t.description,
              "parameters": dumps(t.parameters, "tool.parameters"), "position": pos}
             for pos, t in enumerate(skill.tools)),
            pk=("skill_id", "name"),
        )
        return skill_id

    def skill_id(self, name: Any, where: str = "skill") -> int:
        if not isinstance(name, str):
            raise ValidationError(f"{where}: expected a skill name, got {type(name).__name__}")
        found = self.database.value("SELECT id FROM skills WHERE name = ?", [name])
        if found is None:
            known = [r["name"] for r in self.database.rows("SELECT name FROM skills ORDER BY name")]
            raise ValidationError(
                f"{where}: unknown skill {name!r} (known: {', '.join(known) or 'none'}); add it with add_skill"
            )
        return found

    def tools(self, skill_id: int) -> dict[str, dict]:
        """A skill's tools by name, in pack order (the validation context of its records)."""
        rows = self.database.rows(
            "SELECT name, description, parameters FROM tools WHERE skill_id = ? ORDER BY position", [skill_id])
        return {r["name"]: r for r in rows}

    def get(self, name: str) -> dict | None:
        rows = self.database.rows("SELECT * FROM skills WHERE name = ?", [name])
        return {**rows[0], "tools": self.tools_for(name)} if rows else None

    def all(self) -> list[dict]:
        return [{**s, "tools": self.tools_for(s["name"])}
                for s in self.database.rows("SELECT * FROM skills ORDER BY name")]

    def served(self) -> list[tuple[str, dict]]:
        """(skill, schema) for every tool the agent offers when it serves all installed skills at
        once: skills in `all()` order (by name), each skill's tools in pack order, a tool name
        once (two skills sharing a name: the first one's schema wins)."""
        out, seen = [], set()
        for s in self.all():
            for tool in s["tools"]:
                if tool["name"] not in seen:
                    seen.add(tool["name"])
                    out.append((s["name"], tool))
        return out

    def tools_for(self, skill: str | None = None) -> list[dict]:
        """Tool schemas in the flat OpenAI function form, in pack order (all skills: by skill name)."""
        if skill is None:
            return self.database.rows(
                """SELECT t.name, t.description, t.parameters FROM tools t
                   JOIN skills s ON s.id = t.skill_id ORDER BY s.name, t.position""")
        with self.database.lock:
            return list(self.tools(self.skill_id(skill)).values())

    # -- eval cases -----------------------------------------------------------------------------

    def add_eval_case(self, db: sqlite_utils.Database, skill: str, case: Any, where: str) -> tuple[int, bool]:
        """Inside a write: a held-out case of `skill`; an identical case returns the existing id."""
        skill_id = self.skill_id(skill, f"{where}.skill")
        rec = StoredEvalCase.parse(case, where, skill=skill, tools=self.tools(skill_id))
        messages = [m.dump() for m in rec.messages]
        expected = [c.model_dump() for c in rec.expected]
        fp = fingerprint(messages, expected)
        cur = db.execute(
            """INSERT INTO eval_cases (skill_id, messages, expected, fingerprint, created_at)
               VALUES (?,?,?,?,?) ON CONFLICT(skill_id, fingerprint) DO NOTHING""",
            [skill_id, dumps(messages, where), dumps(expected, where), fp, rec.created_at or now()],
        )
        if cur.rowcount == 1:
            return row_id(cur), True
        return db.execute("SELECT id FROM eval_cases WHERE skill_id = ? AND fingerprint = ?",
                          [skill_id, fp]).fetchone()[0], False

    def eval_cases(self, skill: str) -> list[dict]:
        with self.database.lock:
            return self.database.rows(EVAL_SELECT + " WHERE c.skill_id = ? ORDER BY c.id", [self.skill_id(skill)])
