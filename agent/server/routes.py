"""The HTTP routes: chat completions (plain and streamed), models, feedback, status, reports."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, StreamingResponse

from agent.feedback import judge
from agent.server.engine import CHAMPION_NAMES, Job, Reply
from agent.server.episodes import new_response_id
from agent.server.errors import APIError, error_body
from agent.server.protocol import (
    ChatRequest,
    Feedback,
    ToolCall,
    choice_of,
    chunk_body,
    completion_body,
    parse_arguments,
    to_project_messages,
    tool_schemas,
)
from agent.server.status import REPORTS, status_of

router = APIRouter()
ARGUMENT_PIECE = 24  # characters of a call's arguments per streamed delta


def _state(request: Request):
    return request.app.state.served


def job_of(req: ChatRequest, served) -> Job:
    """Validate a request fully (400/404 before any generation) and translate it."""
    version = served.engine.version_of(req.model)
    messages = to_project_messages(req.messages)
    tools = tool_schemas(req.tools)
    choice = choice_of(req, tools)
    return Job(messages=messages, tools=tools, choice=choice, version=version,
               options={"max_new_tokens": req.max_new_tokens(served.engine.max_new_tokens),
                        "temperature": req.temperature, "top_p": req.top_p},
               stop=req.stop, seed=req.seed, parallel_tool_calls=req.parallel_tool_calls)


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatRequest, request: Request):
    served = _state(request)
    job = job_of(req, served)
    rid, created = new_response_id(), int(time.time())
    loop = asyncio.get_running_loop()
    if not req.stream:
        reply = await loop.run_in_executor(served.engine.executor, served.complete, rid, job, None, None)
        return completion_body(rid, reply.version, reply.content, reply.calls, reply.finish, reply.usage, created)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return StreamingResponse(_stream(served, rid, created, job, include_usage, loop),
                             media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _stream(served, rid: str, created: int, job: Job, include_usage: bool,
                  loop: asyncio.AbstractEventLoop) -> AsyncIterator[str]:
    """OpenAI's chunk sequence: role, content deltas, tool-call deltas (the first per call with
    id, name and empty arguments), the finish reason, usage when asked, then [DONE]."""
    queue: asyncio.Queue = asyncio.Queue()
    cancelled = threading.Event()

    def on_text(delta: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("text", delta))

    future = loop.run_in_executor(served.engine.executor, served.complete, rid, job, on_text, cancelled.is_set)
    future.add_done_callback(lambda f: queue.put_nowait(("done", f)))
    model = served.engine.runtime(job.version).version or (job.version or "sdft-agent")

    def sse(body: dict) -> str:
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        first = True
        while True:
            kind, value = await queue.get()
            if kind == "text":
                if first:
                    yield sse(chunk_body(rid, model, created, {"role": "assistant", "content": ""}))
                    first = False
                yield sse(chunk_body(rid, model, created, {"content": value}))
                continue
            try:
                reply: Reply = value.result()
            except APIError as exc:
                yield sse(error_body(exc.message, exc.status, exc.param, exc.code))
                break
            except Exception as exc:
                yield sse(error_body(f"generation failed: {type(exc).__name__}: {exc}", 500))
                break
            model = reply.version
            if first:
                yield sse(chunk_body(rid, model, created, {"role": "assistant", "content": ""}))
            rest = reply.content[len(reply.streamed):] if reply.content.startswith(reply.streamed) else ""
            if rest:
                yield sse(chunk_body(rid, model, created, {"content": rest}))
            for i, call in enumerate(reply.calls):
                yield sse(chunk_body(rid, model, created, {"tool_calls": [
                    {"index": i, "id": call["id"], "type": "function",
                     "function": {"name": call["name"], "arguments": ""}}]}))
                args = call["arguments"]
                for k in range(0, len(args), ARGUMENT_PIECE):
                    yield sse(chunk_body(rid, model, created, {"tool_calls": [
                        {"index": i, "function": {"arguments": args[k:k + ARGUMENT_PIECE]}}]}))
            yield sse(chunk_body(rid, model, created, {}, reply.finish))
            if include_usage:
                yield sse(chunk_body(rid, model, created, None, usage=reply.usage))
            break
        yield "data: [DONE]\n\n"
    finally:
        cancelled.set()  # a client that went away stops its generation at the next token


@router.get("/v1/models")
async def list_models(request: Request):
    served = _state(request)
    versions = served.store.versions()
    champ = next((v for v in versions if v.champion), None)
    data = []
    if champ is not None:
        data.append(_model_card(CHAMPION_NAMES[0], champ, alias=True))
    data += [_model_card(v.version, v) for v in versions]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request):
    served = _state(request)
    version = served.engine.version_of(model_id)
    info = served.store.resolve(version)
    return _model_card(model_id, info, alias=version is None)


def _model_card(model_id: str, info, alias: bool = False) -> dict:
    try:
        created = int(datetime.fromisoformat(info.created_at).timestamp())
    except (TypeError, ValueError):
        created = 0
    return {"id": model_id, "object": "model", "created": created, "owned_by": "sdft-agent",
            "version": info.version, "champion": info.champion, "kind": info.kind, "parent": info.parent,
            **({"alias_of": info.version} if alias else {})}


@router.post("/v1/feedback")
async def feedback(body: Feedback, request: Request):
    """{id, outcome: good|bad, tool_calls?, note?}: good keeps the episode as a demonstration,
    bad retracts one made from it, tool_calls teaches the right call."""
    served = _state(request)
    episode_id = served.episodes.resolve(body.id)
    if episode_id is None:
        raise APIError(f"no episode for id {body.id!r}: give the id a chat completion answered with",
                       404, param="id", code="episode_not_found")
    calls = None
    if body.tool_calls:
        calls = []
        for i, c in enumerate(body.tool_calls):
            if isinstance(c, ToolCall):
                calls.append({"name": c.function.name,
                              "arguments": parse_arguments(c.function.arguments, f"tool_calls[{i}].function.arguments")})
            elif isinstance(c.get("name"), str) and isinstance(c.get("arguments", {}), dict):
                calls.append({"name": c["name"], "arguments": c.get("arguments", {})})
            else:
                raise APIError(f"tool_calls[{i}]: expected {{'name', 'arguments'}} or an OpenAI tool call",
                               param=f"tool_calls[{i}]")
    loop = asyncio.get_running_loop()
    try:
        out = await loop.run_in_executor(None, lambda: judge(served.memory, episode_id, body.outcome,
                                                             note=body.note, tool_calls=calls))
    except KeyError as exc:
        raise APIError(str(exc.args[0]) if exc.args else "episode not found", 404, param="id",
                       code="episode_not_found") from None
    except ValueError as exc:
        raise APIError(str(exc), param="tool_calls" if calls else None) from None
    return {"id": str(body.id), "object": "feedback", **out}


@router.get("/v1/status")
async def status(request: Request):
    served = _state(request)
    loop = asyncio.get_running_loop()
    out = await loop.run_in_executor(None, status_of, served.memory, served.store, served.next_run)
    out["serving"] = served.engine.runtime(None).version
    out["constrained"] = served.engine.constrain  # tool_choice auto; required / named always are
    return out


@router.get(f"/{REPORTS}/{{path:path}}")
async def report(path: str, request: Request):
    """The gate's reports, read-only, from <home>/reports (nothing outside it)."""
    served = _state(request)
    root = (Path(served.memory.home) / REPORTS).resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise APIError(f"no report {path!r}", 404, code="report_not_found")
    return FileResponse(target)


@router.get("/health")
async def health():
    return {"status": "ok"}
