"""`sdft-agent gate …`: run the retention gate by hand, and read its reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import HomeOption, console, err_console, friendly_errors

app = typer.Typer(help="The retention gate: candidate against champion, promote or block, and its reports.",
                  no_args_is_help=True)


@app.command()
@friendly_errors
def check(
    candidate: Annotated[str, typer.Option("--candidate", help="The version to gate, e.g. v0003.")],
    skill: Annotated[str | None, typer.Option("--skill", help="The skill the candidate learned: it must improve.")] = None,
    tolerance: Annotated[float, typer.Option(help="Largest accuracy drop (points) that never blocks.")] = 2.0,
    drift_tolerance: Annotated[float, typer.Option(help="Largest drift increase (nats/token) that never blocks (GateConfig.drift_tolerance).")] = 1.0,
    alpha: Annotated[float, typer.Option(help="Significance level of the paired test.")] = 0.05,
    min_gain: Annotated[float, typer.Option(help="Points the new skill must gain, at least (strictly more).")] = 0.0,
    cumulative: Annotated[bool, typer.Option("--cumulative/--per-night", help="Also judge earlier skills against the version that learned them and general suites against the base (default), or only against the champion.")] = True,
    probes: Annotated[list[Path] | None, typer.Option("--probes", help="Extra JSONL probe set (repeatable).", exists=True, dir_okay=False)] = None,
    probe_sets: Annotated[str | None, typer.Option("--probe-sets", help="Comma-separated default probe sets (default: arc_easy,piqa,copa,instructions,drift; 'none' for none).")] = None,
    probe_limit: Annotated[int, typer.Option(help="Items per fetched or external probe set.")] = 100,
    no_fetch: Annotated[bool, typer.Option("--no-fetch", help="Do not download ARC-Easy/PIQA/COPA; use them only if cached.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts generated together.")] = 8,
    max_new_tokens: Annotated[int | None, typer.Option(help="Longest skill answer (default: longest expected + 32).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and report, but never move the champion.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the gate's summary as JSON.")] = False,
    home: HomeOption = None,
):
    """Gate a candidate against the champion on every skill and the general probes; promote it
    (the champion alias moves) or block it (the champion stays), and write the report.

    Example: sdft-agent gate check --candidate v0002 --skill unit_convert
    """
    from learner.gate import GateConfig, run_gate

    sets = None
    if probe_sets is not None:
        sets = () if probe_sets.strip().lower() == "none" else tuple(s.strip() for s in probe_sets.split(",") if s.strip())
    config = GateConfig(tolerance=tolerance / 100, drift_tolerance=drift_tolerance, alpha=alpha,
                        min_gain=min_gain / 100, batch_size=batch_size, max_new_tokens=max_new_tokens,
                        probe_sets=sets, probe_files=[str(p) for p in probes or []],
                        probe_limit=probe_limit, fetch_probes=not no_fetch, cumulative=cumulative)
    log = (lambda _: None) if json_out else (lambda msg: console.print(f"[dim]{msg}[/]"))
    out = run_gate(home, candidate, skill=skill, config=config, promote=not dry_run, log=log)
    if json_out:
        print(json.dumps(out.summary, ensure_ascii=False, indent=1, default=str))
        return
    table = Table("suite", "role", "n", "then", "candidate", "worse/better", "p", "verdict",
                  caption="then: the champion's figure; rows 'since vN': the version the suite is anchored to")
    for s in out.decision.suites + out.decision.since:
        fmt = (lambda x: f"{100 * x:.1f}%") if s.metric == "accuracy" else (lambda x: f"{x:.4f}")
        table.add_row(s.name, f"since {s.against}" if s.against else s.role, str(s.n), fmt(s.champion),
                      fmt(s.candidate), f"{s.worse_cases}/{s.better_cases}", f"{s.p_value:.3g}", s.verdict)
    console.print(table)
    color = "green" if out.decision.promote else "red"
    console.print(f"[bold {color}]{out.decision.decision.upper()}[/] {out.candidate} vs champion {out.champion}")
    for r in out.decision.reasons:
        console.print(f"  - {r}", markup=False)
    now = out.candidate if out.promoted else out.champion
    console.print(f"champion: [bold]{now}[/]; report: {out.report_path} (run {out.run_id})")


@app.command()
@friendly_errors
def report(
    run: Annotated[int | None, typer.Argument(help="Learning or gate run id (default: the latest gate report).")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the report as one HTML file (plots inlined) to PATH.")] = None,
    home: HomeOption = None,
):
    """Print a gate report (Markdown): the decision, every suite before and after, the accuracy
    matrix and backward transfer.

    Example: sdft-agent gate report 12 --html gate-12.html
    """
    from memory.store import Memory

    with Memory(home) as memory:
        reports = memory.gate_reports(run)
        if run is not None:
            memory.run(run)  # a clear error for an unknown run
    if not reports:
        where = f"run {run}" if run is not None else "this home"
        raise LookupError(f"no gate report for {where}; run `sdft-agent gate check --candidate VERSION`")
    rec = reports[-1]
    path = Path(rec["path"]) if rec.get("path") else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"the report of run {rec['run_id']} is missing on disk ({path}); "
                                f"its decision was {rec['decision']}")
    print(path.read_text(encoding="utf-8"), end="")
    if html is not None:
        shutil.copyfile(path.with_suffix(".html"), html)
        err_console.print(f"[dim]HTML written to {html}[/]")
