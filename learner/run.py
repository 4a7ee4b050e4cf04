"""One learning run end to end, the unit the scheduler and `sdft-agent learn --now` execute:

    lease → recover crashed runs → select new demonstrations (their ids go on the run row and to
    the child) (+ replay) → train and merge in a child process → retention gate → promote or
    block → release

A blocked run's demonstrations are not lost: the next run tries them again, until
memory.demonstrations.ATTEMPTS runs that did not land have tried them (`attempts`).

Every phase is recorded on the run's row with its duration. Training happens in a child process
so the weights, optimizer state and allocator fragmentation of a run never stay in a long-lived
daemon, and so a crash in training (out of memory, a killed child) is recorded by a parent that
is still alive. Whatever dies, the champion alias has not moved: it moves only in the gate's
final transaction. A run left 'running' by a dead process is marked failed by the next start.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from memory.demonstrations import ATTEMPTS
from memory.home import relative
from memory.lease import LeaseHeld, acquire
from memory.store import Memory

LEASE_TTL_S = 120.0


@dataclass
class RunResult:
    status: str  # promoted | blocked | skipped | failed | busy
    run_id: int | None = None
    candidate: str | None = None
    champion: str | None = None
    report: str | None = None
    reasons: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _pid_dead(pid: int | None, host: str | None) -> bool:
    if not pid or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def recover_interrupted(memory: Memory) -> list[int]:
    """Close every run still 'running' whose process is gone (killed, crashed, power cut).

    The champion alias moves in one transaction, so a dead run either promoted its candidate
    (recorded as promoted) or changed nothing (recorded as failed); in the second case the
    demonstrations it had marked as used are released, so the next run learns them again.
    """
    from memory.models import ModelStore

    failed = []
    for run in memory.runs(limit=1000):
        if run["status"] != "running":
            continue
        owner = run["metrics"].get("process", {})
        if _pid_dead(owner.get("pid"), owner.get("host")):
            where = f"process {owner.get('pid')} died during phase {run.get('phase') or 'start'}"
            candidate = run.get("candidate_version")
            if candidate and ModelStore(memory.home, quiet=True).champion_name() == candidate:
                memory.finish_run(run["id"], "promoted",
                                  error=f"interrupted after promoting {candidate}: {where}; {candidate} is the champion")
            else:
                memory.finish_run(run["id"], "failed",
                                  error=f"interrupted: {where}; the champion was not changed")
                with memory.write() as db:  # its demonstrations were never learned into a champion
                    db.execute("DELETE FROM demonstration_uses WHERE run_id = ?", [run["id"]])
            failed.append(run["id"])
    return failed


def _watch_parent(parent: int) -> None:
    """In the child: exit if the parent dies (kill -9 leaves no one to clean up otherwise)."""
    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _train_child(home, cfg_dict, skill, run_id, demo_ids, parent_pid, conn) -> None:
    _watch_parent(parent_pid)
    try:
        from learner.config import LearnConfig
        from learner.learn import learn_candidate

        out = learn_candidate(home, LearnConfig(**cfg_dict), skill=skill, run_id=run_id,
                              progress=False, demonstration_ids=demo_ids)
        conn.send({"ok": True, "candidate": out.candidate, "summary": out.summary})
    except BaseException as exc:  # report everything to the parent, which records it
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def train_in_child(home, cfg, skill, run_id, demo_ids: list[int]) -> dict:
    """Train on exactly `demo_ids` (the parent's selection) in a fresh process."""
    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_train_child, name=f"learn-run-{run_id}",
                       args=(str(home), cfg.to_dict(), skill, run_id, list(demo_ids), os.getpid(),
                             child_end))
    proc.start()
    child_end.close()
    try:
        result = parent_end.recv()
    except EOFError:
        result = {"ok": False, "error": "the training process died without a result"}
    proc.join()
    if proc.exitcode not in (0, None) and result.get("ok"):
        result = {"ok": False, "error": f"the training process exited with code {proc.exitcode}"}
    if not result["ok"] and proc.exitcode and proc.exitcode < 0:
        result["error"] += f" (killed by signal {-proc.exitcode})"
    return result


