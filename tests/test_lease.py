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
