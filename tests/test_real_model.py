"""Tests on the real default model (SmolLM2-135M): `make test-slow`, or `pytest -m slow`.

They use the home in $SDFT_AGENT_HOME (the default home otherwise) and pull the model if needed.
"""

import shutil
import subprocess
import sys

import pytest

from memory.models import IntegrityError, ModelStore

pytestmark = pytest.mark.slow
PRESET = "smollm2-135m"


@pytest.fixture(scope="module")
def store():
    s = ModelStore(quiet=True)
    s.pull(PRESET)
    return s


def test_answers_capital_of_france(store):
    from agent.generate import generate_reply
    from agent.loading import load

    model, tok = load(PRESET, store=store)
    answer = generate_reply(model, tok, [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=32)
    assert "Paris" in answer


def test_second_pull_checks_and_does_no_work(store, monkeypatch):
    def again(*args, **kwargs):
        raise AssertionError("the second pull fetched or converted again")

    import memory.convert

    monkeypatch.setattr(store, "_fetch_gguf", again)
    monkeypatch.setattr(memory.convert, "convert_gguf", again)
    before = store.get(PRESET)
    info, worked = store.pull(PRESET)  # verifies every sha256, writes nothing
    assert not worked and info == before and info.path.stat().st_mtime == before.path.stat().st_mtime


def test_cli_list_shows_the_base_with_its_hash(store):
    out = subprocess.run([sys.executable, "-m", "cli.main", "models", "list", "--home", str(store.home)],
                         capture_output=True, text=True, check=True).stdout
    info = store.get(PRESET)
    assert PRESET in out and info.sha256[:12] in out


def test_corrupt_real_weights_then_force_repairs(store, tmp_path):
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    shutil.copytree(store.home / "cache" / PRESET, home / "cache" / PRESET)  # skip the download
    fresh = ModelStore(home, quiet=True)
    info, _ = fresh.pull(PRESET)
    weights = info.path / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(IntegrityError, match="--force"):
        fresh.pull(PRESET)
    fresh.pull(PRESET, force=True)
    fresh.verify(PRESET)
