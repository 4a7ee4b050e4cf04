"""The FastAPI application: the routes, OpenAI-shaped errors, the bearer key and a body limit."""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from agent.server import errors, routes
from agent.server.engine import Engine, Job, Reply
from agent.server.episodes import EpisodeLog

API_KEY_ENV = "SDFT_AGENT_API_KEY"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
OPEN_PATHS = ("/health",)


@dataclass
class Served:
    """What the routes share: the engine, the memory, the episode log and the store."""

    engine: Engine
    memory: object
    episodes: EpisodeLog
    store: object
    next_run: Callable[[], object] | None = None

    def complete(self, response_id: str, job: Job, on_text=None, cancelled=None) -> Reply:
        """Generate and record one completion (on the engine's worker thread)."""
        reply = self.engine.generate(job, on_text, cancelled or (lambda: False))
        self.episodes.record(response_id, job, reply, cancelled=bool(cancelled and cancelled()))
        return reply


def create_app(memory, engine: Engine, *, api_key: str | None = None,
               next_run: Callable[[], object] | None = None,
               max_request_bytes: int = MAX_REQUEST_BYTES) -> FastAPI:
    """The app over `memory` (a memory.store.Memory) and `engine`. `api_key` (default: the
    SDFT_AGENT_API_KEY variable) turns on bearer-token checks for every route but /health."""
    from memory.models import ModelStore

    api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    app = FastAPI(title="sdft-agent", version="1", summary="An OpenAI-compatible agent that learns from feedback")
    app.state.served = Served(engine=engine, memory=memory, episodes=EpisodeLog(memory),
                              store=ModelStore(memory.home, quiet=True), next_run=next_run)
    errors.install(app)
    app.include_router(routes.router)
    app.add_middleware(_Guard, api_key=api_key, max_bytes=max_request_bytes)
    return app


class _Guard:
    """ASGI middleware: the bearer key (401) and the request-size limit (413), both answered
    with OpenAI's error body before the app reads anything."""

    def __init__(self, app, api_key: str | None, max_bytes: int):
        self.app, self.api_key, self.max_bytes = app, api_key, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and scope.get("path") not in OPEN_PATHS:
            given = headers.get("authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), self.api_key.encode()):
                why = "missing" if not given else "incorrect"
                return await _reply(send, errors.APIError(
                    f"{why} API key: send 'Authorization: Bearer <key>' with the key the server was started with",
                    401, code="invalid_api_key"))
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _reply(send, _too_large(self.max_bytes))
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _reply(send, _too_large(self.max_bytes))


class _TooLarge(Exception):
    pass


def _too_large(limit: int) -> errors.APIError:
    return errors.APIError(f"the request body is over the {limit} byte limit; send fewer or shorter messages",
                           413, code="request_too_large")


async def _reply(send, exc: errors.APIError) -> None:
    response = errors.error_response(exc)
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
            timeout: float = 30.0) -> Iterator[str]:
    """uvicorn serving `app` in a background thread (port 0: a free port); yields its base URL
    and stops it on exit (tests, benchmarks, notebooks)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)
