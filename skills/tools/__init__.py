"""Python implementations of the bundled skills' tools, one module per pack.

Each module exposes `TOOLS: dict[str, callable]` (tool name -> function taking the call's
arguments as keyword arguments, returning a JSON-serialisable result). Deterministic, so an
episode replays the same and tests can check results.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def implementation(pack_name: str) -> dict[str, Callable] | None:
    """The TOOLS of the bundled pack `pack_name`, or None when it has no implementation here."""
    if not pack_name.isidentifier():
        return None  # e.g. an imported BFCL pack such as "version_api.VersionApi.get_version"
    try:
        module = importlib.import_module(f"{__name__}.{pack_name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{pack_name}":
            return None
        raise
    return module.TOOLS
