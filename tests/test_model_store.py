"""The model store: pulling, integrity, atomic versions, the champion alias."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fake_preset
from memory.models import IntegrityError, ModelStore, ModelStoreError
from tiny import save_tiny


@pytest.fixture
def fake(monkeypatch):
    return fake_preset.install(monkeypatch)


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_pull_registers_base_and_champion(home, fake):
    store = ModelStore(home, quiet=True)
    info, worked = store.pull(fake_preset.NAME)
    assert worked and info.champion and info.kind == "base"
    assert info.path == home / "models" / "base" / fake_preset.NAME
    manifest = store.manifest(info.version)
    assert manifest["files"]["model.safetensors"]["sha256"] == info.sha256
    assert manifest["source"]["gguf_sha256"] == fake_preset.SHA256
    assert [v.version for v in store.versions()] == [fake_preset.NAME]


def test_second_pull_is_a_no_op(home, fake):
    store = ModelStore(home, quiet=True)
    store.pull(fake_preset.NAME)
    t = time.perf_counter()
    info, worked = store.pull(fake_preset.NAME)
    assert not worked and time.perf_counter() - t < 5
    assert fake == {"downloads": 1, "converts": 1}


def test_hash_mismatch_is_refused(home, monkeypatch):
    fake_preset.install(monkeypatch, payload=b"tampered")
    store = ModelStore(home, quiet=True)
    with pytest.raises(IntegrityError) as err:
        store.pull(fake_preset.NAME)
    actual = hashlib.sha256(b"tampered").hexdigest()
    assert f"has sha256 {actual}, expected {fake_preset.SHA256}: refusing it" in str(err.value)
    assert store.versions() == [] and not (home / "cache" / fake_preset.NAME / "model.gguf").exists()


def test_corrupt_weights_detected_then_repaired_by_force(home, fake):
    store = ModelStore(home, quiet=True)
    info, _ = store.pull(fake_preset.NAME)
    flip_one_byte(info.path / "model.safetensors")
    with pytest.raises(IntegrityError, match=r"model.safetensors is corrupt: sha256 expected .* actual .*models pull --preset fake-tiny --force"):
        store.pull(fake_preset.NAME)
    with pytest.raises(IntegrityError):
        from agent.loading import load

        load(home=home)
    info, worked = store.pull(fake_preset.NAME, force=True)
    assert worked
    store.verify(info.version)
    assert info.champion


def test_corrupt_cached_gguf_detected(home, fake):
    store = ModelStore(home, quiet=True)
    store.pull(fake_preset.NAME)
    flip_one_byte(home / "cache" / fake_preset.NAME / "model.gguf")
    with store.db.atomic():
        store.db.execute("DELETE FROM aliases")
        store.db.execute("DELETE FROM model_versions")
    with pytest.raises(IntegrityError, match="cached .*model.gguf is corrupt"):
        store.pull(fake_preset.NAME)
    assert store.pull(fake_preset.NAME, force=True)[1]


def test_kill_during_conversion_leaves_nothing_registered(home, fake):
    proc = subprocess.Popen([sys.executable, fake_preset.__file__, str(home), "60"],
                            cwd=Path(fake_preset.__file__).parent)
    deadline = time.time() + 60
    while not list((home / "models").glob(".tmp-*/converting.flag")):
        assert time.time() < deadline and proc.poll() is None, "conversion never started"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = ModelStore(home, quiet=True)
    assert store.versions() == [] and store.champion() is None
    assert not (home / "models" / "base" / fake_preset.NAME).exists()
    info, worked = store.pull(fake_preset.NAME)
    assert worked and info.champion
    assert list((home / "models").glob(".tmp-*")) == []


def test_draft_commits_a_numbered_version(tiny_home):
    store = ModelStore(tiny_home, quiet=True)
    with store.draft(parent="tiny", learn_run_id=7) as draft:
        save_tiny(draft.path, seed=1)
        draft.manifest["demonstrations"] = [1, 2]
    assert draft.version == "v0001"
    info = store.get("v0001")
    assert info.parent == "tiny" and info.learn_run_id == 7 and not info.champion
    assert store.manifest("v0001")["demonstrations"] == [1, 2]
    store.verify("v0001")
    assert store.lineage("v0001") == ["v0001", "tiny"]


def test_failed_draft_leaves_no_folder_and_no_row(tiny_home):
    store = ModelStore(tiny_home, quiet=True)
    with pytest.raises(RuntimeError, match="boom"):
        with store.draft(parent="tiny") as draft:
            save_tiny(draft.path)
            raise RuntimeError("boom")
    assert not draft.path.exists()
    assert [v.version for v in store.versions()] == ["tiny"]
    assert not (tiny_home / "models" / "v0001").exists()


def test_draft_without_weights_is_refused(tiny_home):
    store = ModelStore(tiny_home, quiet=True)
    with pytest.raises(ModelStoreError, match="no \\*.safetensors weights"):
        with store.draft(parent="tiny") as draft:
            (draft.path / "config.json").write_text("{}")
    assert [v.version for v in store.versions()] == ["tiny"]


def test_use_and_rollback_walk_back(tiny_home):
    store = ModelStore(tiny_home, quiet=True)
    for seed in (1, 2):
        with store.draft(parent="tiny") as draft:
            save_tiny(draft.path, seed=seed)
    store.use("v0001")
    store.use("v0002")
    assert store.champion().version == "v0002"
    assert store.rollback().version == "v0001"
    assert store.rollback().version == "tiny"
    with pytest.raises(ModelStoreError, match="nothing to roll back to"):
        store.rollback()
    assert store.champion().version == "tiny"


def test_unknown_version_names_the_known_ones(tiny_home):
    with pytest.raises(ModelStoreError, match=r"no model version 'v9' \(known: tiny\)"):
        ModelStore(tiny_home, quiet=True).use("v9")


def test_empty_store_says_to_pull(home):
    with pytest.raises(ModelStoreError, match="sdft-agent models pull"):
        ModelStore(home, quiet=True).resolve()


def test_add_folder_refuses_a_non_model_folder(home, tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(ModelStoreError, match="not a Hugging Face model folder"):
        ModelStore(home, quiet=True).add_folder(tmp_path / "junk", "junk")


def test_loaded_version_matches_saved_model(tiny_home, tmp_path):
    import torch

    from agent.loading import load

    model, tok = load(home=tiny_home)
    original, _ = save_tiny(tmp_path / "again")
    ids = torch.tensor([[1, 5, 9, 20]])
    assert torch.equal(model(ids).logits, original(ids).logits)
    assert model.dtype == torch.float32
    assert json.loads((tiny_home / "models" / "base" / "tiny" / "manifest.json").read_text())["kind"] == "base"
