"""A lease in memory.db: at most one learning run at a time, across processes.

A holder takes the lease for `ttl` seconds and renews it while it works (a heartbeat thread).
A lease whose holder stopped renewing (crashed, killed -9, machine slept past the ttl) or whose
process is gone on this host is taken over by the next taker, who is told which run it
interrupted so that run can be marked failed. Taking, renewing and releasing are single short
write transactions through the one write path (`Database.write()`: BEGIN IMMEDIATE, busy timeout,
the connection's thread lock), so the agent writing episodes is never held up and a lease write
never commits another thread's half-done transaction on a shared connection.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from memory.database import Database

LEARN = "learn"

_RENEW = "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?"


class LeaseHeld(RuntimeError):
    """Another live process holds the lease."""


@dataclass
class Lease:
    database: Database  # every write goes through database.write() (docs/ARCHITECTURE.md, "Memory")
    name: str
    holder: str
    ttl: float
    run_id: int | None = None
    recovered: dict | None = None  # the stale lease this one replaced, if any
    _stop: threading.Event | None = None
    _owned: bool = False  # the lease opened `database` itself, so it closes it on release

    def renew(self) -> bool:
        with self.database.write() as db:
            cur = db.execute(_RENEW, [time.time() + self.ttl, self.name, self.holder])
        return cur.rowcount == 1

    def set_run(self, run_id: int) -> None:
        self.run_id = run_id
        with self.database.write() as db:
            db.execute("UPDATE leases SET run_id = ? WHERE name = ? AND holder = ?",
                       [run_id, self.name, self.holder])

    def release(self) -> None:
        if self._stop:
            self._stop.set()
        with self.database.write() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", [self.name, self.holder])
        if self._owned:
            self.database.close()

    def keep_alive(self, every: float | None = None) -> None:
        """Renew from a daemon thread until released (its own connection, the same write path)."""
        stop = self._stop = threading.Event()
        home = self.database.home
        interval = every or max(self.ttl / 3, 0.05)

        def beat():
            database = Database(home)
            try:
                while not stop.wait(interval):
                    with database.write() as db:
                        db.execute(_RENEW, [time.time() + self.ttl, self.name, self.holder])
            finally:
                database.close()

        threading.Thread(target=beat, name=f"lease-{self.name}", daemon=True).start()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _alive_here(row: dict) -> bool:
    if row["host"] != socket.gethostname():
        return True  # cannot tell for another host: trust the expiry time alone
    try:
        os.kill(row["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(db: Database | sqlite_utils.Database, name: str = LEARN, ttl: float = 300.0) -> Lease:
    """Take the lease or raise LeaseHeld naming the holder; a stale lease is taken over.

    Pass the memory's `Database` (`Memory.database`), so the lease shares its write lock. A bare
    sqlite-utils connection is accepted for old callers: the lease then opens its own `Database`
    on the same file and closes it on release.
    """
    owned = not isinstance(db, Database)
    if isinstance(db, Database):
        database = db
    else:
        database = Database(Path(db.execute("PRAGMA database_list").fetchone()[2]).parent)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    now = time.time()
    try:
        with database.write() as w:
            w.execute("INSERT OR IGNORE INTO leases (name, holder, pid, host, acquired_at, expires_at) "
                      "VALUES (?, '', 0, '', 0, 0)", [name])  # make the row exist, then decide
            row = next(w.query("SELECT * FROM leases WHERE name = ?", [name]))
            stale = None
            if row["holder"]:
                if row["expires_at"] > now and _alive_here(row):
                    raise LeaseHeld(
                        f"a learning run is already in progress (run {row['run_id']}, process "
                        f"{row['pid']} on {row['host']}, lease until "
                        f"{time.strftime('%H:%M:%S', time.localtime(row['expires_at']))}); wait for it to finish"
                    )
                stale = dict(row)
            w.execute(
                "UPDATE leases SET holder = ?, pid = ?, host = ?, run_id = NULL, acquired_at = ?, "
                "expires_at = ? WHERE name = ?",
                [holder, os.getpid(), socket.gethostname(), now, now + ttl, name],
            )
    except BaseException:
        if owned:
            database.close()
        raise
    return Lease(database=database, name=name, holder=holder, ttl=ttl, recovered=stale, _owned=owned)
