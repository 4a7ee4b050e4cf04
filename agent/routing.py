"""Tool routing: which of the installed skills' tools one request is offered.

A small model that has learned tools calls one for "Thanks, that was helpful!" more often the more
tool schemas its prompt holds (a 135M champion of two nights answers 91% of the restraint suite
with two skills' tools offered, 77% with six's: benchmarks/results/README.md, "Six nights: the
served-context recipe"), and with no tool offered it answers such a request as the base does
(`sdft-agent ask`). The memory already knows what each skill's requests look like: its
demonstrations. So a request is offered the tools of the skills among the demonstrations most like
it (memory recall: BM25 over what their users asked), and none of a skill it resembles nowhere.

Tools that no demonstration speaks for — a skill with none yet, a tool no installed skill owns —
are always offered: nothing says when they are wanted, and withholding them would make the skill
unreachable before anyone could teach it. Routing is lexical: a request that shares no word with
any of its skill's demonstrations ("PH204?") is offered none of its tools; what that costs is
measured beside what it keeps (benchmarks/tool_routing.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

ROUTE_K = 5  # demonstrations recalled to decide; a skill among them has its tools offered


@dataclass(frozen=True)
class Route:
    offered: list[str]  # tool names offered, in the order given
    withheld: list[str]  # tool names not offered
    matched: dict[str, float] = field(default_factory=dict)  # skill -> its best recall score
    unjudged: list[str] = field(default_factory=list)  # offered because no demonstration speaks for them

    def to_dict(self) -> dict:
        return {"offered": self.offered, "withheld": self.withheld, "matched": self.matched,
                "unjudged": self.unjudged}


def route(memory, question: str, tool_names: Sequence[str], *, k: int = ROUTE_K) -> Route:
    """The tools of `tool_names` that `question` is offered (see the module docstring)."""
    if k < 1:
        raise ValueError(f"routing needs k >= 1 recalled demonstrations, got {k}")
    owners: dict[str, set[str]] = {}
    for s in memory.list_skills():
        for t in s["tools"]:
            owners.setdefault(t["name"], set()).add(s["name"])
    counts = memory.demonstration_counts()
    matched: dict[str, float] = {}
    for demo in memory.recall(question, k=k):
        matched.setdefault(demo["skill"], round(float(demo["score"]), 3))
    offered, withheld, unjudged = [], [], []
    for name in tool_names:
        skills = owners.get(name, set())
        if not skills or any(not counts.get(s) for s in skills):
            offered.append(name)
            unjudged.append(name)
        elif skills & matched.keys():
            offered.append(name)
        else:
            withheld.append(name)
    return Route(offered=offered, withheld=withheld, matched=matched, unjudged=unjudged)
