"""`sdft-agent chat` and `sdft-agent run`: the agent from the command line (a thin layer over
agent.loop.Agent). Registered in cli/main.py with `app.command()(agent_cmd.chat)` etc.

The tools offered are the skills' schemas from memory; a skill bundled with the package also
brings its Python implementation (skills.tools), others can be called but not run.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.text import Text

from cli.common import HomeOption, console, friendly_errors

SkillOption = Annotated[
    str | None,
    typer.Option("--skill", help="Offer only this skill's tools and recall only its demonstrations (default: all skills)."),
]
RecallOption = Annotated[
    int, typer.Option("--recall", min=0, help="Demonstrations recalled from memory into the context (0: none); "
                                              "none of a skill the serving model has learned (see --recall-learned).")
]
RecallLearnedOption = Annotated[bool, typer.Option(
    "--recall-learned",
    help="Recall demonstrations of skills the serving model was already trained on too (by default "
         "they are left out: in context they cost a learned skill accuracy).")]
ModelOption = Annotated[str | None, typer.Option("--model", help="Model version (default: the champion, followed as it moves).")]
MaxTokensOption = Annotated[int, typer.Option("--max-new-tokens", min=1, help="Longest model reply, in tokens.")]
MaxTurnsOption = Annotated[int, typer.Option("--max-turns", min=1, help="Model calls per question, repair included.")]
ConstrainOption = Annotated[bool | None, typer.Option(
    "--constrain/--no-constrain",
    help="Tool calls follow the offered tools' schemas (constrained decoding, the default unless "
         "SDFT_AGENT_CONSTRAIN=0); --no-constrain decodes the model's own tokens.")]

RouteOption = Annotated[bool, typer.Option(
    "--route/--all-tools",
    help="Offer each question only the tools of the skills whose demonstrations it resembles more "
         "than it resembles everyday requests needing no tool (agent.routing), or every installed tool.")]

HELP = """commands:
  /good [note]    the last answer was right (kept as a demonstration to learn from)
  /bad [note]     the last answer was wrong
  /teach CALLS    the right tool call(s) for the last question, as JSON
                  e.g. /teach {"name": "add_days", "arguments": {"date": "2024-01-01", "days": 30}}
  /tools          the tools on offer
  /model          the model version serving now
  /help           this text
  /quit           leave (or Ctrl-D)
