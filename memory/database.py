"""One database object per connection, with the ONE write path every writer uses.

`write()` is one short `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so a
writer waits on busy_timeout instead of failing with "database is locked" when it would have had
to upgrade a read lock (which SQLite refuses to wait for). Readers in other processes never block
writers (WAL). The episodic memory's repositories and the model store's champion moves all write
through it (docs/ARCHITECTURE.md, "Memory").
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

from memory.db import DB_NAME, checkpoint, open_db
from memory.home import resolve_home

JSON_COLUMNS = frozenset(
    {"messages", "tool_calls", "provenance", "meta", "expected", "config", "metrics", "phases",
     "summary", "parameters", "demonstration_ids"}
)


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


def row_id(cursor: sqlite3.Cursor) -> int:
    """The id an INSERT just gave its row."""
    if cursor.lastrowid is None:
        raise RuntimeError("the statement inserted no row")
    return cursor.lastrowid


def is_locked_error(exc: BaseException) -> bool:
    """The error every caller must never see (used by tests and the benchmark)."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


class Database:
    """`<home>/memory.db`: one connection, shared safely by threads (calls hold a lock)."""

    def __init__(self, home: str | Path | None = None):
        self.home = resolve_home(home)
        self.db: sqlite_utils.Database = open_db(self.home)
        self.path = self.home / DB_NAME
        self.lock = threading.RLock()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction holding the write lock from its first statement. Inside
        another write it is a savepoint of that transaction, so several calls can be one
        atomic unit: `with mem.write(): mem.add_skill(...); mem.add_demonstration(...)`."""
        with self.lock:
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
        with self.lock, self.db.atomic():
            yield self.db

    def rows(self, sql: str, params: Any = None) -> list[dict]:
        with self.lock:
            return [decode(r) for r in self.db.query(sql, params)]

    def one(self, sql: str, params: Any, missing: str) -> dict:
        rows = self.rows(sql, params)
        if not rows:
            raise NotFoundError(missing)
        return rows[0]

    def value(self, sql: str, params: Any = None) -> Any:
        """The first column of the first row (None when there is no row)."""
        with self.lock:
            row = self.db.execute(sql, params or []).fetchone()
        return None if row is None else row[0]

    def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (after big batches)."""
        with self.lock:
            checkpoint(self.db)
