"""kill -9 beyond training: a learning run killed while it merges, gates or promotes leaves an
intact memory.db, a champion that is the old version or the whole new one, and a next run that
works. (Training is covered by tests/test_learn_run.py.)

Each run is a separate process that kills itself with SIGKILL at an exact point (a function it
reaches is replaced by the kill), so nothing of it gets to clean up, as with `kill -9`. The runs
are forked from one launcher that has imported torch, transformers and peft but computed nothing,
so the module pays for those imports once instead of once per kill point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_learn_run import PACK

from learner.config import LearnConfig
from learner.gate import GateConfig
from learner.run import learn_now
from memory.models import ModelStore
from memory.store import Memory
from skills.install import install_pack
from skills.pack import SkillPack

ROOT = Path(__file__).parents[1]
FAST = LearnConfig(max_steps=1, batch_size=2, max_new_tokens=4)
# a gate that promotes what the random tiny model learns (only the skill's cases, and no gain
# required), so the promotion itself can be interrupted
PROMOTING = GateConfig(probe_sets=(), fetch_probes=False, max_new_tokens=8, min_gain=-1.0)

CRASHING_RUN = r"""
import json, os, signal, sys

import peft, torch, transformers  # noqa: F401  imported once, before any fork; nothing computed yet

import learner.gate, learner.merge, learner.run, memory.models, memory.store


def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point):
    if point == "merge: writing the version":
        learner.merge.save_adapter = die  # the merged weights are in the temporary folder, the adapter is not
    elif point == "merge: committing the version":
        memory.models.fsync_dir = die  # renamed under its final name, its row not yet committed
    elif point == "gate: evaluating the candidate":
        real_load = learner.gate._load

        def load(store, version):
            if version != "tiny":  # the champion is judged, the candidate is loaded next
                die()
            return real_load(store, version)

        learner.gate._load = load
    elif point == "promotion: inside the alias transaction":
        real_use = memory.models.ModelStore.use

        def use(self, *args, **kwargs):
            execute = self.db.execute

            def execute_then_die(sql, *params):
                out = execute(sql, *params)
                if "alias_history" in sql:  # the alias row is updated, the transaction not committed
                    die()
                return out

            self.db.execute = execute_then_die
            return real_use(self, *args, **kwargs)

        memory.models.ModelStore.use = use
    elif point == "promotion: after the alias moved":
        memory.store.Memory.add_gate_report = die  # promoted; no report, run not finished
    else:
        raise SystemExit(f"unknown point {point}")


def crash(home, point):
    from learner.config import LearnConfig
    from learner.gate import GateConfig

    arm(point)
    learner.run.learn_now(home, LearnConfig(max_steps=1, batch_size=2, max_new_tokens=4), in_process=True,
                          gate_config=GateConfig(probe_sets=(), fetch_probes=False, max_new_tokens=8, min_gain=-1.0))


children = {}
for home, point in zip(sys.argv[1::2], sys.argv[2::2]):
    pid = os.fork()
    if pid == 0:  # one crashing run; exit 5: the kill point was never reached, 6: it raised
        try:
            crash(home, point)
            os._exit(5)
        except BaseException:
            import traceback
            traceback.print_exc()
            os._exit(6)
    children[point] = pid
status = {}
for point, pid in children.items():
    _, code = os.waitpid(pid, 0)
    status[point] = -os.WTERMSIG(code) if os.WIFSIGNALED(code) else os.WEXITSTATUS(code)
print(json.dumps(status))
"""

POINTS = {  # where it dies → the champion it must leave
    "merge: writing the version": "old",
    "merge: committing the version": "old",
    "gate: evaluating the candidate": "old",
    "promotion: inside the alias transaction": "old",
    "promotion: after the alias moved": "new",
}


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """One home per kill point, each with a tiny champion and a skill to learn; the crashing runs
    are forked from one launcher at once (they are independent), so the module costs about one
    run's time. Yields point -> (home, the run's exit: -9 when it was killed)."""
    from tiny import save_tiny

    src = tmp_path_factory.mktemp("tiny-src")
    save_tiny(src)
    homes = {}
    for i, point in enumerate(POINTS):
        home = tmp_path_factory.mktemp(f"crash-{i}") / "home"
        ModelStore(home, quiet=True).add_folder(src, "tiny")
        with Memory(home) as memory:
            install_pack(memory, SkillPack.from_dict(PACK))
        homes[point] = home
    env = {**os.environ, "SDFT_AGENT_THREADS": "1"}
    argv = [a for point, home in homes.items() for a in (str(home), point)]
    proc = subprocess.run([sys.executable, "-c", CRASHING_RUN, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads(proc.stdout.strip().splitlines()[-1])
    return {point: (home, status[point], proc.stderr) for point, home in homes.items()}


@pytest.mark.parametrize("point", list(POINTS))
def test_kill_9_leaves_a_whole_champion_and_the_next_run_works(killed_runs, point):
    skill_home, returncode, err = killed_runs[point]
    assert returncode == -signal.SIGKILL, err[-3000:]

    memory, store = Memory(skill_home), ModelStore(skill_home, quiet=True)
    assert memory.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    [killed] = memory.runs()
    assert killed["status"] == "running"  # nobody was left to record the end
    champion = store.champion().version
    if POINTS[point] == "old":
        assert champion == "tiny"
    else:
        assert champion == killed["candidate_version"] and champion != "tiny"
    for v in store.versions():  # every registered version is whole, the champion included
        store.verify(v.version)

    memory.add_demonstration("echoes", [{"role": "user", "content": "say violet"}],
                             [{"name": "echo", "arguments": {"word": "violet"}}])
    result = learn_now(skill_home, FAST, gate_config=PROMOTING, in_process=True)
    assert result.status == "promoted" and result.candidate is not None
    store.verify(result.candidate)
    after = memory.run(killed["id"])
    assert "interrupted" in after["error"]
    if POINTS[point] == "old":
        assert after["status"] == "failed" and "the champion was not changed" in after["error"]
        # what the killed run had selected is learned again by the next one, with the new one
        assert memory.run(result.run_id)["metrics"]["new_demonstrations"] == 4
    else:
        assert after["status"] == "promoted" and f"{champion} is the champion" in after["error"]
        assert memory.run(result.run_id)["metrics"]["new_demonstrations"] == 1
    assert store.champion().version == result.candidate
    assert list((skill_home / "models").glob(".tmp-*")) == []  # the dead run's temporary folder is gone
    assert memory.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    memory.close()
