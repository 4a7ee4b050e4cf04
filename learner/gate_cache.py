"""The champion's per-case gate results, kept with its version so a night evaluates only the
candidate.

A version's results on a suite are stored under `<home>/cache/gate/<version>/` keyed by a
fingerprint of everything that decides them: the suite's name and kind, its items (eval cases,
tools offered, prompts, answer budgets), the decoding recorded with an evaluation, and
`SCORING_VERSION` (bumped when a scorer changes; a suite's own `scoring_version` when only its
scorer does). Change any of these and the key changes, so a
stale entry is never read; it is simply not found, and the champion is evaluated again.

Results are written when a version is evaluated by the gate (as champion, or as the candidate
that gets promoted), atomically (temporary file, then rename). Suites that need more than the
per-case results (drift against the champion keeps the champion's top-k distributions) store a
tensor payload beside them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from skills.evaluate import SuiteResult

SCORING_VERSION = 2  # 2: tool restraint also fails markup loops that are not a call


def fingerprint(suite, decoding: dict | None = None) -> str:
    """sha256 over the suite's identity and items, and the decoding settings."""
    doc = [SCORING_VERSION, suite.name, getattr(suite, "kind", type(suite).__name__), items_key(suite),
           decoding or {}]
    if getattr(suite, "scoring_version", 0):  # one suite's scorer changed: only its entries go stale
        doc.append(suite.scoring_version)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def items_key(suite):
    """What the suite is evaluated on (probes say; the older probe kinds are read here)."""
    if hasattr(suite, "items_key"):
        return suite.items_key()
    if hasattr(suite, "items"):  # multiple choice
        return suite.items
    if hasattr(suite, "rows") and hasattr(suite, "max_new_tokens"):  # instructions
        return [suite.max_new_tokens, suite.rows]
    if hasattr(suite, "rows"):  # base drift: also depends on the base it is measured against
        return [suite.rows, getattr(suite, "base", None)]
    raise TypeError(f"cannot fingerprint a {type(suite).__name__}")


class GateCache:
    def __init__(self, home, version: str):
        self.folder = Path(home) / "cache" / "gate" / version
        self.version = version

    def _path(self, key: str, ext: str) -> Path:
        return self.folder / f"{key[:32]}.{ext}"

    def get(self, key: str) -> SuiteResult | None:
        path = self._path(key, "json")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if doc.get("key") != key:
            return None
        return SuiteResult.from_dict(doc["result"])

    def put(self, key: str, result: SuiteResult) -> None:
        self._write(self._path(key, "json"),
                    lambda f: f.write(json.dumps({"key": key, "result": result.to_dict()}, default=str).encode()))

    def get_payload(self, key: str):
        path = self._path(key, "pt")
        if not path.is_file():
            return None
        doc = torch.load(path, weights_only=True)
        return doc["payload"] if doc.get("key") == key else None

    def put_payload(self, key: str, payload) -> None:
        self._write(self._path(key, "pt"), lambda f: torch.save({"key": key, "payload": payload}, f))

    def _write(self, path: Path, write) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
