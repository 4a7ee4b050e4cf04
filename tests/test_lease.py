"""The learn lease: one run at a time across processes, stale leases recovered."""

import subprocess
import sys
import time

import pytest

from memory.db import open_db
from memory.lease import LeaseHeld, acquire


def test_second_taker_is_refused_until_release(home):
    db = open_db(home)
    lease = acquire(db, ttl=60)
    lease.set_run(7)
    with pytest.raises(LeaseHeld, match=r"already in progress \(run 7"):
        acquire(open_db(home), ttl=60)
    lease.release()
    again = acquire(open_db(home), ttl=60)
    assert again.recovered is None


def test_expired_lease_is_taken_over(home):
    first = acquire(open_db(home), ttl=0.05)
    first.set_run(3)
    time.sleep(0.1)
    second = acquire(open_db(home), ttl=60)
    assert second.recovered["run_id"] == 3
    assert not first.renew()  # the old holder learns it lost the lease


def test_lease_of_a_dead_process_is_recovered_at_once(home):
    code = ("import os, sys; from memory.db import open_db; from memory.lease import acquire;"
            "l = acquire(open_db(sys.argv[1]), ttl=3600); l.set_run(11); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(home)], check=True)
    lease = acquire(open_db(home), ttl=60)
    assert lease.recovered["run_id"] == 11


def test_heartbeat_keeps_a_short_lease(home):
    lease = acquire(open_db(home), ttl=0.3)
    lease.keep_alive(every=0.05)
    time.sleep(0.8)
    with pytest.raises(LeaseHeld):
        acquire(open_db(home), ttl=60)
    lease.release()
    acquire(open_db(home), ttl=60)


def test_lease_writes_wait_for_the_memorys_write_lock(home):
    """On the memory's own connection, a lease write waits for another thread's transaction and
    never commits it halfway (the lease writes through Database.write())."""
    import threading

    from memory.store import Memory

    memory = Memory(home)
    lease = acquire(memory.database, ttl=60)
    inside, done = threading.Event(), threading.Event()
    renewed: list[bool] = []

    def renew():
        inside.wait()
        renewed.append(lease.renew())
        done.set()

    threading.Thread(target=renew).start()
    with pytest.raises(RuntimeError, match="abandon"):
        with memory.database.write() as db:
            db.execute("INSERT INTO leases (name, holder, pid, host, acquired_at, expires_at) "
                       "VALUES ('half-done', 'x', 0, '', 0, 0)")
            inside.set()
            assert not done.wait(0.2)  # the renew waits for this transaction
            raise RuntimeError("abandon")
    assert done.wait(5) and renewed == [True]
    assert memory.database.value("SELECT COUNT(*) FROM leases WHERE name = 'half-done'") == 0
    lease.release()
    memory.close()
