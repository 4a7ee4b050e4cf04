"""`sdft-agent serve`: the agent over HTTP (OpenAI chat completions) and the nightly learner in one
process; `--stdin` keeps the JSON-lines daemon.

HTTP (default): FastAPI + uvicorn on 127.0.0.1 (agent/server). Point any OpenAI client at
http://127.0.0.1:PORT/v1; POST /v1/feedback judges a completion by its id.

stdin (`--stdin`), one request a line, one response a line:
    {"question": "convert 5 km to miles", "skill": "unit_convert"}   → the episode as JSON
    {"command": "status"}                                             → champion, next/last run
    {"command": "good"|"bad", "episode_id": 12}                       → feedback (names its episode)
    {"command": "teach", "episode_id": 12, "tool_calls": [...]}       → the right call(s)
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

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@friendly_errors
def serve(
    port: Annotated[int, typer.Option(help="HTTP port (0: any free port, printed at start).", min=0, max=65535)] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on. Loopback by default; anything else needs --api-key.")] = "127.0.0.1",
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="SDFT_AGENT_API_KEY", show_envvar=True,
                                                help="Require 'Authorization: Bearer <key>' on every request.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Default longest reply, in tokens (a request's max_tokens wins).", min=1)] = 256,
    stdin: Annotated[bool, typer.Option("--stdin", help="Read JSON-lines requests from stdin instead of serving HTTP.")] = False,
    schedule: Annotated[str, typer.Option(help="When to learn, as a 5-field crontab line (local time).")] = "0 2 * * *",
    min_new: Annotated[int, typer.Option(help="Skip a scheduled run (recorded) with fewer new demonstrations than this.")] = 5,
    skill: Annotated[str | None, typer.Option(help="--stdin: offer only this skill's tools to the agent.")] = None,
    recall: Annotated[int, typer.Option(help="--stdin: demonstrations recalled into each question's context.")] = 3,
    constrain: Annotated[bool | None, typer.Option(
        "--constrain/--no-constrain",
        help="Tool calls follow the offered tools' schemas (the default unless SDFT_AGENT_CONSTRAIN=0). "
             "With --no-constrain, tool_choice auto decodes the model's own tokens; required and a "
             "named tool stay constrained, since only the grammar can honour them.")] = None,
    home: HomeOption = None,
):
    """Serve the agent over HTTP (OpenAI chat completions) with the scheduled learner beside it.

    Every completion is an episode in memory whose id is the response id; POST /v1/feedback
    {"id": ..., "outcome": "good"|"bad"} keeps or retracts it as a demonstration. A promoted
    model serves from the next request. GET /v1/status shows the champion and the last run.

    Example: sdft-agent serve --port 8000, then
    OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-").chat.completions.create(model="sdft-agent", ...)
    """
    from cli.agent_cmd import resolve_constrain
    from learner.run import recover_interrupted
    from learner.scheduler import make_scheduler, next_run
    from memory.models import ModelStore
    from memory.store import Memory

    constrained = resolve_constrain(constrain)

    if not stdin and host not in LOOPBACK and not api_key:
        raise ValueError(f"--host {host} exposes the agent beyond this machine; give --api-key "
                         "(or SDFT_AGENT_API_KEY) too, or keep the loopback default")
    memory = Memory(home)
    store = ModelStore(home, quiet=True)
    store.resolve()  # fail early, with the fix, when there is no model
    recovered = recover_interrupted(memory)
    scheduler = make_scheduler(memory.home, schedule, min_new=min_new)
    scheduler.start()
    try:
        if stdin:
            _stdin_loop(memory, store, scheduler, recovered, skill=skill, recall=recall,
                        max_new_tokens=max_new_tokens, constrain=constrained)
        else:
            _http(memory, scheduler, recovered, host=host, port=port, api_key=api_key,
                  max_new_tokens=max_new_tokens, next_run=lambda: next_run(scheduler), constrain=constrained)
    except KeyboardInterrupt:
        print("stopping…", file=sys.stderr, flush=True)
    finally:
        scheduler.shutdown(wait=True)
        memory.close()


def _http(memory, scheduler, recovered, *, host, port, api_key, max_new_tokens, next_run, constrain) -> None:
    import uvicorn

    from agent.server import Engine, create_app

    engine = Engine(memory.home, max_new_tokens=max_new_tokens, constrain=constrain)
    app = create_app(memory, engine, api_key=api_key or "", next_run=next_run)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    original_startup = server.startup

    async def startup(sockets=None):  # print where it listens once it does (port 0 included)
        await original_startup(sockets)
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        print(json.dumps({"event": "ready", "url": f"http://{host}:{bound}/v1", "auth": bool(api_key),
                          "champion": engine.store.champion_name(), "constrained": constrain,
                          "recovered_runs": recovered}), flush=True)

    server.startup = startup
    try:
        server.run()
    finally:
        engine.close()


def status_of(memory, store, scheduler) -> dict:
    from agent.server.status import status_of as status
    from learner.scheduler import next_run

    return status(memory, store, (lambda: next_run(scheduler)) if scheduler else None)


def _stdin_loop(memory, store, scheduler, recovered, *, skill, recall, max_new_tokens, constrain) -> None:
    from agent.feedback import judge
    from cli.agent_cmd import build_agent
    from learner.run import learn_now

    agent = None
    print(json.dumps({"event": "ready", **status_of(memory, store, scheduler), "constrained": constrain,
                      "recovered_runs": recovered}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            try:
                req = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"the line is not JSON ({exc.msg} at column {exc.colno}); send one JSON object per line") from None
            if not isinstance(req, dict):
                raise ValueError("each line must be a JSON object")
            cmd = req.get("command")
            if cmd == "status":
                out = status_of(memory, store, scheduler)
            elif cmd in ("good", "bad", "teach"):
                eid = req.get("episode_id")
                if eid is None:
                    raise ValueError(f'name the episode: {{"command": "{cmd}", "episode_id": N}} '
                                     "(the id each answer line carries)")
                out = judge(memory, eid, None if cmd == "teach" else cmd, note=req.get("note"),
                            tool_calls=req.get("tool_calls"))
            elif cmd == "learn":
                out = learn_now(memory.home, min_new=1, skill=req.get("skill")).to_dict()
            elif "question" in req:
                if agent is None:
                    agent = build_agent(memory, home=memory.home, skill=skill, recall=recall,
                                        model=None, max_new_tokens=max_new_tokens, max_turns=6,
                                        constrain=constrain)
                out = agent.run(str(req["question"]), skill=req.get("skill") or skill).to_dict()
            else:
                raise ValueError('expected {"question": ...} or {"command": "status"|"good"|"bad"|"teach"|"learn"}')
        except (ValueError, KeyError, LookupError, RuntimeError) as exc:
            out = {"error": exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)}
        print(json.dumps(out, ensure_ascii=False, default=str), flush=True)
