"""`sdft-agent demo`: the whole learn-a-tool loop on the default model, seeded, in minutes.

    add a skill → the agent solves tasks with recalled demonstrations, successes logged →
    learning run (the shipped method) → retention gate (the new skill with nothing in context,
    every earlier ability, champion against candidate) → promote or block → the table, the report
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from cli.common import HomeOption, console, friendly_errors


@friendly_errors
def demo(
    skill: Annotated[str, typer.Option(help="Bundled skill to teach (unit_convert, date_math, catalog).")] = "unit_convert",
    eval_n: Annotated[int, typer.Option(help="Held-out cases to measure on (fewer is faster).")] = 16,
    tasks: Annotated[int, typer.Option(help="Questions the agent answers with recall before learning.")] = 4,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps of the learning run.")] = 12,
    method: Annotated[str, typer.Option(help="Learning method: sft (the shipped default, see the README's experiment) or sdft.")] = "",
    probe_limit: Annotated[int, typer.Option(help="Items per multiple-choice probe set in the gate.")] = 12,
    preset: Annotated[str, typer.Option(help="Base model preset.")] = "smollm2-135m",
    seed: Annotated[int, typer.Option(help="Seed for sampling, task choice and training.")] = 0,
    home: HomeOption = None,
):
    """Run the learn-a-tool loop end to end and print a before/after table (about 9½ minutes on
    a 2-core CPU). Use a fresh --home to start from the base model.

    Example: sdft-agent demo --home /tmp/sdft-demo
    """
    import random

    import torch

    from cli.agent_cmd import build_agent
    from learner.config import SHIPPED, shipped_config
    from learner.gate import GateConfig
    from learner.run import learn_now
    from memory.models import ModelStore
    from memory.store import Memory
    from skills.checker import check_calls
    from skills.install import install_pack
    from skills.pack import SkillPack, bundled_pack

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    step = lambda msg: console.print(f"[bold cyan]▶[/] {msg} [dim]({time.perf_counter() - t0:.0f} s)[/]")  # noqa: E731
    store = ModelStore(home)
    step(f"1. base model {preset}")
    base, _ = store.pull(preset)
    memory = Memory(store.home)
    pack = SkillPack.load(bundled_pack(skill))
    rng = random.Random(seed)
    pack.eval = rng.sample(pack.eval, min(eval_n, len(pack.eval)))
    step(f"2. skill {skill}: {len(pack.tools)} tool(s), {len(pack.demonstrations)} demonstrations, {len(pack.eval)} held-out cases")
    install_pack(memory, pack)
    tools = memory.tools_for(skill)

    champion = store.champion().version
    step(f"3. the agent answers {tasks} requests with 3 recalled demonstrations; successes are logged")
    agent = build_agent(memory, home=store.home, skill=skill, recall=3, model=None, max_new_tokens=96, max_turns=2)
    solved = 0
    for demo_case in rng.sample(pack.demonstrations, min(tasks, len(pack.demonstrations))):
        question = demo_case["messages"][-1]["content"]
        ep = agent.run(question)
        expected = [{"name": c["name"], "arguments": {k: [v] for k, v in c["arguments"].items()}} for c in demo_case["tool_calls"]]
        ok = bool(ep.tool_calls) and check_calls(ep.tool_calls[: len(expected)], expected, tools).correct
        agent.mark(ok, "demo: checked against the known answer", ep.id)
        solved += ok
        console.print(f"   {'[green]✓[/]' if ok else '[red]✗[/]'} {question!r}")
    console.print(f"   {solved}/{tasks} solved with recall")

    method = method or SHIPPED["method"]
    cfg = shipped_config(method=method, max_steps=max_steps, max_new_tokens=48, seed=seed)
    keep = (f" + retention {cfg.retention.upper()} to the {cfg.retention_teacher}" if cfg.retention != "none" else "") \
        + (f", {cfg.replay} earlier demonstrations rehearsed" if cfg.replay else "")
    step(f"4. learning run: {method.upper()}{keep}, {max_steps} steps, then the retention gate")
    # Every default suite, at demo sizes (the nightly gate uses learner.gate.DEFAULT_LIMITS): the
    # first night evaluates both models uncached, and the demo must stay within minutes.
    small = {"trivia_qa": 12, "nq_open": 12, "ifeval": 12, "tool_restraint": 21, "open_answers": 16}
    gate = GateConfig(probe_limit=probe_limit, probe_limits={**{k: probe_limit for k in ("arc_easy", "piqa", "copa")}, **small})
    result = learn_now(store.home, cfg, skill=skill, gate_config=gate,
                       log=lambda m: console.print(f"   {m}"))
    if result.status not in ("promoted", "blocked"):
        raise RuntimeError(f"the learning run ended {result.status}: {'; '.join(result.reasons)}")
    new = result.candidate
    summary = memory.gate_reports(result.run_id)[-1]["summary"]
    # the gate measured the new skill on its held-out cases with nothing in context, both models
    before = summary["accuracies"]["champion"][skill]
    after = summary["accuracies"]["candidate"][skill]
    table = Table(title=f"{skill}: before → after ({result.status})")
    table.add_column("suite")
    table.add_column(champion, justify="right")
    table.add_column(new, justify="right")
    table.add_row(f"{skill} (no recall, {len(pack.eval)} cases)", f"{100 * before:.0f}%", f"{100 * after:.0f}%")
    for s in summary.get("suites", []):
        if s.get("role") == "probe":
            fmt = (lambda v: f"{v:.3f}") if s.get("kind") in ("drift", "drift_champion") else (lambda v: f"{100 * v:.0f}%")
            table.add_row(s["name"], fmt(s["champion"]), fmt(s["candidate"]))
    console.print(table)
    console.print(f"gate decision: [bold]{result.status}[/]")
    for reason in result.reasons:
        console.print(f"  - {reason}")
    console.print(f"report: {result.report}")
    console.print(f"serving now: {store.champion().version}   total {time.perf_counter() - t0:.0f} s")
