"""Opening memory.db: WAL, busy timeout, bounded WAL, and the schema migrations.

Every process (agent, learner, CLI) opens the database through `open_db`, so the pragmas that
make one writer plus concurrent readers safe are set in exactly one place. The file is created
0600 before SQLite opens it: SQLite gives its -wal and -shm files the database's permissions.
A file SQLite cannot read as a database raises DatabaseCorrupt, which names the recovery.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlite_utils

from memory.home import private_file, resolve_home
from memory.schema import migrations

DB_NAME = "memory.db"
BUSY_TIMEOUT_MS = 30_000
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is truncated back to this after checkpoints


class DatabaseCorrupt(RuntimeError):
    """memory.db is damaged; the message says how to recover."""

    def __init__(self, path: Path, cause: BaseException):
        self.path = path
        super().__init__(corruption_message(path, cause))


def is_corruption(exc: BaseException) -> bool:
    """SQLite's words for a damaged file (not a busy or locked database, not a bad statement)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    msg = str(exc).lower()
    return type(exc) is sqlite3.DatabaseError or "malformed" in msg or "not a database" in msg


def corruption_message(path: Path, cause: BaseException) -> str:
    return (
        f"the memory database {path} is damaged ({cause}).\n"
        f"Recover what is readable with `sqlite3 {path} .recover | sqlite3 recovered.db` and put "
        "recovered.db in its place, or move it aside and `sdft-agent memory import` an earlier `memory export`."
    )


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
    """Open (creating if needed, private) `<home>/memory.db` and bring its schema up to date."""
    path = private_file(resolve_home(home) / DB_NAME)
    for attempt in range(40):
        try:
            db = connect(path)
            if migrations.pending(db):
                migrate(db)
            return db
        except sqlite3.OperationalError as exc:
            # Switching a brand-new file to WAL takes an exclusive lock that SQLite's busy
            # handler does not wait for: concurrent first openers retry instead of failing.
            if "locked" not in str(exc) or attempt == 39:
                raise
            time.sleep(0.05)
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                raise DatabaseCorrupt(path, exc) from exc
            raise
    raise AssertionError("unreachable")


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
