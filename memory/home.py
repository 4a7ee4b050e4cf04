"""Where the data lives: one folder holding memory.db, models/ and reports/."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "SDFT_AGENT_HOME"
DEFAULT_HOME = Path("~/.local/share/sdft-agent")


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The explicit argument wins, then $SDFT_AGENT_HOME, then the XDG-style default."""
    if home is None:
        home = os.environ.get(ENV_VAR) or DEFAULT_HOME
    path = Path(home).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
