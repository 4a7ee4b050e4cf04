"""Putting a skill pack into the agent's memory (the store itself lives in memory.store)."""

from __future__ import annotations

from typing import Any

from skills.pack import SkillPack


def install_pack(memory: Any, pack: SkillPack) -> dict:
    """Register the pack's skill and tools, then its demonstrations and held-out eval cases.

    The pack is validated first, so a broken pack writes nothing. `memory` is a
    memory.store.Memory (or anything with add_skill / add_demonstration / add_eval_case);
    add_demonstration returns (id, created) and skips duplicates, which are counted.
    """
    pack.validate()
    write = getattr(memory, "write", None)  # one transaction when the memory offers one
    if write is None:
        return _install(memory, pack)
    with write():
        return _install(memory, pack)


def _install(memory: Any, pack: SkillPack) -> dict:
    memory.add_skill(pack.name, pack.description, pack.tools)
    added = duplicates = 0
    for i, demo in enumerate(pack.demonstrations):
        _id, created = memory.add_demonstration(
            pack.name,
            demo["messages"],
            demo.get("tool_calls"),
            demo.get("content"),
            source="imported",
            provenance={"pack": pack.name, "index": i},
        )
        if created:
            added += 1
        else:
            duplicates += 1
    for case in pack.eval:
        memory.add_eval_case(pack.name, case["messages"], case["expected"])
    return {"demonstrations_added": added, "duplicates": duplicates, "eval_cases": len(pack.eval)}
