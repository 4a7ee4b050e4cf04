"""Learning runs and their gate reports (tables `learn_runs`, `gate_reports`).

A run row is the record of one run as it happens: status, the phases with their times, metrics
and config merged as they arrive, the versions involved, the demonstrations it was handed.
"""

from __future__ import annotations

from typing import Any

from memory.catalog import Catalog
from memory.database import Database, NotFoundError, now, row_id
from memory.validate import ValidationError, check_choice, dumps

RUN_STATUSES = ("running", "succeeded", "failed", "promoted", "blocked", "cancelled", "interrupted", "skipped")
RUN_FIELDS = ("status", "phase", "metrics", "config", "base_version", "candidate_version", "error",
              "demonstration_ids")


class Runs:
    def __init__(self, database: Database, catalog: Catalog):
        self.database = database
        self.catalog = catalog

    def start(self, method: str, config: dict, skill: str | None = None,
              demonstration_ids: list[int] | None = None) -> int:
        """A learning run begins (status 'running')."""
        if not isinstance(method, str) or not method.strip():
            raise ValidationError("run.method: a non-empty string is required (e.g. 'sdft')")
        if not isinstance(config, dict):
            raise ValidationError(f"run.config: expected an object, got {type(config).__name__}")
        ids = _ids(demonstration_ids or [])
        with self.database.write() as db:
            if skill is not None:
                self.catalog.skill_id(skill, "run.skill")
            ts = now()
            return row_id(db.execute(
                """INSERT INTO learn_runs (method, skill, status, config, demonstration_ids, started_at, updated_at)
                   VALUES (?, ?, 'running', ?, ?, ?, ?)""",
                [method, skill, dumps(config, "run.config"), dumps(ids, "run.demonstration_ids"), ts, ts],
            ))

    def update(self, run_id: int, **fields: Any) -> None:
        """Change fields of a run: status, phase (appended to `phases`), metrics and config
        (merged into the stored dicts), base_version, candidate_version, error,
        demonstration_ids (replaced)."""
        unknown = sorted(set(fields) - set(RUN_FIELDS))
        if unknown:
            raise ValidationError([f"run.{k}: not a run field (allowed: {', '.join(RUN_FIELDS)})" for k in unknown])
        if "status" in fields:
            check_choice(fields["status"], RUN_STATUSES, "run.status")
        for key in ("metrics", "config"):
            if key in fields and not isinstance(fields[key], dict):
                raise ValidationError(f"run.{key}: expected an object, got {type(fields[key]).__name__}")
        with self.database.write() as db:
            run = self.get(run_id)
            ts = now()
            sets: dict[str, Any] = {"updated_at": ts}
            for key in ("status", "base_version", "candidate_version", "error"):
                if key in fields:
                    sets[key] = fields[key]
            for key in ("metrics", "config"):
                if key in fields:
                    sets[key] = dumps({**run[key], **fields[key]}, f"run.{key}")
            if "demonstration_ids" in fields:
                sets["demonstration_ids"] = dumps(_ids(fields["demonstration_ids"]), "run.demonstration_ids")
            if "phase" in fields:
                sets["phase"] = fields["phase"]
                sets["phases"] = dumps(run["phases"] + [{"phase": fields["phase"], "at": ts}], "run.phase")
            if fields.get("status", "running") != "running":
                sets["finished_at"] = ts
            db.table("learn_runs").update(run_id, sets)

    def get(self, run_id: int) -> dict:
        return self.database.one("SELECT * FROM learn_runs WHERE id = ?", [run_id], f"learn run {run_id} does not exist")

    def recent(self, limit: int = 20) -> list[dict]:
        """Most recent first."""
        return self.database.rows("SELECT * FROM learn_runs ORDER BY id DESC LIMIT ?", [limit])

    def add_report(self, run_id: int, decision: str, summary: dict, path: str | None) -> int:
        if not isinstance(decision, str) or not decision.strip():
            raise ValidationError("gate_report.decision: a non-empty string is required (e.g. 'promote', 'block')")
        if not isinstance(summary, dict):
            raise ValidationError(f"gate_report.summary: expected an object, got {type(summary).__name__}")
        with self.database.write() as db:
            self.get(run_id)
            return row_id(db.execute(
                "INSERT INTO gate_reports (run_id, decision, summary, path, created_at) VALUES (?,?,?,?,?)",
                [run_id, decision, dumps(summary, "gate_report.summary"), None if path is None else str(path), now()],
            ))

    def reports(self, run_id: int | None = None) -> list[dict]:
        if run_id is None:
            return self.database.rows("SELECT * FROM gate_reports ORDER BY id")
        return self.database.rows("SELECT * FROM gate_reports WHERE run_id = ? ORDER BY id", [run_id])


def _ids(ids: Any) -> list[int]:
    if not isinstance(ids, list | tuple) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ValidationError("run.demonstration_ids: expected a list of demonstration ids")
    return sorted(set(ids))


__all__ = ["NotFoundError", "RUN_FIELDS", "RUN_STATUSES", "Runs"]
