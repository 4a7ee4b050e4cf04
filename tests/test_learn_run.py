"""One learning run end to end (learner.run) on the tiny model: skip, gate, crash recovery."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learner.config import LearnConfig
from learner.gate import GateConfig
from learner.run import learn_now
from memory.models import ModelStore
from memory.store import Memory
from skills.install import install_pack
from skills.pack import SkillPack

TOOL = {"name": "echo", "description": "Repeat a word",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}
PACK = {
    "name": "echoes", "description": "say it back", "tools": [TOOL],
    "demonstrations": [
        {"messages": [{"role": "user", "content": f"say {w}"}], "tool_calls": [{"name": "echo", "arguments": {"word": w}}]}
        for w in ("red", "blue", "green")
    ],
    "eval": [
        {"messages": [{"role": "user", "content": f"repeat {w}"}], "expected": [{"name": "echo", "arguments": {"word": [w]}}]}
        for w in ("cyan", "pink")
    ],
}
FAST = LearnConfig(max_steps=2, batch_size=2, max_new_tokens=4)
GATE = GateConfig(probe_sets=("drift",), fetch_probes=False, max_new_tokens=8)


@pytest.fixture
def skill_home(tiny_home):
    with Memory(tiny_home) as memory:
        install_pack(memory, SkillPack.from_dict(PACK))
    return tiny_home


def test_too_few_new_demonstrations_is_a_recorded_skip(skill_home):
    result = learn_now(skill_home, FAST, min_new=10, gate_config=GATE)
    assert result.status == "skipped"
    run = Memory(skill_home).run(result.run_id)
    assert run["status"] == "skipped" and "3 new demonstration(s), fewer than the threshold of 10" in run["error"]


def test_a_run_trains_gates_and_leaves_a_blocked_champion_alone(skill_home):
    result = learn_now(skill_home, FAST, gate_config=GATE, in_process=True)
    store = ModelStore(skill_home, quiet=True)
    run = Memory(skill_home).run(result.run_id)
    assert result.candidate == "v0001" and store.get("v0001").learn_run_id == result.run_id
    # a random tiny model cannot improve at the skill, so the gate must block and keep the champion
    assert result.status == "blocked" and run["status"] == "blocked"
    assert store.champion().version == "tiny"
    assert [p["phase"] for p in run["phases"]] == ["select", "train", "train", "merge", "candidate", "gate", "blocked"]
    assert set(run["metrics"]["timings"]) == {"train_s", "gate_s"}
    assert Path(result.report).is_file()
    memory = Memory(skill_home)
    demos = [d["id"] for d in memory.demonstrations("echoes")]
    # blocked: nothing was learned, so the demonstrations wait for the next run (attempt 1 of 2)
    assert [d["id"] for d in memory.unlearned_demonstrations("echoes")] == demos
    assert result.reasons[-1] == "3 of its 3 demonstration(s) stay in the queue for the next run (tried 1 of 2 time(s))"
    again = learn_now(skill_home, FAST, gate_config=GATE, in_process=True)
    assert again.status == "blocked" and memory.run(again.run_id)["demonstration_ids"] == demos
    assert memory.run(again.run_id)["metrics"]["tried_again"] == 3
    assert memory.unlearned_demonstrations("echoes") == []  # two runs that did not land: given up
    assert again.reasons[-1] == ("its 3 demonstration(s) have been tried by 2 run(s) that did not land and are "
                                 "not selected again; `sdft-agent learn --now --attempts 3` tries once more")
    assert [d["id"] for d in memory.unlearned_demonstrations("echoes", attempts=3)] == demos


def test_a_demonstration_added_during_training_is_left_for_the_next_run(skill_home):
    """The run selects once: the ids on its row are what it trains on, marks used and gates;
    a demonstration taught while it trains stays unlearned."""
    memory = Memory(skill_home)
    selected = [d["id"] for d in memory.unlearned_demonstrations()]
    late: list[int] = []

    def teach_during_training(line: str) -> None:
        if " new demonstration(s)" in line and not late:  # logged as training starts
            late.append(memory.add_demonstration(
                "echoes", [{"role": "user", "content": "say mauve"}],
                [{"name": "echo", "arguments": {"word": "mauve"}}])[0])

    result = learn_now(skill_home, FAST, gate_config=GATE, in_process=True, log=teach_during_training)
    run = memory.run(result.run_id)
    assert late and run["demonstration_ids"] == selected and late[0] not in selected
    assert ModelStore(skill_home, quiet=True).manifest(result.candidate)["demonstrations"] == selected
    assert [d["id"] for d in memory.unlearned_demonstrations(attempts=1)] == late  # blocked ones aside
    assert memory.demonstration(late[0])["used_in_runs"] == []
    assert all(memory.demonstration(i)["used_in_runs"] == [result.run_id] for i in selected)


def test_kill_during_training_keeps_the_champion_and_the_next_run_recovers(skill_home):
    code = ("import sys; from learner.run import learn_now; from learner.config import LearnConfig;"
            "learn_now(sys.argv[1], LearnConfig(max_steps=400, batch_size=1, max_new_tokens=32))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(skill_home)], cwd=Path(__file__).parents[1])
    memory = Memory(skill_home)
    deadline = time.time() + 120
    while True:
        runs = memory.runs()
        if runs and runs[0]["metrics"].get("step", 0) >= 1:  # an optimizer step is done
            break
        assert time.time() < deadline and proc.poll() is None, "training never started"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = memory.runs()[0]
    assert killed["status"] == "running"
    store = ModelStore(skill_home, quiet=True)
    assert store.champion().version == "tiny"
    assert memory.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    time.sleep(1.5)  # the orphaned trainer notices its parent is gone and exits
    result = learn_now(skill_home, FAST, gate_config=GATE, in_process=True)
    assert memory.run(killed["id"])["status"] == "failed"
    assert "interrupted: process" in memory.run(killed["id"])["error"]
    assert result.status in ("promoted", "blocked") and result.candidate is not None
