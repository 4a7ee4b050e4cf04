"""Tool restraint: with every installed skill's tools offered, as the agent serves, a request that
needs none of them gets an answer, not a call; and a skill's request never calls another skill's
tool.

Small models that learn one tool tend to call it for everything; accuracy on the skill's own cases
cannot see that. Two kinds of case, one suite:
- `r…`: requests no offered tool serves — BFCL v4 `irrelevance` / `live_irrelevance` questions
  (skills.probes.fetched) and everyday questions written here. Right when the reply opens no
  `<tool_call>` block (valid or not).
- `x…`: a sample of each skill's held-out requests, with every installed tool offered. Right when
  no call names a tool of another skill (calling its own tool wrongly is the skill suite's
  business, not restraint's). Only when two or more skills are installed.
"""

from __future__ import annotations

import time

from agent.prompt import CALL_OPEN, PromptFormat
from skills.evaluate import SuiteResult, mark_withheld, user_text
from skills.probes.open_health import flags

KIND = "restraint"
MAX_NEW_TOKENS = 40

EVERYDAY = [
    "What is the capital of Italy?",
    "How is your week going?",
    "Can you tell me a joke?",
    "What is the boiling point of water?",
    "Who painted the Mona Lisa?",
    "Thanks, that was helpful!",
    "What does a doctor do?",
    "Write a haiku about the sea.",
    "Which is bigger, the sun or the moon?",
    "Good night!",
    "What colour is grass?",
    "Recommend a book for a long train ride.",
]


class RestraintProbe:
    """requests: [{"id", "question"}] needing no tool; cross: [{"id", "messages", "skill"}];
    tools: every installed tool; owner: tool name -> skill."""

    kind = KIND
    # 1: a call cut off by the answer budget still counts by the name it opened with (the parser
    # names an unterminated block's tool; measured: a candidate calling Movies_1_FindMovies for
    # date questions passed as "no foreign tool")
    # 2: decoded as the agent serves, tool calls constrained to the offered schemas (before: free,
    # so a cross-skill request failed on invented names such as "2030-09-09" or "Mineschema" that
    # the served agent cannot write: 16 of a night-6 candidate's 18 cross-skill failures)
    # 3: a reply that writes tool-call markup as text (`<tool_call id="add_days">` lines, a call's
    # JSON without its block) is no answer either: measured on night-4 and night-6 candidates
    # whose real `<tool_call>` opening was forbidden (the call decision below its threshold): 11
    # of 11 requests "gained" that way were such markup, which no rule of version 2 caught
    scoring_version = 3

    def __init__(self, name: str, requests: list[dict], tools: list[dict], *,
                 cross: list[dict] | None = None, owner: dict[str, str] | None = None,
                 max_new_tokens: int = MAX_NEW_TOKENS, routes: dict[str, list[str]] | None = None):
        """routes: case id ("r…"/"x…") -> the tool names that request is offered, as a routing
        agent serves (agent.routing); None: every tool, every request."""
        if not tools:
            raise ValueError(f"{name}: restraint needs the installed tools (none are installed)")
        self.name, self.requests, self.tools = name, requests, tools
        self.cross, self.owner = cross or [], owner or {}
        self.max_new_tokens = max_new_tokens
        self.routes = routes
        if routes is not None:
            missing = [i for i in self.case_ids() if i not in routes]
            if missing:
                raise ValueError(f"{name}: no route for case(s) {', '.join(missing[:5])}")

    def case_ids(self) -> list[str]:
        return [f"r{r['id']}" for r in self.requests] + [f"x{c['id']}" for c in self.cross]

    def items_key(self) -> list:
        key = [self.max_new_tokens, self.tools, [[r["id"], r["question"]] for r in self.requests],
               [[c["id"], c["skill"], c["messages"]] for c in self.cross], sorted(self.owner.items())]
        return key if self.routes is None else [*key, sorted(self.routes.items())]

    def offered(self) -> list[list[dict]]:
        """The tools each case is offered, in case order."""
        if self.routes is None:
            return [self.tools for _ in self.case_ids()]
        return [[t for t in self.tools if t["name"] in self.routes[i]] for i in self.case_ids()]

    def run(self, model, tokenizer, *, batch_size: int = 8, model_name: str | None = None,
            constrain: bool | None = None, **_) -> SuiteResult:
        """Greedy, with tool calls decoded as the agent serves them: constrained to the offered
        schemas (tool_choice auto: the model still decides whether to call) unless `constrain`
        is False (None: agent.decode.default_constrain())."""
        from agent.decode import default_constrain
        from skills.generation import generate_texts

        t0 = time.perf_counter()
        fmt = PromptFormat(tokenizer)
        convs = [[{"role": "user", "content": r["question"]}] for r in self.requests] + [c["messages"] for c in self.cross]
        offered = self.offered()
        constrained = default_constrain() if constrain is None else bool(constrain)
        texts = [""] * len(convs)
        withheld: list[str | None] = [None] * len(convs)
        groups: dict[tuple[str, ...], list[int]] = {}  # one batch per tool set: its prompts share their prefix
        for i, tools in enumerate(offered):
            groups.setdefault(tuple(t["name"] for t in tools), []).append(i)
        for rows in groups.values():
            tools = offered[rows[0]] or None
            held: list[str | None] = []
            done = generate_texts(model, fmt, [fmt.encode(convs[i], tools) for i in rows],
                                  max_new_tokens=self.max_new_tokens, batch_size=batch_size, tools=tools,
                                  constrain=constrained, conversations=[convs[i] for i in rows], withheld=held)
            for i, text, w in zip(rows, done, held, strict=True):
                texts[i], withheld[i] = text, w
        return self.score(texts, fmt, model_name=model_name, wall_s=time.perf_counter() - t0,
                          constrained=constrained, withheld=withheld)

    def score(self, texts: list[str], fmt: PromptFormat, *, model_name: str | None = None,
              wall_s: float = 0.0, constrained: bool | None = None,
              withheld: list[str | None] | None = None) -> SuiteResult:
        cases = []
        n = len(self.requests)
        for row, text in zip(self.requests, texts[:n], strict=True):
            called = CALL_OPEN in fmt.strip_special(text)
            # not a call is not yet an answer: a loop of tool markup ("<tool_response>" × 40, seen on a
            # promoted candidate for "Good night!") fails too
            debris = [] if called else [f for f in flags(text) if f in ("loop", "markup", "tool_json")]
            if not called and CALL_OPEN[:-1] in text and "tool_json" not in debris:
                debris.append("tool_json")  # `<tool_call id=…>`: a call written as text
            ok = not called and not debris
            reason = ("called a tool where none was needed" if called
                      else f"no answer: {', '.join(debris)}" if debris else "answered")
            cases.append({"id": f"r{row['id']}", "score": 1.0 if ok else 0.0, "correct": ok,
                          "request": row["question"], "answer": text, "reason": reason})
        for case, text in zip(self.cross, texts[n:], strict=True):
            parsed = fmt.parse(text, None)
            names = [c["name"] for c in parsed.calls] + [c.name for c in parsed.invalid if c.name]
            foreign = [x for x in names if self.owner.get(x) != case["skill"]]
            cases.append({"id": f"x{case['id']}", "score": 0.0 if foreign else 1.0, "correct": not foreign,
                          "request": user_text(case["messages"]), "answer": text,
                          "reason": f"called {', '.join(foreign)} (not a {case['skill']} tool)" if foreign
                          else "no foreign tool"})
        notes = [f"{len(self.tools)} tool(s) offered; {n} request(s) needing none; "
                 f"{len(self.cross)} skill request(s) checked for foreign calls"]
        if self.routes is not None:
            offered = self.offered()
            sizes = [len(t) for t in offered]
            notes[0] = (f"routed among {len(self.tools)} tool(s): {sum(sizes) / len(sizes):.1f} offered on "
                        f"average, none to {sizes[:n].count(0)} of {n} request(s) needing none; "
                        f"{len(self.cross)} skill request(s) checked for foreign calls")
            for case, tools in zip(cases, offered, strict=True):
                case["offered"] = [t["name"] for t in tools]
        if constrained is not None:
            notes.append(f"decoding: {'constrained' if constrained else 'free'}")
        mark_withheld(cases, withheld, notes)
        return SuiteResult(name=self.name, kind=KIND, cases=cases, model=model_name, wall_s=wall_s, notes=notes,
                           constrained=constrained)


