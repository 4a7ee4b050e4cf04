"""Where the data lives: one folder holding memory.db, models/ and reports/.

The home holds every conversation the agent had, so it is private: the folder is created 0700 and
what the memory layer creates in it is 0700 (folders) or 0600 (files), whatever the umask. A home
that already exists with looser permissions is left as it is (it is the user's folder) but gets a
warning with the command that fixes it. Paths stored in memory.db are relative to the home, so a
home copied or moved keeps working (`relative` / `absolute`).
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

ENV_VAR = "SDFT_AGENT_HOME"
DEFAULT_HOME = Path("~/.local/share/sdft-agent")
DIR_MODE = 0o700
FILE_MODE = 0o600

_warned: set[Path] = set()


class HomeError(RuntimeError):
    """The home cannot be used as a folder; the message names the path and how to choose another."""


class LooseHomeWarning(UserWarning):
    """The home is readable or writable by other users."""


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The explicit argument wins, then $SDFT_AGENT_HOME, then the XDG-style default.

    A missing home is created private; an existing one is checked (HomeError when it is not a
    folder, LooseHomeWarning when other users can read it).
    """
    if home is None:
        home = os.environ.get(ENV_VAR) or DEFAULT_HOME
    path = Path(home).expanduser().resolve()
    choose = f"choose another folder with --home or ${ENV_VAR}"
    if path.exists() and not path.is_dir():
        raise HomeError(f"the home {path} is a file, not a folder; move the file away or {choose}")
    if path.is_dir():
        _check_private(path)
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        private_dir(path)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path)
        raise HomeError(f"cannot create the home {path}: {blocker} is a file, not a folder; {choose}") from None
    except PermissionError:
        raise HomeError(f"cannot create the home {path}: permission denied; {choose}") from None
    return path


def private_dir(path: Path) -> Path:
    """Create `path` (parents must exist) or keep it, private when this call created it."""
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise
        return path
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask; this is not
    return path


def private_file(path: Path) -> Path:
    """Create an empty `path` readable by its owner alone, or keep an existing one as it is."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        return path
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def make_private(folder: Path) -> None:
    """Folders under `folder` (itself included) 0700, files 0600: for a tree written by code that
    follows the umask (save_pretrained, copytree) before it is moved into the home."""
    os.chmod(folder, DIR_MODE)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), DIR_MODE)
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                os.chmod(p, FILE_MODE)


def _check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and path not in _warned:
        _warned.add(path)
        warnings.warn(
            f"the home {path} is open to other users (mode {mode:03o}) and holds every conversation; "
            f"`chmod 700 {path}` makes it private",
            LooseHomeWarning,
            stacklevel=3,
        )


def relative(path: str | os.PathLike | None, home: Path) -> str | None:
    """`path` as stored in memory.db: relative to the home when it lies inside it."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.resolve().relative_to(home.resolve()))
    except ValueError:
        return str(p)  # outside the home: kept as given


def absolute(path: str | None, home: Path) -> str | None:
    """A stored path resolved against the home (absolute paths, from older rows, stay as they are)."""
    if path is None:
        return None
    return str(Path(home) / path)  # an absolute `path` wins in the join
