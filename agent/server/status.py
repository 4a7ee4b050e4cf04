"""What the deployed agent is doing: champion, next and last learning run, the gate's decision and
a link to its report. Shared by GET /v1/status and the stdin daemon's `status` command.

Report paths may be stored absolute (older homes) or relative to the home; the link is always
made relative to `<home>/reports`, so a moved home still serves its reports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePath

REPORTS = "reports"


def report_link(path: str | None, home: Path) -> str | None:
    """`/reports/<path inside <home>/reports>` for a stored report path, or None."""
    rel = report_relpath(path, home)
    return None if rel is None else f"/{REPORTS}/{rel}"


def report_relpath(path: str | None, home: Path) -> str | None:
    if not path:
        return None
    p = PurePath(path)
    reports = Path(home) / REPORTS
    try:
        return Path(path).resolve().relative_to(reports.resolve()).as_posix()
    except (ValueError, OSError):
        pass
    parts = p.parts
    if REPORTS in parts:  # an absolute path from where the home used to be, or 'reports/…'
        i = len(parts) - 1 - parts[::-1].index(REPORTS)
        return PurePath(*parts[i + 1:]).as_posix() if i + 1 < len(parts) else None
    return None if p.is_absolute() else p.as_posix()


def status_of(memory, store, next_run: Callable[[], object] | None = None) -> dict:
    runs = [r for r in memory.runs(limit=20) if r["method"] != "gate"]
    last = runs[0] if runs else None
    champ = store.champion()
    out: dict = {
        "champion": champ.version if champ else None,
        "next_run": None if next_run is None or next_run() is None else str(next_run()),
        "last_run": None,
        "unlearned_demonstrations": len(memory.unlearned_demonstrations()),
    }
    if last is not None:
        reports = memory.gate_reports(last["id"])
        report = reports[-1] if reports else None
        path = report["path"] if report else ((last.get("metrics") or {}).get("gate") or {}).get("report")
        out["last_run"] = {
            "id": last["id"], "status": last["status"], "candidate": last.get("candidate_version"),
            "finished_at": last.get("finished_at"), "error": last.get("error"),
            "decision": report["decision"] if report else None,
            "report": report_link(path, memory.home),
        }
    return out
