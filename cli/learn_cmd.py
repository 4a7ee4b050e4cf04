"""`sdft-agent learn`: train the demonstrations not yet learned into a candidate version (a thin
layer over learner.learn.learn_candidate). Registered by cli/main.py."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.common import EXIT_BUSY, HomeOption, console, err_console, friendly_errors
from learner.config import parse_settings, shipped_config
from memory.demonstrations import ATTEMPTS

_C = shipped_config()  # defaults: the config the product ships (learner.config.SHIPPED)

# the settings `learn` has its own option for; `--set` refuses them
OWN_OPTIONS = ("method", "max_steps", "epochs", "lr", "teacher", "divergence", "batch_size", "grad_accum",
               "max_new_tokens", "seed", "replay")


@friendly_errors
def learn(
    method: Annotated[str, typer.Option(help="sft (the shipped default, chosen by measurement: see the README) or sdft (self-distillation).")] = _C.method,
    skill: Annotated[str | None, typer.Option(help="Learn only this skill's demonstrations (default: all new ones).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the demonstrations.")] = _C.epochs,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW, cosine schedule with warmup).")] = _C.lr,
    teacher: Annotated[str, typer.Option(help="SDFT teacher: ema (EMA of the student), base (adapter off) or live.")] = _C.teacher,
    divergence: Annotated[str, typer.Option(help="SDFT loss: forward KL(teacher‖student), reverse, or jsd.")] = _C.divergence,
    batch_size: Annotated[int, typer.Option(help="Prompts per micro-batch.")] = _C.batch_size,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = _C.grad_accum,
    max_new_tokens: Annotated[int, typer.Option(help="Longest SDFT rollout, in tokens.")] = _C.max_new_tokens,
    seed: Annotated[int, typer.Option(help="Random seed (LoRA init, order, sampling).")] = _C.seed,
    model: Annotated[str | None, typer.Option(help="Version to start from (default: the champion).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be learned and the plan; train and write nothing.")] = False,
    now: Annotated[bool, typer.Option("--now", help="Run one whole learning run: lease, train in a child process, merge, retention gate, promote or block.")] = False,
    min_new: Annotated[int, typer.Option(help="With --now: skip (recorded) when fewer new demonstrations than this.")] = 1,
    replay: Annotated[int, typer.Option(help="Also rehearse this many demonstrations earlier runs that landed learned (promoted, or made outside the gate; a seeded sample, any skill; never a blocked run's).")] = _C.replay,
    attempts: Annotated[int, typer.Option(min=1, help="A demonstration is selected until this many runs that did not land (blocked by the gate, failed) have tried it.")] = ATTEMPTS,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="FIELD=VALUE",
        help="Any other learning setting (learner/config.py), e.g. --set teacher_template=previous_turn "
             "--set sft_warmup_steps=3 --set gradient_checkpointing=true. Repeatable.")] = None,
    home: HomeOption = None,
):
    """Learn the demonstrations no run has used yet into a new candidate model version.

    The candidate is left unpromoted: check it, then `sdft-agent models use vNNNN` makes it the
    champion. The run (config, per-step metrics, candidate) is recorded in memory.db and the
    demonstrations are marked as used by it. Demonstrations of a run the gate blocked stay
    selectable until --attempts such runs have tried them (the next night tries them again).

    With --now: the whole run the nightly scheduler does (one at a time across processes, the
    retention gate decides promotion, a report is written). Exit code 75 when another run holds
    the lease (nothing ran), 1 when the run failed.

    Example: sdft-agent learn --method sdft --skill unit_convert --max-steps 20
    """
    from learner.learn import learn_candidate

    if now and dry_run:
        raise ValueError("--now and --dry-run exclude each other")
    cfg = shipped_config(method=method, max_steps=max_steps, epochs=epochs, lr=lr, teacher=teacher,
                      divergence=divergence, batch_size=batch_size, grad_accum=grad_accum,
                      max_new_tokens=max_new_tokens, seed=seed, replay=replay, **parse_settings(set_ or [], OWN_OPTIONS))
    if now:
        from learner.run import learn_now

        result = learn_now(home, cfg, skill=skill, min_new=min_new, attempts=attempts, log=console.print)
        if result.status == "busy":  # a cron job must be able to tell that nothing ran
            err_console.print(f"[bold yellow]busy:[/] {result.reasons[0]}; nothing was learned")
            raise typer.Exit(EXIT_BUSY)
        console.print(f"[bold]{result.status}[/]" + (f": run {result.run_id}" if result.run_id else "")
                      + (f", candidate {result.candidate}" if result.candidate else "")
                      + (f", report {result.report}" if result.report else ""))
        for reason in result.reasons:
            console.print(f"  - {reason}")
        if result.status == "failed":
            raise typer.Exit(1)
        return
    out = learn_candidate(home, cfg, skill=skill, version=model, dry_run=dry_run, attempts=attempts)
    what = f"skill {skill!r}" if skill else "any skill"
    if not out.demonstrations:
        console.print(f"nothing to learn: no new demonstrations of {what} (parent {out.parent})")
        return
    plan = out.plan
    console.print(
        f"{cfg.method}: {len(out.demonstrations)} demonstration(s) of {what}, from {out.parent}; "
        f"{plan.total_steps} step(s) of {plan.per_step} prompt(s)"
    )
    if dry_run:
        console.print("dry run: nothing trained, nothing written")
        return
    s = out.summary
    console.print(
        f"run {out.run_id}: loss {s.get('loss_first', 0):.4f} → {s.get('loss_last', 0):.4f}, "
        f"{s.get('tokens_per_s', 0):.0f} completion tokens/s, {s.get('seconds', 0):.0f} s"
    )
    console.print(
        f"candidate [bold]{out.candidate}[/] written (not promoted); "
        f"`sdft-agent models use {out.candidate}` makes it the champion"
    )

