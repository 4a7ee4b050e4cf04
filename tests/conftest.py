"""Shared fixtures: tiny models and a throwaway home folder per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # several pytest workers (make test): each worker's torch, and the processes its tests start,
    # get their share of the cores instead of every worker's OpenMP threads fighting for all of them
    from agent.loading import available_cores, configure_threads

    _share = max(1, available_cores() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("SDFT_AGENT_THREADS", str(_share))
    configure_threads()
sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tiny_model, build_tiny_tokenizer, save_tiny  # noqa: E402


@pytest.fixture(params=["fallback", "native"])
def template_kind(request):
    return request.param


@pytest.fixture
def tiny_tokenizer():
    return build_tiny_tokenizer("fallback")


@pytest.fixture
def tiny_native_tokenizer():
    return build_tiny_tokenizer("native")


@pytest.fixture
def tiny_model(tiny_tokenizer):
    return build_tiny_model(tiny_tokenizer)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty SDFT_AGENT_HOME for this test."""
    h = tmp_path / "home"
    monkeypatch.setenv("SDFT_AGENT_HOME", str(h))
    return h


@pytest.fixture
def tiny_home(home, tmp_path):
    """A home whose store holds a tiny model registered as base `tiny` and champion."""
    from memory.models import ModelStore

    save_tiny(tmp_path / "tiny-src")
    store = ModelStore(home, quiet=True)
    store.add_folder(tmp_path / "tiny-src", "tiny")
    return home


@pytest.fixture
def store_home(tiny_home):
    """tiny_home with the bundled date_math skill's tools installed."""
    from agent_support import DATE_TOOLS
    from memory.store import Memory

    with Memory(tiny_home) as mem:
        mem.add_skill("date_math", "Calendar arithmetic", DATE_TOOLS)
    return tiny_home


@pytest.fixture
def script(monkeypatch):
    """Replies the store's model will give, in order (then its own random text)."""
    import agent.loading
    from agent_support import Scripted

    replies: list[str] = []
    real_load = agent.loading.load

    def scripted_load(*args, **kwargs):
        model, tok = real_load(*args, **kwargs)
        return Scripted(model, tok, replies), tok

    monkeypatch.setattr(agent.loading, "load", scripted_load)
    return replies
