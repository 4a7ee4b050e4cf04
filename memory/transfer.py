"""Moving demonstrations between homes as JSONL, exactly.

One JSON object per line, each with a "type": a header, then every skill (with its tools), every
demonstration, every eval case. A demonstration line carries everything that identifies it
(messages, tool_calls, content) and where it came from (source, provenance, duplicates,
created_at), so exporting the imported home gives the same file byte for byte. Local links do not
travel: episode ids (the episode stays behind; promoted demonstrations name it in provenance)
and which learning runs used a demonstration (the new home has not trained on it).

Import is all or nothing: one transaction, and the first bad line rolls it back with an error
naming the file, the line and the field. Importing the same file twice adds nothing the second
time (duplicates are reported, not counted again).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from memory.catalog import tool_changes, tool_key
from memory.records import Skill
from memory.validate import ValidationError

if TYPE_CHECKING:
    from memory.store import Memory

FORMAT = "sdft-agent-memory"
VERSION = 1


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=False, separators=(",", ":")) + "\n"


def export_jsonl(mem: Memory, path: str | Path) -> int:
    """Write the file (atomically: a temporary file renamed into place); returns records written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    with mem.snapshot(), open(tmp, "w", encoding="utf-8") as f:
        f.write(_line({"type": "header", "format": FORMAT, "version": VERSION}))
        for skill in mem.list_skills():
            f.write(_line({"type": "skill", "name": skill["name"], "description": skill["description"],
                           "tools": skill["tools"]}))
            n += 1
        for d in mem.demonstrations():
            f.write(_line({"type": "demonstration", "skill": d["skill"], "messages": d["messages"],
                           "tool_calls": d["tool_calls"], "content": d["content"], "source": d["source"],
                           "provenance": d["provenance"], "duplicates": d["duplicates"],
                           "created_at": d["created_at"]}))
            n += 1
        for skill in mem.list_skills():
            for c in mem.eval_cases(skill["name"]):
                f.write(_line({"type": "eval_case", "skill": c["skill"], "messages": c["messages"],
                               "expected": c["expected"], "created_at": c["created_at"]}))
                n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def import_jsonl(mem: Memory, path: str | Path) -> dict:
    """Import every record of the file in one transaction; returns what was added and skipped."""
    path = Path(path)
    counts = {"skills": 0, "demonstrations": 0, "duplicates": 0, "eval_cases": 0, "eval_duplicates": 0}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValidationError(f"{path}: cannot read ({exc.strerror})") from None
    with mem.write() as db:
        skills: dict[str, tuple[int, dict]] = {}  # name -> (id, tools), as of this transaction
        first_line: dict[str, int] = {}  # skill name -> the line of the file that first listed it

        def skill(name, where: str) -> tuple[int, dict]:
            if name not in skills:
                sid = mem.catalog.skill_id(name, where)
                skills[name] = (sid, mem.catalog.tools(sid))
            return skills[name]

        for lineno, text in enumerate(lines, 1):
            at = f"{path.name}:{lineno}: "
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{at}not valid JSON ({exc.msg} at column {exc.colno})") from None
            try:
                kind = rec.get("type") if isinstance(rec, dict) else None
                body = {k: v for k, v in rec.items() if k not in ("type", "skill")} if kind else {}
                if kind == "header":
                    if rec.get("format") != FORMAT or rec.get("version") != VERSION:
                        raise ValidationError(
                            f"header: format {rec.get('format')!r} version {rec.get('version')!r} is not "
                            f"{FORMAT!r} version {VERSION}")
                elif kind == "skill":
                    record = Skill.parse({"name": rec.get("name"), "description": rec.get("description", ""),
                                          "tools": rec.get("tools", [])}, "skill")
                    # an import never silently changes an installed skill's tools (nor one listed
                    # earlier in the file): its demonstrations would stop validating
                    new_tools = record.flat_tools()
                    if record.name in first_line:
                        where = f"has other tools on line {first_line[record.name]}"
                        old: list[dict] | None = list(skills[record.name][1].values())
                    elif mem.catalog.get(record.name) is not None:
                        where, old = "is installed with other tools", list(skill(record.name, "skill")[1].values())
                    else:
                        old = None
                    if old is not None and tool_key(old) != tool_key(new_tools):
                        raise ValidationError(
                            f"skill {record.name!r} {where} (this line {tool_changes(old, new_tools)}); nothing "
                            "was imported. Import into another home, or change the skill with "
                            "`sdft-agent skills add --replace PACK`.")
                    first_line.setdefault(record.name, lineno)
                    sid = mem.catalog.upsert(db, record)
                    skills[record.name] = (sid, {t["name"]: t for t in record.flat_tools()})
                    counts["skills"] += 1
                elif kind == "demonstration":
                    sid, tools = skill(rec.get("skill"), "demonstration.skill")
                    _, created = mem.demo_repo.insert(db, rec["skill"], sid, tools, body, "demonstration",
                                                      count_duplicate=False)
                    counts["demonstrations" if created else "duplicates"] += 1
                elif kind == "eval_case":
                    skill(rec.get("skill"), "eval_case.skill")
                    _, created = mem.catalog.add_eval_case(db, rec["skill"], body, "eval_case")
                    counts["eval_cases" if created else "eval_duplicates"] += 1
                else:
                    raise ValidationError(
                        f"type: must be one of header, skill, demonstration, eval_case (got {kind!r})")
            except ValidationError as exc:
                raise exc.prefixed(at) from None
    mem.checkpoint()
    return counts
