"""Which model serves right now: a holder that follows the champion alias (hot reload).

The learner promotes a new version by moving the `champion` alias in memory.db; it never talks
to the agent. So the agent asks the store, once per episode, which version is champion, and
loads it when it changed. An episode takes one `Loaded` snapshot at its start and keeps it, so
an episode in flight finishes on the version it started with; the old weights are freed when
the last episode holding them ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.prompt import PromptFormat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """One model version in memory, with its tokenizer and prompt format."""

    version: str
    model: Any
    tokenizer: Any
    fmt: PromptFormat

    @classmethod
    def of(cls, model, tokenizer, version: str = "local") -> Loaded:
        return cls(version=version, model=model, tokenizer=tokenizer, fmt=PromptFormat(tokenizer))


class Pinned:
    """A runtime that always serves the same `Loaded` (a fixed model, or an episode's snapshot)."""

    def __init__(self, loaded: Loaded):
        self.loaded = loaded

    def current(self) -> Loaded:
        return self.loaded

    @property
    def version(self) -> str:
        return self.loaded.version


class ModelRuntime:
    """Serves the champion (or one named version) from a model store, reloading on promotion.

    `loader(version) -> (model, tokenizer)` defaults to `agent.loading.load` on this store (with
    sha256 verification); tests inject their own. If a newly promoted version fails to load, the
    runtime keeps serving the one it has and logs why, instead of breaking the agent; it tries
    again when the alias moves on.
    """

    def __init__(
        self,
        home: str | Path | None = None,
        *,
        version: str | None = None,
        store=None,
        loader: Callable[[str], tuple[Any, Any]] | None = None,
        device: str | None = None,
        verify: bool = True,
    ):
        from memory.models import ModelStore

        self.store = store or ModelStore(home, quiet=True)
        self.pinned_version = version
        self._loader = loader or self._default_loader(device, verify)
        self._loaded: Loaded | None = None
        self._failed: str | None = None
        self._lock = threading.Lock()

    def _default_loader(self, device: str | None, verify: bool):
        def load_version(version: str):
            from agent.loading import load

            return load(version, store=self.store, device=device, verify=verify)

        return load_version

    @property
    def version(self) -> str | None:
        """The version loaded now (no store lookup, no reload)."""
        return self._loaded.version if self._loaded else None

    def wanted(self) -> str:
        """The version that should serve: the pinned one, else the champion."""
        return self.store.resolve(self.pinned_version).version

    def current(self) -> Loaded:
        """The model to use for the next episode, reloading first if the champion moved."""
        with self._lock:
            want = self.wanted()
            if self._loaded is not None and (want == self._loaded.version or want == self._failed):
                return self._loaded
            try:
                model, tokenizer = self._loader(want)
            except Exception as exc:
                if self._loaded is None:
                    raise
                self._failed = want
                log.warning("champion %s failed to load (%s); still serving %s", want, exc, self._loaded.version)
                return self._loaded
            if self._loaded is not None:
                log.info("champion moved: %s -> %s", self._loaded.version, want)
            self._loaded, self._failed = Loaded.of(model, tokenizer, want), None
            return self._loaded