anything else is a question."""


def skill_tools(memory, skill: str | None) -> list[tuple[dict, object]]:
    """(schema, implementation or None) for the tools of `skill`, or of every skill as the agent
    serves them (memory.store.Memory.served_tools: by skill name, a shared tool name once); an
    implementation only for the schema it was written for (skills.install.implementations_for)."""
    from skills.install import implementations_for

    if skill is not None:
        found = memory.get_skill(skill)
        if found is None:
            known = ", ".join(s["name"] for s in memory.list_skills()) or "none installed"
            raise ValueError(f"unknown skill {skill!r} (known: {known})")
        served = [(found["name"], tool) for tool in found["tools"]]
    else:
        served = memory.served_tools_by_skill()
    impl = {name: implementations_for(name, [t for s, t in served if s == name])
            for name in dict.fromkeys(s for s, _ in served)}
    return [(tool, impl[name].get(tool["name"])) for name, tool in served]


def resolve_constrain(constrain: bool | None) -> bool:
    """A command's --constrain/--no-constrain, or agent.decode's default when neither is given."""
    from agent.decode import default_constrain

    return default_constrain() if constrain is None else constrain


def build_agent(memory, *, home, skill, recall, model, max_new_tokens, max_turns, constrain=None, route=True,
                recall_learned=False):
    from transformers.utils import logging as hf_logging

    from agent.chat_model import LocalChatModel
    from agent.loop import Agent, AgentConfig
    from agent.routing import Router
    from skills.retention import unneeded_requests

    hf_logging.disable_progress_bar()  # a "Loading weights" bar per promotion is noise in a chat
    llm = LocalChatModel.from_store(home, version=model, max_new_tokens=max_new_tokens,
                                    constrain=resolve_constrain(constrain))
    config = AgentConfig(recall_k=recall, max_turns=max_turns, route_tools=route, recall_learned=recall_learned)
    router = Router(memory, unneeded_requests(memory.served_tools())) if config.route_tools else None
    return Agent(llm, skill_tools(memory, skill), memory=memory, skill=skill, config=config, router=router)


def show_episode(ep) -> None:
    from agent.prompt import argument_list

    for r in ep.tool_results:
        console.print(Text(f"  → {r['name']}({argument_list(r['arguments'])})", style="cyan"))
        style = "red" if r["status"] == "error" else "dim"
        console.print(Text(f"  ← {_short(r['content'])}", style=style))
    for c in ep.invalid_calls:
        console.print(Text(f"  ✗ invalid call: {c['error']}", style="yellow"))
    for d in ep.dropped:
        console.print(Text(f"  ✂ {d['name']}: {argument_list(d['arguments'])} left out (not in the question; the tool's default applies)",
                           style="dim"))
    for w in ep.withheld:
        console.print(Text(f"  ∅ call not made (no value from the question): {_short(w['reply'], 120)}", style="dim"))
    if ep.status == "answered":
        console.print(Text(ep.answer or "(empty answer)"))
    else:
        console.print(Text(f"no answer: {ep.error}", style="bold red"))
    where = f"episode {ep.id}" if ep.id is not None else "not recorded"
    routed = "" if ep.offered is None else f", tools offered: {', '.join(ep.offered) or 'none'}"
    skipped = f", not recalled (learned): {', '.join(ep.recall_skipped)}" if ep.recall_skipped else ""
    console.print(Text(f"  [{where}, model {ep.model_version}{routed}{skipped}]", style="dim"))


def _short(text: str, width: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@friendly_errors
def run(
    question: Annotated[str, typer.Argument(help="What to ask.")],
    skill: SkillOption = None,
    recall: RecallOption = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the episode as JSON: tool calls, tool results, answer, episode id.")] = False,
    model: ModelOption = None,
    max_new_tokens: MaxTokensOption = 256,
    max_turns: MaxTurnsOption = 6,
    constrain: ConstrainOption = None,
    route: RouteOption = True,
    recall_learned: RecallLearnedOption = False,
    home: HomeOption = None,
):
    """Answer one question with the skills' tools: one episode, recorded in memory.

    Example: sdft-agent run "What weekday is 2024-07-04?" --skill date_math --json
    """
    from memory.store import Memory

    with Memory(home) as memory:
        agent = build_agent(memory, home=home, skill=skill, recall=recall, model=model,
                            max_new_tokens=max_new_tokens, max_turns=max_turns, constrain=constrain,
                            route=route, recall_learned=recall_learned)
        ep = agent.run(question)
    if as_json:
        keys = ("id", "model_version", "skill", "question", "status", "answer", "error", "tool_calls",
                "tool_results", "invalid_calls", "recalled", "recall_skipped", "offered", "turns", "usage")
        out = {("episode_id" if k == "id" else k): getattr(ep, k) for k in keys}
        out["constrained"] = agent.llm.constrain
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        show_episode(ep)


@friendly_errors
def chat(
    skill: SkillOption = None,
    recall: RecallOption = 3,
    model: ModelOption = None,
    max_new_tokens: MaxTokensOption = 256,
    max_turns: MaxTurnsOption = 6,
    constrain: ConstrainOption = None,
    route: RouteOption = True,
    recall_learned: RecallLearnedOption = False,
    home: HomeOption = None,
):
    """Talk with the agent. Every question is an episode kept in memory; judge it with /good or
    /bad, or /teach the right tool call. A newly promoted model serves from the next question.

    Example: sdft-agent chat --skill date_math
    """
    from memory.store import Memory

    with Memory(home) as memory:
        agent = build_agent(memory, home=home, skill=skill, recall=recall, model=model,
                            max_new_tokens=max_new_tokens, max_turns=max_turns, constrain=constrain,
                            route=route, recall_learned=recall_learned)
        version = agent.llm.runtime.current().version
        tools = ", ".join(t.name for t in agent.tools) or "none (install a skill pack to add some)"
        decoding = "" if agent.llm.constrain else " · unconstrained tool calls"
        console.print(Text(f"model {version} · tools: {tools}{decoding} · /help for commands", style="dim"))
        while True:
            try:
                line = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            try:
                if line.startswith("/"):
                    _command(agent, line)
                else:
                    show_episode(agent.run(line))
            except (ValueError, LookupError, RuntimeError) as exc:
                msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                console.print(Text(f"error: {msg}", style="bold red"))


def _command(agent, line: str) -> None:
    from agent.tools import calls_from_text, validate_calls

    name, _, rest = line.partition(" ")
    rest = rest.strip() or None
    if name in ("/good", "/bad", "/teach"):  # the one feedback rule (agent.feedback), on this chat's episode
        from agent.feedback import judge

        if agent.last is None or agent.last.id is None:
            raise LookupError("no episode in this chat yet to judge: ask something first")
        if name == "/teach" and rest is None:
            raise ValueError('give the call(s) as JSON, e.g. /teach {"name": "…", "arguments": {…}}')
        calls = validate_calls(calls_from_text(rest), agent.tools) if name == "/teach" else None
        out = judge(agent.memory, agent.last.id, None if calls else name[1:], note=None if calls else rest,
                    tool_calls=calls)
        text = f"episode {out['episode_id']} marked {out['outcome']}"
        if out.get("taught_id") is not None:
            state = "stored" if out.get("created") else "already known"
            text = (f"{state}: demonstration {out['taught_id']} of {out['skill']} for episode "
                    f"{out['episode_id']}; {text}")
        if out.get("demonstration_id") is not None:
            text += f"; kept as demonstration {out['demonstration_id']} of {out['skill']}"
        if out.get("retracted"):
            text += f"; demonstration {', '.join(map(str, out['retracted']))} retracted"
        elif out.get("note"):
            text += f"; {out['note']}"
        console.print(Text(text, style="green"))
    elif name == "/tools":
        if not agent.tools:
            console.print("no tools: install a skill pack first")
        for t in agent.tools:
            params = ", ".join(t.schema.get("parameters", {}).get("properties", {}))
            note = "" if t.runnable else "  (no implementation here)"
            console.print(Text(f"{t.name}({params}): {t.schema.get('description', '')}{note}"))
    elif name == "/model":
        runtime = agent.llm.runtime
        serving, wanted = runtime.version, runtime.wanted()
        text = f"serving {serving}"
        if wanted != serving:
            text += f"; {wanted} is champion now and serves from the next question"
        console.print(Text(text))
    elif name == "/help":
        console.print(Text(HELP))
    else:
        raise ValueError(f"unknown command {name}; /help lists them")
