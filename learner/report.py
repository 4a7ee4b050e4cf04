"""The gate's report: Markdown, and the same as one self-contained HTML page, with PNG plots.

Stored under `<home>/reports/run-NNNN/` (report.md, report.html, suites.png, matrix.png,
summary.json, and results.json with every case) and linked from memory (Memory.add_gate_report).
It shows every suite before and after with 95% confidence intervals (Wilson for accuracies,
normal for drift), the paired test behind each verdict, the accuracy matrix over versions and
backward transfer, the cumulative comparisons (each earlier skill against the version that
learned it, each general suite against the base), and the cases that changed, so a blocked run
says exactly what got worse.

The accuracy matrix R has a row per version along the candidate's lineage (base first) and a
column per skill; R[i, j] is version i's accuracy on skill j, gathered from this gate and the
earlier gate reports in memory. BWT = mean over earlier learned versions i of
(R[candidate, s_i] − R[i, s_i]), s_i the skill version i learned (learner.stats.bwt).
"""

from __future__ import annotations

import base64
import html as html_lib
import math
import re
from pathlib import Path

from agent.prompt import argument_list
from learner.stats import bwt
from skills.evaluate import SuiteResult

MAX_CHANGED = 5  # changed cases shown per suite


# ---- the accuracy matrix over versions ----------------------------------------------------


def learned_by_run(memory) -> dict[str, str]:
    """Version -> the skill of the learning (or gate) run that made it; the newest run wins."""
    learned: dict[str, str] = {}
    for run in reversed(memory.runs(limit=100_000)):  # oldest first
        if run.get("candidate_version") and run.get("skill"):
            learned[run["candidate_version"]] = run["skill"]
    return learned


def history_matrix(store, memory, summary: dict) -> dict:
    """{"rows", "row_skills", "cols", "values", "bwt", "bwt_terms"} along the candidate's lineage."""
    rows = list(reversed(store.lineage(summary["candidate"])))
    learned = learned_by_run(memory)
    acc: dict[str, dict[str, float]] = {v: {} for v in rows}
    for s in [r["summary"] for r in memory.gate_reports()] + [summary]:
        if s.get("skill") and s.get("candidate"):
            learned[s["candidate"]] = s["skill"]
        for role in ("champion", "candidate"):
            if s.get(role) in acc:
                acc[s[role]].update(s.get("accuracies", {}).get(role, {}))
    learned_cols = list(dict.fromkeys(learned[v] for v in rows if v in learned))
    others = sorted({k for v in rows for k in acc[v]} - set(learned_cols))
    cols = learned_cols + others
    values = [[acc[v].get(c) for c in cols] for v in rows]
    # BWT: earlier learned versions, then the candidate as the last row T.
    cand = summary["candidate"]
    earlier = [v for v in rows[:-1] if v in learned]
    order = earlier + [cand]
    skills_of = [learned[v] for v in earlier] + [learned.get(cand)]
    R = [[acc[v].get(s) if s else None for s in skills_of] for v in order]
    return {"rows": rows, "row_skills": [learned.get(v) for v in rows], "cols": cols,
            "values": values, "bwt": bwt(R) if earlier else None,
            "bwt_terms": sum(1 for i, v in enumerate(earlier) if R[-1][i] is not None and R[i][i] is not None)}


