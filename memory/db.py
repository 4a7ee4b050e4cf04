"""Opening memory.db: WAL, busy timeout, bounded WAL, and the schema migrations.

Every process (agent, learner, CLI) opens the database through `open_db`, so the pragmas that
make one writer plus concurrent readers safe are set in exactly one place.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from memory.home import resolve_home
from memory.schema import migrations

DB_NAME = "memory.db"
BUSY_TIMEOUT_MS = 30_000
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is truncated back to this after checkpoints


def connect(path: Path) -> sqlite_utils.Database:
    """A connection with the concurrency pragmas set; no schema work."""
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    db = sqlite_utils.Database(conn)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if db.journal_mode != "wal":
        db.enable_wal()
    db.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL keeps the db consistent
    db.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    db.execute("PRAGMA foreign_keys = ON")
    return db


def open_db(home: str | Path | None = None) -> sqlite_utils.Database:
    """Open (creating if needed) `<home>/memory.db` and bring its schema up to date."""
    path = resolve_home(home) / DB_NAME
    db = connect(path)
    if migrations.pending(db):
        migrate(db)
    return db


def migrate(db: sqlite_utils.Database) -> None:
    """Apply pending migrations, one opener at a time.

    The whole set runs inside one BEGIN IMMEDIATE transaction (each migration becomes a savepoint
    within it), so a concurrent first opener waits on busy_timeout and then finds nothing pending.
    Taking the lock and releasing it before `apply` is not enough: two openers can both see a
    migration pending ("table already exists"), and apply's deferred BEGIN that reads and then
    writes fails with "database is locked" without waiting.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        migrations.apply(db)
    except BaseException:
        db.rollback()
        raise
    db.commit()


def checkpoint(db: sqlite_utils.Database) -> None:
    """Fold the WAL back into the database and truncate it (call after large batches)."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
