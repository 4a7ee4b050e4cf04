"""`sdft-agent serve`: the agent and the nightly learner in one process.

Chat arrives on stdin as JSON lines, one request a line, one response a line:
    {"question": "convert 5 km to miles", "skill": "unit_convert"}   → the episode as JSON
    {"command": "status"}                                             → champion, next/last run
    {"command": "good"|"bad", "episode_id": 12}                       → feedback
    {"command": "learn"}                                              → a learning run now
Ctrl-C (or end of input) stops cleanly: the scheduler waits for a run in progress, which
finishes or is recorded as interrupted by its own handler.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from cli.common import HomeOption, friendly_errors


def status_of(memory, store, scheduler) -> dict:
    from learner.scheduler import next_run

    runs = [r for r in memory.runs(limit=20) if r["method"] != "gate"]
    last = runs[0] if runs else None
    champ = store.champion()
    return {
        "champion": champ.version if champ else None,
        "next_run": str(next_run(scheduler)) if scheduler else None,
        "last_run": None if last is None else {
            "id": last["id"], "status": last["status"], "candidate": last.get("candidate_version"),
            "finished_at": last.get("finished_at"), "error": last.get("error"),
            "report": (last["metrics"].get("gate") or {}).get("report"),
        },
        "unlearned_demonstrations": len(memory.unlearned_demonstrations()),
    }


@friendly_errors
def serve(
    schedule: Annotated[str, typer.Option(help="When to learn, as a 5-field crontab line (local time).")] = "0 2 * * *",
    min_new: Annotated[int, typer.Option(help="Skip a scheduled run (recorded) with fewer new demonstrations than this.")] = 5,
    skill: Annotated[str | None, typer.Option(help="Offer only this skill's tools to the agent.")] = None,
    recall: Annotated[int, typer.Option(help="Demonstrations recalled into each question's context.")] = 3,
    home: HomeOption = None,
):
    """Run the agent and the scheduled learner together; requests are JSON lines on stdin.

    Each line is {"question": ...} or {"command": "status" | "good" | "bad" | "learn"};
    each answer is one JSON line on stdout. The learner runs on the schedule in the background,
    one run at a time; a promoted model serves from the next question.

    Example: echo '{"command": "status"}' | sdft-agent serve --schedule "0 2 * * *"
    """
    from cli.agent_cmd import build_agent
    from learner.run import learn_now, recover_interrupted
    from learner.scheduler import make_scheduler
    from memory.models import ModelStore
    from memory.store import Memory

    memory = Memory(home)
    store = ModelStore(home, quiet=True)
    store.resolve()  # fail early, with the fix, when there is no model
    recovered = recover_interrupted(memory)
    scheduler = make_scheduler(memory.home, schedule, min_new=min_new)
    scheduler.start()
    agent = None
    print(json.dumps({"event": "ready", **status_of(memory, store, scheduler),
                      "recovered_runs": recovered}), flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("each line must be a JSON object")
                cmd = req.get("command")
                if cmd == "status":
                    out = status_of(memory, store, scheduler)
                elif cmd in ("good", "bad"):
                    if agent is None:
                        raise ValueError("no episode yet to judge")
                    agent.mark(cmd == "good", req.get("note"), req.get("episode_id"))
                    out = {"ok": True}
                elif cmd == "learn":
                    out = learn_now(memory.home, min_new=1, skill=req.get("skill")).to_dict()
                elif "question" in req:
                    if agent is None:
                        agent = build_agent(memory, home=memory.home, skill=skill, recall=recall,
                                            model=None, max_new_tokens=256, max_turns=6)
                    out = agent.run(str(req["question"]), skill=req.get("skill") or skill).to_dict()
                else:
                    raise ValueError('expected {"question": ...} or {"command": "status"|"good"|"bad"|"learn"}')
            except (ValueError, KeyError, LookupError, RuntimeError) as exc:
                out = {"error": str(exc)}
            print(json.dumps(out, ensure_ascii=False, default=str), flush=True)
    except KeyboardInterrupt:
        print("stopping…", file=sys.stderr, flush=True)
    finally:
        scheduler.shutdown(wait=True)
        memory.close()
