"""The deployed agent over HTTP: the OpenAI chat-completions protocol (what llama.cpp's server,
Ollama, LM Studio and vLLM speak), so any OpenAI client, chat UI or agent framework can use it.

    from agent.server import Engine, create_app, running
    app = create_app(Memory(home), Engine(home))
    with running(app) as url:            # uvicorn on a free loopback port, in a thread
        OpenAI(base_url=f"{url}/v1", api_key="-").chat.completions.create(...)

Every completion is an episode in memory whose id is the response id; POST /v1/feedback judges
it (agent.feedback). The champion is followed between requests (hot reload after a promotion).
Serving belongs to agent/ and never imports learner/: the nightly scheduler is composed with the
server by the `serve` command.
"""

from agent.server.app import API_KEY_ENV, create_app, running
from agent.server.engine import Engine

__all__ = ["API_KEY_ENV", "Engine", "create_app", "running"]
