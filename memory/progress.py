"""Progress bars only for a person watching: transformers' "Loading weights" bar (and tqdm's)
stay off when stderr is a pipe or a log file, whoever loads the model (the command line, the
LangChain chat model, a user's own script)."""

from __future__ import annotations

import sys


def bars_off_unless_terminal() -> None:
    if getattr(sys.stderr, "isatty", lambda: False)():
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
