"""Putting a skill pack into the agent's memory (the store itself lives in memory.store), and
binding the bundled Python implementations to the tools they were written for.

A pack whose skill already exists never silently changes that skill's tools: the same tools are
fine (new demonstrations are added), different tools are refused unless `replace=True`, and a
replacement first re-validates every stored demonstration and eval case of the skill against the
new tools, refusing (naming them) when any would stop validating. The check and the write are one
transaction, so a replacement is applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memory.catalog import tool_changes, tool_key
from skills.pack import SkillPack

MAX_NAMED = 10  # stored items named in a refusal; the rest are counted


class SkillConflict(ValueError):
    """The pack would change an installed skill's tools; the message says what to do."""


def install_pack(memory: Any, pack: SkillPack, *, replace: bool = False) -> dict:
    """Register the pack's skill and tools, then its demonstrations and held-out eval cases.

    The pack is validated first, so a broken pack writes nothing. `memory` is a
    memory.store.Memory (or anything with add_skill / add_demonstration / add_eval_case);
    add_demonstration returns (id, created) and skips duplicates, which are counted.
    With a memory that can say what is installed (get_skill), the result's "replaced" says
    whether an installed skill's tools were swapped.
    """
    pack.validate()
    write = getattr(memory, "write", None)  # one transaction when the memory offers one
    if write is None:
        return _checked_install(memory, pack, replace)
    with write():
        return _checked_install(memory, pack, replace)


def _checked_install(memory: Any, pack: SkillPack, replace: bool) -> dict:
    if not hasattr(memory, "get_skill"):
        return _install(memory, pack)
    replaced = check_existing(memory, pack, replace)
    return {**_install(memory, pack), "replaced": replaced}


def check_existing(memory: Any, pack: SkillPack, replace: bool) -> bool:
    """Refuse a pack that would change an installed skill's tools, unless `replace` and every
    stored demonstration and eval case of the skill validates against the new tools.
    Returns True when the tools will be replaced."""
    existing = memory.get_skill(pack.name)
    if existing is None or tool_key(existing["tools"]) == tool_key(pack.tools):
        return False
    what = tool_changes(existing["tools"], pack.tools)
    if not replace:
        raise SkillConflict(
            f"skill {pack.name!r} is installed with other tools (this pack {what}); nothing was changed. "
            f"Give the pack another name, or `sdft-agent skills add --replace` to swap the tools "
            "(refused if a stored demonstration or eval case would stop validating)."
        )
    broken = _would_break(memory, pack)
    if broken:
        more = f"\n  … and {len(broken) - MAX_NAMED} more" if len(broken) > MAX_NAMED else ""
        raise SkillConflict(
            f"--replace refused: {len(broken)} stored item(s) of skill {pack.name!r} would stop validating "
            f"against the new tools (this pack {what}); nothing was changed:\n"
            + "\n".join(f"  - {b}" for b in broken[:MAX_NAMED]) + more
        )
    return True


class _Undo(Exception):
    """Raised to roll a trial back."""


def _would_break(memory: Any, pack: SkillPack) -> list[str]:
    """The stored demonstrations and eval cases of the skill that the pack's tools would reject.

    A trial inside a savepoint: the new tools are put in place and every stored item is offered
    to the store again, so it is judged by exactly the store's own validation (a valid one is a
    duplicate and writes nothing); then everything is rolled back.
    """
    broken: list[str] = []

    def first(exc: Exception) -> str:
        return (getattr(exc, "errors", None) or str(exc).splitlines() or [type(exc).__name__])[0]

    try:
        with memory.write():
            memory.add_skill(pack.name, pack.description, pack.tools)
            for d in memory.demonstrations(pack.name):
                try:
                    memory.add_demonstration(pack.name, d["messages"], d["tool_calls"], d["content"])
                except ValueError as exc:  # the store's ValidationError
                    broken.append(f"demonstration {d['id']}: {first(exc)}")
            for c in memory.eval_cases(pack.name):
                try:
                    memory.add_eval_case(pack.name, c["messages"], c["expected"])
                except ValueError as exc:
                    broken.append(f"eval case {c['id']}: {first(exc)}")
            raise _Undo
    except _Undo:
        pass
    return broken


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


def implementations_for(skill: str, tools: list[dict]) -> dict[str, Callable]:
    """The bundled Python implementations of `skill`'s tools, each bound only where the stored
    tool is exactly the schema the implementation was written for (the bundled pack's); a tool
    whose schema was replaced has no implementation, rather than one called with foreign
    arguments."""
    from skills.pack import bundled_pack
    from skills.tools import implementation

    impl = implementation(skill)
    if not impl:
        return {}
    try:
        written_for = {t["name"]: t for t in SkillPack.load(bundled_pack(skill)).tools}
    except LookupError:
        return {}  # an implementation module with no pack: nothing says what it was written for
    return {t["name"]: impl[t["name"]] for t in tools
            if t["name"] in impl and t["name"] in written_for
            and tool_key([t]) == tool_key([written_for[t["name"]]])}
