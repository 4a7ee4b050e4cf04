"""Grounded arguments on saved replies: every skill case a gate scored in the given homes, scored
again with the optional arguments its calls invented left out (agent.grounding.drop_invented), as
the chat model and the gate now serve them. No model runs: the rule acts after decoding, on the
parsed calls, so the saved text is exactly what the model would write again, and each case's score
under the rule is exact (gate cases are decoded with nothing recalled: the request is the whole
conversation).

Made for issue 12: a learned BFCL tool fills the slots it has seen most ("I would like to see a
movie in Vallejo." → `Movies_1_FindMovies(location="Vallejo, CA", genre="Animation",
show_type="imax")`), and a filter nobody asked for fails the case and narrows what a user gets.

    python benchmarks/grounded_arguments.py --home /work/nightly/grounded --home /work/chain/s30n4 \\
        --out benchmarks/results/grounded_arguments.json

A version's suite met in several reports (the champion of one night is scored again the next) is
counted once. Prints a table per skill and one per (home, version) when --versions is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.grounding import drop_invented  # noqa: E402
from memory.store import Memory  # noqa: E402
from skills.checker import check_calls  # noqa: E402


def rescore(case: dict, tools: list[dict]) -> dict:
    """The case scored as written and with invented optional arguments left out."""
    calls = case.get("calls") or []
    if calls and not case.get("invalid") and not case.get("dropped"):
        kept, dropped = drop_invented(calls, tools, [{"role": "user", "content": case["request"]}])
        served = check_calls(kept, case["expected"], tools).correct
    else:  # no call, an invalid one, or already scored under the rule: nothing changes
        kept, dropped, served = calls, [], bool(case["correct"])
    return {"id": case["id"], "request": case["request"], "written": bool(case["correct"]), "served": served,
            "calls": calls, "kept": kept, "dropped": dropped}


def saved_suites(home: Path, kinds: tuple[str, ...] = ("skill",)):
    """(report, version, suite) of every gate report in `home` whose suite is of one of `kinds`
    (a suite kind, or a suite's name), each (version, suite) once."""
    seen = set()
    for path in sorted(home.glob("reports/run-*/results.json")):
        for version, suites in json.loads(path.read_text()).items():
            if not isinstance(suites, list):
                continue
            for suite in suites:
                wanted = suite.get("kind") in kinds or suite.get("name") in kinds
                if wanted and (version, suite["name"]) not in seen:
                    seen.add((version, suite["name"]))
                    yield path.parent.name, version, suite


def open_homes(paths: list[str]) -> Iterator[tuple[Path, Memory]]:
    """Each home the learner ran in, with its memory open while the caller reads it."""
    for home in map(Path, paths):
        if not (home / "memory.db").is_file():
            raise SystemExit(f"{home}: no memory.db; give a home the learner ran in")
        with Memory(home) as memory:
            yield home, memory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", action="append", required=True, help="a home whose gate reports to read (repeat)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rows, by_skill = [], {}
    for home, memory in open_homes(args.home):
        for report, version, suite in saved_suites(home):
            tools = memory.tools_for(suite["name"])
            cases = [rescore(c, tools) for c in suite["cases"]]
            row = {"home": str(home), "report": report, "version": version, "skill": suite["name"],
                   "n": len(cases), "written": sum(c["written"] for c in cases),
                   "served": sum(c["served"] for c in cases),
                   "won": sum(c["served"] and not c["written"] for c in cases),
                   "lost": sum(c["written"] and not c["served"] for c in cases),
                   "changed_calls": sum(bool(c["dropped"]) for c in cases),
                   "changed": [c for c in cases if c["dropped"]]}
            rows.append(row)
            agg = by_skill.setdefault(suite["name"], dict.fromkeys(("n", "written", "served", "won", "lost",
                                                                     "changed_calls"), 0))
            for k in agg:
                agg[k] += row[k]
    print(f"{'home':28} {'version':8} {'skill':24} {'n':>3} {'as written':>10} {'served':>7} {'won':>4} {'lost':>4}")
    for r in rows:
        if r["changed_calls"]:
            print(f"{Path(r['home']).name:28} {r['version']:8} {r['skill'][:24]:24} {r['n']:3} "
                  f"{r['written']:10} {r['served']:7} {r['won']:4} {r['lost']:4}")
    print(f"\n{'skill':24} {'cases':>6} {'as written':>10} {'served':>7} {'won':>4} {'lost':>4} {'calls changed':>13}")
    for skill, a in by_skill.items():
        print(f"{skill[:24]:24} {a['n']:6} {a['written']:10} {a['served']:7} {a['won']:4} {a['lost']:4} "
              f"{a['changed_calls']:13}")
    Path(args.out).write_text(json.dumps({"homes": args.home, "by_skill": by_skill, "suites": rows}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
