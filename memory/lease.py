"""A lease in memory.db: at most one learning run at a time, across processes.

A holder takes the lease for `ttl` seconds and renews it while it works (a heartbeat thread).
A lease whose holder stopped renewing (crashed, killed -9, machine slept past the ttl) or whose
process is gone on this host is taken over by the next taker, who is told which run it
interrupted so that run can be marked failed. Taking, renewing and releasing are single short
write transactions, so the agent writing episodes is never held up.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

import sqlite_utils

LEARN = "learn"


class LeaseHeld(RuntimeError):
    """Another live process holds the lease."""


@dataclass
class Lease:
    db: sqlite_utils.Database
    name: str
    holder: str
    ttl: float
    run_id: int | None = None
    recovered: dict | None = None  # the stale lease this one replaced, if any
    _stop: threading.Event | None = None

    def renew(self) -> bool:
        cur = self.db.execute(
            "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
            [time.time() + self.ttl, self.name, self.holder],
        )
        self.db.conn.commit()
        return cur.rowcount == 1

    def set_run(self, run_id: int) -> None:
        self.run_id = run_id
        self.db.execute("UPDATE leases SET run_id = ? WHERE name = ? AND holder = ?",
                        [run_id, self.name, self.holder])
        self.db.conn.commit()

    def release(self) -> None:
        if self._stop:
            self._stop.set()
        self.db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", [self.name, self.holder])
        self.db.conn.commit()

    def keep_alive(self, every: float | None = None) -> None:
        """Renew from a daemon thread until released (uses its own connection)."""
        self._stop = threading.Event()
        path = self.db.execute("PRAGMA database_list").fetchone()[2]
        interval = every or max(self.ttl / 3, 0.05)

        def beat():
            from memory.db import connect

            db = connect(path)
            try:
                while not self._stop.wait(interval):
                    db.execute("UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                               [time.time() + self.ttl, self.name, self.holder])
                    db.conn.commit()
            finally:
                db.close()

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


def acquire(db: sqlite_utils.Database, name: str = LEARN, ttl: float = 300.0) -> Lease:
    """Take the lease or raise LeaseHeld naming the holder; a stale lease is taken over."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    now = time.time()
    with db.atomic():
        db.execute("INSERT OR IGNORE INTO leases (name, holder, pid, host, acquired_at, expires_at) "
                   "VALUES (?, '', 0, '', 0, 0)", [name])  # make the row exist, then decide
        row = next(db.query("SELECT * FROM leases WHERE name = ?", [name]))
        stale = None
        if row["holder"]:
            if row["expires_at"] > now and _alive_here(row):
                raise LeaseHeld(
                    f"a learning run is already in progress (run {row['run_id']}, process "
                    f"{row['pid']} on {row['host']}, lease until "
                    f"{time.strftime('%H:%M:%S', time.localtime(row['expires_at']))}); wait for it to finish"
                )
            stale = dict(row)
        db.execute(
            "UPDATE leases SET holder = ?, pid = ?, host = ?, run_id = NULL, acquired_at = ?, "
            "expires_at = ? WHERE name = ?",
            [holder, os.getpid(), socket.gethostname(), now, now + ttl, name],
        )
    return Lease(db=db, name=name, holder=holder, ttl=ttl, recovered=stale)