def restraint_probe(memory, irrelevant: list[dict], *, per_skill: int = 4, name: str = "tool_restraint",
                    max_new_tokens: int = MAX_NEW_TOKENS, routed: bool = False) -> RestraintProbe | None:
    """The suite for what `memory` has installed (None when no tool is installed): the tools
    exactly as the agent serves them (Memory.served_tools), every one to every request, or with
    `routed` the ones agent.routing offers each request (its routes fixed when the suite is built,
    so a champion and its candidate are asked the same prompts)."""
    tools, owner, cross = [], {}, []
    skills = memory.list_skills()
    for skill, t in memory.served_tools_by_skill():
        tools.append(t)
        owner[t["name"]] = skill
    if not tools:
        return None
    if len(skills) > 1:
        for s in skills:
            for case in memory.eval_cases(s["name"])[:per_skill]:
                cross.append({"id": f"{s['name']}-{case.get('id')}", "messages": case["messages"], "skill": s["name"]})
    requests = [{"id": f"e{i:02d}", "question": q} for i, q in enumerate(EVERYDAY)] + list(irrelevant)
    routes = None
    if routed:
        from agent.routing import Router
        from skills.retention import unneeded_requests

        router = Router(memory, unneeded_requests(tools))  # as `sdft-agent run --route` routes
        names = [t["name"] for t in tools]
        routes = {f"r{r['id']}": router.route(r["question"], names).offered for r in requests}
        routes |= {f"x{c['id']}": router.route(user_text(c["messages"]), names).offered for c in cross}
    return RestraintProbe(name, requests, tools, cross=cross, owner=owner, max_new_tokens=max_new_tokens,
                          routes=routes)