# ---- plots ----------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_suites(suites: list[dict], path: Path, title: str) -> None:
    """Before/after per suite with 95% intervals; accuracies and drift in separate panels."""
    plt = _plt()
    groups = [[s for s in suites if s["metric"] == "accuracy"], [s for s in suites if s["metric"] != "accuracy"]]
    groups = [g for g in groups if g]
    heights = [max(1.5, 0.55 * len(g) + 0.8) for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, sum(heights) + 0.6),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, group in zip(axes[:, 0], groups, strict=True):
        binary = group[0]["metric"] == "accuracy"
        scale = 100 if binary else 1
        ys = range(len(group))
        for offset, who, color in ((-0.18, "champion", "#8c8c8c"), (0.18, "candidate", "#1f77b4")):
            vals = [s[who] * scale for s in group]
            lo = [max(0.0, (s[who] - s[f"ci_{who}"][0]) * scale) for s in group]
            hi = [max(0.0, (s[f"ci_{who}"][1] - s[who]) * scale) for s in group]
            ax.barh([y + offset for y in ys], vals, height=0.34, xerr=[lo, hi], color=color,
                    label=who, capsize=3, error_kw={"elinewidth": 1})
        ax.set_yticks(list(ys))
        ax.set_yticklabels([f"{s['name']} ({s['verdict']})" for s in group], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("accuracy (%), 95% Wilson interval" if binary else f"{group[0]['metric']}, 95% interval")
        if binary:
            ax.set_xlim(0, 100)
    axes[0, 0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    fig.suptitle(title, fontsize=10, x=0.99, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_matrix(matrix: dict, path: Path) -> None:
    plt = _plt()
    import numpy as np

    values = np.array([[math.nan if v is None else 100 * v for v in row] for row in matrix["values"]], dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 2.6 + 1.1 * len(matrix["cols"])), 1.6 + 0.5 * len(matrix["rows"])))
    im = ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(matrix["cols"])))
    ax.set_xticklabels(matrix["cols"], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix["rows"])))
    ax.set_yticklabels([_row_label(v, s) for v, s in zip(matrix["rows"], matrix["row_skills"], strict=True)], fontsize=8)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if not math.isnan(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] < 60 else "black")
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    ax.set_title("accuracy matrix\nrow: version after learning; column: skill", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- text -----------------------------------------------------------------------------------


def _row_label(version: str, skill: str | None) -> str:
    return f"{version} (learned {skill})" if skill else version


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _figure(s: dict, who: str) -> str:
    lo, hi = s[f"ci_{who}"]
    if s["metric"] == "accuracy":
        return f"{100 * s[who]:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{s[who]:.4f} [{lo:.4f}, {hi:.4f}]"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    """Inline-code-safe: a backtick in a model's answer would end the span."""
    return _cell(text).replace("`", "'")


def _short(x, n: int = 160) -> str:
    s = " ".join(str(x).split())
    return s if len(s) <= n else s[: n - 1] + "…"


def changed_cases(champ: SuiteResult, cand: SuiteResult) -> list[str]:
    """Markdown bullets for cases a pass/fail suite flipped (worse first)."""
    if not champ.binary:
        return []
    before = {c["id"]: c for c in champ.cases}
    lines = []
    for kind, test in (("worse", lambda a, b: a > b), ("better", lambda a, b: a < b)):
        flipped = [c for c in cand.cases if test(before[c["id"]]["score"], c["score"])]
        for c in flipped[:MAX_CHANGED]:
            b = before[c["id"]]
            ask, had, got = c.get("request", ""), b.get("answer", ""), c.get("answer", "")
            why = f" — {c['reason']}" if c.get("reason") else ""
            if c.get("withheld"):
                why += f" (call withheld, not grounded in the request: `{_code(_short(c['withheld'], 80))}`)"
            if c.get("dropped"):
                gone = ", ".join(argument_list(d["arguments"]) for d in c["dropped"])
                why += f" (left out, not in the request: `{_code(_short(gone, 80))}`)"
            lines.append(f"- {kind}: case {c['id']}: {_cell(_short(ask, 100))} — champion `{_code(_short(had, 120))}`; "
                         f"candidate `{_code(_short(got, 120))}`{_cell(why)}")
        if len(flipped) > MAX_CHANGED:
            lines.append(f"- … and {len(flipped) - MAX_CHANGED} more {kind}")
    return lines


def render_markdown(summary: dict, champion: list[SuiteResult], candidate: list[SuiteResult],
                    images: dict[str, str], anchors: dict[str, SuiteResult] | None = None) -> str:
    s = summary
    verdict = s["decision"].upper()
    after = (f"{s['candidate']} is now the champion" if s["promoted"]
             else f"{s['champion']} stays the champion")
    out = [
        f"# Retention gate, run {s['run_id']}: {verdict}",
        "",
        f"Candidate **{s['candidate']}** (parent {s['candidate_parent'] or '–'}, base {s['base']}) against "
        f"champion **{s['champion']}**; new skill: {s['skill'] or 'none'}. {after}.",
        f"Evaluated in one process on the same cases in {s['wall_s']:.1f} s.",
        "",
        f"## Decision: {s['decision']}",
        "",
        *[f"- {_cell(r)}" for r in s["reasons"]],
        "",
        "## Suites",
        "",
        "Accuracy (or share of healthy answers) with its 95% Wilson interval; drift as mean KL "
        "(nats/token, lower is better: `drift_champion` to the champion on its own answers, `drift` to the "
        "base) with a 95% normal interval. *worse / better*: cases where the candidate did worse / "
        "better than the champion; *p*: one-sided exact McNemar (sign test) that the candidate is worse. "
        "Closed-book suites are judged on *retained*: of the questions the champion answers right, the "
        "share the candidate still does. Role *info*: reported, never blocks.",
        "",
        "| suite | role | n | champion | candidate | change | worse / better | p | tolerance | verdict |",
        "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    out += [_comparison_row(x, x["role"]) for x in s["suites"]]
    if "suites" in images:
        out += ["", f"![Every suite before and after]({images['suites']})"]
    if s.get("since"):
        out += ["", "## Since each suite's anchor", "",
                "Losses under the tolerance can add up night after night, so each earlier skill is also "
                "judged against the version that learned it and each general suite against the base, "
                "with the same tolerance and test: a tolerance is a budget for the whole lineage.", "",
                "| suite | against | n | then | candidate | change | worse / better | p | tolerance | verdict |",
                "| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- |"]
        out += [_comparison_row(x, x["against"]) for x in s["since"]]
    m = s["matrix"]
    out += ["", "## Accuracy matrix", "",
            "Row: the version after learning a skill (its lineage, base first); column: skill; "
            "cell: accuracy on that skill's held-out cases.", ""]
    if m["cols"]:
        out += ["| version | " + " | ".join(m["cols"]) + " |", "| --- |" + " ---: |" * len(m["cols"])]
        for v, sk, row in zip(m["rows"], m["row_skills"], m["values"], strict=True):
            out.append(f"| {_row_label(v, sk)} | " + " | ".join(_pct(x) for x in row) + " |")
    else:
        out.append("No skill suites yet.")
    if m["bwt"] is None:
        out += ["", "BWT: n/a (needs an earlier version that learned a skill, on the candidate's lineage)."]
    else:
        out += ["", f"BWT = mean over earlier learned skills of (R[candidate, i] − R[i, i]) = "
                    f"**{100 * m['bwt']:+.1f} points** over {m['bwt_terms']} skill(s)."]
    if "matrix" in images:
        out += ["", f"![Accuracy matrix]({images['matrix']})"]
    by_name = {r.name: r for r in candidate}
    changed = [(r.name, changed_cases(r, by_name[r.name])) for r in champion]
    changed = [(n, lines) for n, lines in changed if lines]
    if changed:
        out += ["", "## Cases that changed", ""]
        for name, lines in changed:
            out += [f"### {name}", "", *lines, ""]
    # against an anchor, only where that comparison blocks: the rest is the table above
    blocking = [x for x in s.get("since", []) if x["blocks"] and x["name"] in (anchors or {})]
    if blocking:
        out += ["", "## Cases lost since the anchor", "",
                "For each suite that blocks against its anchor: the anchor's answer in place of the champion's.", ""]
        for x in blocking:
            lines = changed_cases(anchors[x["name"]], by_name[x["name"]])
            out += [f"### {x['name']} since {x['against']}", "", *lines, ""]
    c = s["config"]
    out += ["", "## Settings", "",
            f"- tolerance: {100 * c['tolerance']:g} points (accuracy, unless the table says otherwise), "
            f"{c['drift_tolerance']:g} nats/token (drift from the champion)"
            + (f"; per suite: {c['tolerances']}" if c["tolerances"] else ""),
            f"- alpha: {c['alpha']:g} (one-sided exact McNemar / sign test); new skill must gain more than "
            f"{100 * c['min_gain']:g} points",
            f"- probes: {', '.join(c['probe_sets']) if c['probe_sets'] is not None else 'default'}"
            + (f" + {', '.join(c['probe_files'])}" if c["probe_files"] else "")
            + f"; up to {c['probe_limit']} items per set (seed {c['probe_seed']})",
            "- evaluation time: " + ", ".join(f"{v} {t:.1f} s" for v, t in s["eval_wall_s"].items())
            + (f" (champion cached for {len(s['cached_suites'])} suites)" if s.get("cached_suites") else ""),
            f"- decoding: {s.get('decoding', {})}"]
    out += [f"- note: {_cell(n)}" for n in s["notes"]]
    return "\n".join(out) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.3rem .5rem}
th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6;padding:0 .2rem}"""


def _comparison_row(x: dict, second: str) -> str:
    """One table row of a suite comparison; `second`: its role, or the version it is against."""
    binary = x["metric"] == "accuracy"
    change = f"{100 * x['delta']:+.1f} pts" if binary else f"{x['delta']:+.4f}"
    if x.get("retained") is not None:
        change += f"; retained {100 * x['retained']:.0f}% of {x['champion_correct']}"
    tol = f"{100 * x['tolerance']:g} pts" if binary else f"{x['tolerance']:g}"
    return (f"| {x['name']} | {second} | {x['n']} | {_figure(x, 'champion')} | {_figure(x, 'candidate')} "
            f"| {change} | {x['worse_cases']} / {x['better_cases']} | {x['p_value']:.3g} | {tol} | **{x['verdict']}** |")


def render_html(markdown: str, folder: Path, title: str) -> str:
    """The Markdown as one HTML page, images inlined so the file stands alone."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown)

    def inline(m: re.Match) -> str:
        path = folder / html_lib.unescape(m.group(1))
        if not path.is_file():
            return m.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html_lib.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}</body></html>\n")


def write_report(folder: Path, summary: dict, champion: list[SuiteResult],
                 candidate: list[SuiteResult], anchors: dict[str, SuiteResult] | None = None) -> tuple[Path, Path]:
    """Write report.md, report.html and the plots into `folder`; return the two report paths.
    anchors: suite name -> its anchor version's result (the cumulative comparisons' cases)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images: dict[str, str] = {}
    title = f"run {summary['run_id']}: {summary['decision']} {summary['candidate']} vs {summary['champion']}"
    if summary["suites"]:
        plot_suites(summary["suites"], folder / "suites.png", title)
        images["suites"] = "suites.png"
    if summary["matrix"]["cols"]:
        plot_matrix(summary["matrix"], folder / "matrix.png")
        images["matrix"] = "matrix.png"
    md = render_markdown(summary, champion, candidate, images, anchors)
    md_path, html_path = folder / "report.md", folder / "report.html"
    md_path.write_text(md, encoding="utf-8")
    html_path.write_text(render_html(md, folder, f"Retention gate, {title}"), encoding="utf-8")
    return md_path, html_path