def learn_now(
    home=None,
    cfg=None,
    *,
    skill: str | None = None,
    min_new: int = 1,
    attempts: int = ATTEMPTS,
    gate_config=None,
    in_process: bool = False,
    log: Callable[[str], None] = lambda _: None,
) -> RunResult:
    """Run one learning run if there is enough to learn and no other run holds the lease.
    `attempts`: runs that did not land (blocked, failed) after which a demonstration is no longer
    selected."""
    from learner.config import shipped_config

    cfg = cfg or shipped_config()
    memory = Memory(home)
    try:
        lease = acquire(memory.database, ttl=LEASE_TTL_S)
    except LeaseHeld as exc:  # not logged: the result says it, once, to whoever asked
        return RunResult("busy", reasons=[str(exc)])
    lease.keep_alive()
    timings: dict[str, float] = {}
    run_id = None
    try:
        recovered = recover_interrupted(memory)
        if recovered:
            log(f"marked interrupted run(s) {', '.join(map(str, recovered))} as failed")
        # Selected once, here: the child trains on exactly these and the gate judges their skill;
        # a demonstration that arrives meanwhile waits for the next run.
        new = memory.unlearned_demonstrations(skill, attempts=attempts)
        ids = [d["id"] for d in new]
        again = sum(bool(d.get("used_in_runs")) for d in new)
        run_id = memory.start_run(cfg.method, cfg.to_dict(), skill=skill, demonstration_ids=ids)
        lease.set_run(run_id)
        memory.update_run(run_id, phase="select", metrics={
            "process": {"pid": os.getpid(), "host": socket.gethostname()},
            "new_demonstrations": len(new), "tried_again": again, "replay": cfg.replay})
        if len(new) < min_new:
            why = (f"{len(new)} new demonstration(s)" + (f" of {skill}" if skill else "")
                   + f", fewer than the threshold of {min_new}")
            memory.finish_run(run_id, "skipped", error=why)
            log(f"skipped: {why}")
            return RunResult("skipped", run_id, reasons=[why])

        t = time.perf_counter()
        memory.update_run(run_id, phase="train")
        log(f"run {run_id}: {cfg.method} on {len(new)} new demonstration(s)"
            + (f" ({again} tried again after a run that did not land)" if again else "") + "…")
        trained: dict[str, Any]
        if in_process:
            from learner.learn import learn_candidate

            out = learn_candidate(home, cfg, skill=skill, run_id=run_id, progress=False,
                                  demonstration_ids=ids)
            trained = {"ok": True, "candidate": out.candidate, "summary": out.summary}
        else:
            trained = train_in_child(memory.home, cfg, skill, run_id, ids)
        timings["train_s"] = time.perf_counter() - t
        if not trained["ok"]:
            memory.finish_run(run_id, "failed", error=trained["error"], metrics={"timings": timings})
            log(f"run {run_id} failed in training: {trained['error']}")
            return RunResult("failed", run_id, reasons=[trained["error"]], timings=timings)
        candidate = trained["candidate"]

        t = time.perf_counter()
        memory.update_run(run_id, phase="gate", candidate_version=candidate, metrics={"timings": timings})
        from learner.gate import run_gate

        learned = skill or _only_skill(new)  # the skill that must improve, when there is one
        gate = run_gate(memory.home, candidate, skill=learned, run_id=run_id, config=gate_config, log=log)
        timings["gate_s"] = time.perf_counter() - t
        status = "promoted" if gate.promoted else "blocked"
        memory.update_run(run_id, phase=status)
        memory.finish_run(run_id, status, metrics={"timings": timings, "gate": {
            "decision": gate.decision.decision, "report": relative(gate.report_path, memory.home)}})
        log(f"run {run_id}: {status} ({candidate} vs {gate.champion}); report {gate.report_path}")
        reasons = list(gate.decision.reasons)
        if not gate.promoted:
            reasons.append(_what_next(memory, ids, skill, attempts))
            log(reasons[-1])
        return RunResult(status, run_id, candidate, gate.champion if not gate.promoted else candidate,
                         str(gate.report_path), reasons, timings)
    except BaseException as exc:
        if run_id is not None:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            memory.finish_run(run_id, status, error=f"{type(exc).__name__}: {exc}",
                              metrics={"timings": timings})
        raise
    finally:
        lease.release()


def _what_next(memory: Memory, ids: list[int], skill: str | None, attempts: int) -> str:
    """What becomes of a blocked run's demonstrations, in a sentence."""
    mine = set(ids)
    queued = [d for d in memory.unlearned_demonstrations(skill, attempts=attempts) if d["id"] in mine]
    if queued:
        tried = max(len(d["used_in_runs"]) for d in queued)  # all by runs that did not land
        return (f"{len(queued)} of its {len(ids)} demonstration(s) stay in the queue for the next run "
                f"(tried {tried} of {attempts} time(s))")
    option = f" --skill {skill}" if skill else ""
    return (f"its {len(ids)} demonstration(s) have been tried by {attempts} run(s) that did not land and are "
            f"not selected again; `sdft-agent learn --now{option} --attempts {attempts + 1}` tries once more")


def _only_skill(demos: list[dict]) -> str | None:
    skills = {d.get("skill") for d in demos}
    return skills.pop() if len(skills) == 1 else None


def scheduled_learn(home: str, min_new: int = 1, **options) -> dict:
    """The scheduler's job: one run with the saved defaults; never raises (the run records it)."""
    try:
        return learn_now(home, min_new=min_new, **options).to_dict()
    except Exception as exc:  # recorded on the run; the scheduler must keep its next firing
        return {"status": "failed", "reasons": [f"{type(exc).__name__}: {exc}"]}
