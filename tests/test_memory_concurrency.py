"""The agent writes while the learner reads: no "database is locked", no lost row, and a
process killed mid-batch leaves either the whole batch or none of it."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from memory.store import Memory

ROOT = Path(__file__).resolve().parents[1]
STRESS_S = float(os.environ.get("SDFT_MEMORY_STRESS_S", "10"))
TOOL = {"name": "note", "description": "Write a note",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}


def child(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


READER = """
    import json, sys, time
    from memory.store import Memory
    mem = Memory(sys.argv[1]); end = time.monotonic() + float(sys.argv[2])
    reads, errors, seen = 0, [], 0
    print("ready", flush=True)
    while time.monotonic() < end:
        try:
            mem.recall("note about writer 3 item 7", k=5)
            last = mem.last_episode()
            seen = max(seen, last["id"] if last else 0)
            mem.unlearned_demonstrations(limit=20)
            mem.stats()
            reads += 1
        except Exception as exc:
            errors.append(repr(exc))
    print(json.dumps({"reads": reads, "errors": errors[:5], "n_errors": len(errors), "max_id": seen}))
"""


def test_eight_writer_threads_and_a_reader_process(tmp_path):
    with Memory(tmp_path) as setup:
        setup.add_skill("notes", "Notes", [TOOL])
    reader = child(READER, str(tmp_path), str(STRESS_S + 1))
    assert reader.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + STRESS_S
    written: dict[int, list[int]] = {}
    demos: dict[int, list[int]] = {}
    errors: list[str] = []

    def writer(w: int) -> None:
        mem = Memory(tmp_path)  # its own connection: real lock contention between writers
        ids, dids = [], []
        try:
            i = 0
            while time.monotonic() < deadline:
                msgs = [{"role": "user", "content": f"note about writer {w} item {i}"}]
                eid = mem.record_episode(msgs, [{"name": "note", "arguments": {"text": f"{w}-{i}"}}],
                                         outcome="success", meta={"writer": w, "seq": i})
                ids.append(eid)
                if i % 5 == 0:
                    dids.append(mem.promote_episode(eid, "notes"))
                if i % 7 == 0:
                    mem.set_outcome(eid, "success", note=f"checked by {w}")
                i += 1
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(f"writer {w}: {exc!r}")
        finally:
            written[w], demos[w] = ids, dids
            mem.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])

    assert errors == []
    assert report["n_errors"] == 0, report["errors"]
    assert report["reads"] > 10 and report["max_id"] > 0
    with Memory(tmp_path) as mem:
        db = mem.db
        for w, ids in written.items():
            assert ids, f"writer {w} wrote nothing"
            rows = db.execute(
                "SELECT id, json_extract(meta, '$.seq') FROM episodes WHERE json_extract(meta, '$.writer') = ? ORDER BY id",
                [w]).fetchall()
            assert [r[0] for r in rows] == ids  # every row it was told was written is there, no extra
            assert [r[1] for r in rows] == list(range(len(ids)))
            assert all(mem.demonstration(d)["provenance"]["episode_id"] in ids for d in demos[w])
        total = sum(len(v) for v in written.values())
        assert db.execute("SELECT count(*) FROM episodes").fetchone()[0] == total
        n_demos = sum(len(v) for v in demos.values())
        assert db.execute("SELECT count(*) FROM demonstrations_fts").fetchone()[0] == n_demos
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        mem.checkpoint()
        assert os.path.getsize(str(mem.path) + "-wal") == 0  # the WAL does not keep growing


BATCH_WRITER = """
    import sys
    from memory.store import Memory
    mem = Memory(sys.argv[1]); size = int(sys.argv[2]); k = int(sys.argv[3])
    mem.db.conn.set_trace_callback(
        lambda sql: print(f"tx {k}", flush=True) if sql.startswith("BEGIN IMMEDIATE") else None)
    while True:
        batch = [{"messages": [{"role": "user", "content": f"batch {k} item {i} " + "x" * 200}],
                  "meta": {"batch": k}} for i in range(size)]
        mem.record_episodes(batch)
        print(f"done {k}", flush=True)
        k += 1
"""


def test_kill_9_in_the_middle_of_a_batch_write(tmp_path):
    size = 5000
    Memory(tmp_path).close()
    first = 0
    for _ in range(3):
        proc = child(BATCH_WRITER, str(tmp_path), str(size), str(first))
        # Let a few batches commit, then kill once the next one has taken the write lock.
        target = first + 2
        for line in proc.stdout:
            if line.strip() == f"tx {target}":
                break
        time.sleep(random.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()

        conn = sqlite3.connect(tmp_path / "memory.db")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(conn.execute(
            "SELECT json_extract(meta, '$.batch'), count(*) FROM episodes GROUP BY 1").fetchall())
        conn.close()
        assert all(n == size for n in counts.values()), counts  # never a partial batch
        assert all(counts.get(b) == size for b in range(first, target)), counts
        assert counts.get(target, 0) in (0, size)
        first = max(counts) + 1
    with Memory(tmp_path) as mem:  # and the memory opens and writes normally afterwards
        mem.record_episode([{"role": "user", "content": "after"}])
        assert mem.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_many_first_openers_of_a_new_home(tmp_path):
    """Concurrent first opens migrate once: no "table already exists", no "locked"."""
    errors: list[str] = []

    def open_one(home: Path) -> None:
        try:
            Memory(home).close()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))

    for trial in range(5):
        threads = [threading.Thread(target=open_one, args=(tmp_path / f"h{trial}",)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
