"""Tool routing: which of the installed skills' tools one request is offered.

A small model that has learned tools calls one for "Thanks, that was helpful!" more often the more
tool schemas its prompt holds (a 135M champion of two nights answers 91% of the restraint suite
with two skills' tools offered, 77% with six's: benchmarks/results/README.md, "Six nights: the
served-context recipe"), and with no tool offered it answers such a request as the base does
(`sdft-agent ask`). The memory already knows what each skill's requests look like: its
demonstrations. And the caller can say what requests needing no tool look like (`unneeded`: the
learner's everyday retention prompts, skills.retention.unneeded_requests).

So the request is ranked (BM25, FTS5 with the memory's own tokenizer) against both, and a skill's
tools are offered when one of its demonstrations ranks above every request that needed no tool,
among the K most similar. "Thanks, that was helpful!" shares "thanks" with some BFCL
demonstration, but an everyday request about thanking ranks above it; "PH204?" shares no word
with any catalog demonstration and is offered none of catalog's tools (what that costs is
measured: benchmarks/tool_routing.py).

Tools that no demonstration speaks for — a skill with none yet, a tool no installed skill owns —
are always offered: nothing says when they are wanted, and withholding them would make a new
skill unreachable before anyone could teach it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from memory import recall as recall_terms

ROUTE_K = 5  # the most similar texts looked at; a skill among them, above every unneeded request, is offered
TOKENIZER = "porter unicode61 remove_diacritics 2"  # the memory's demonstrations_fts tokenizer (memory.schema)


@dataclass(frozen=True)
class Route:
    offered: list[str]  # tool names offered, in the order given
    withheld: list[str]  # tool names not offered
    matched: list[str] = field(default_factory=list)  # skills whose demonstrations ranked above every unneeded request
    unjudged: list[str] = field(default_factory=list)  # offered because no demonstration speaks for them

    def to_dict(self) -> dict:
        return {"offered": self.offered, "withheld": self.withheld, "matched": self.matched,
                "unjudged": self.unjudged}


class Router:
    """Routes requests against one memory (see the module docstring). The index of its
    demonstrations is built on first use and again whenever their number changes; a router is
    safe to share between threads."""

    def __init__(self, memory, unneeded: Sequence[str] = (), *, k: int = ROUTE_K):
        if k < 1:
            raise ValueError(f"routing needs k >= 1 texts to rank, got {k}")
        self.memory, self.unneeded, self.k = memory, [u for u in unneeded if u and u.strip()], k
        self._db: sqlite3.Connection | None = None
        self._counts: dict[str, int] | None = None
        self._lock = threading.Lock()

    def _index(self, counts: dict[str, int]) -> sqlite3.Connection:
        if self._db is not None and counts == self._counts:
            return self._db
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.execute(f"CREATE VIRTUAL TABLE texts USING fts5(text, skill UNINDEXED, tokenize='{TOKENIZER}')")
        db.executemany("INSERT INTO texts VALUES (?, ?)",
                       [(recall_terms.prompt_text(d["messages"]), d["skill"]) for d in self.memory.demonstrations()]
                       + [(u, None) for u in self.unneeded])
        self._db, self._counts = db, counts
        return db

    def matched(self, question: str, counts: dict[str, int] | None = None) -> list[str]:
        """Skills with a demonstration among the k texts most like `question`, ranked above every
        unneeded request there; most similar first. `counts`: the memory's demonstration counts,
        when the caller has just read them."""
        terms = recall_terms.query_terms(question)
        if not terms:
            return []
        with self._lock:
            db = self._index(self.memory.demonstration_counts() if counts is None else counts)
            quoted = " OR ".join(f'"{t}"' for t in terms)  # \w+ words: no quote can occur inside
            rows = db.execute("SELECT skill FROM texts WHERE texts MATCH ? ORDER BY bm25(texts) LIMIT ?",
                              [f"text : ({quoted})", self.k]).fetchall()
        out: list[str] = []
        for (skill,) in rows:
            if skill is None:
                break
            if skill not in out:
                out.append(skill)
        return out

    def route(self, question: str, tool_names: Sequence[str]) -> Route:
        """The tools of `tool_names` that `question` is offered."""
        owners: dict[str, set[str]] = {}
        for s in self.memory.list_skills():
            for t in s["tools"]:
                owners.setdefault(t["name"], set()).add(s["name"])
        counts = self.memory.demonstration_counts()
        matched = self.matched(question, counts)
        offered, withheld, unjudged = [], [], []
        for name in tool_names:
            skills = owners.get(name, set())
            if not skills or any(not counts.get(s) for s in skills):
                offered.append(name)
                unjudged.append(name)
            elif skills & set(matched):
                offered.append(name)
            else:
                withheld.append(name)
        return Route(offered=offered, withheld=withheld, matched=matched, unjudged=unjudged)
