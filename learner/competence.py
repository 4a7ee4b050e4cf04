"""Can this skill's demonstration-conditioned teacher teach? Measured before training, per skill,
to choose the new-skill loss (LearnConfig.method="auto"): SDFT where it can, SFT where not.

SDFT trains the student toward what the model writes with a demonstration in view. That is
worth something only if the model, so prompted, writes the right answer itself. So: for a few of
the skill's tool-call demonstrations, put the demonstration in the teacher's context (the run's
teacher template), sample one answer at the rollout temperature, and let the checker judge its
calls against the demonstrated ones. The share judged right is the teacher's competence; "can
teach" when it reaches `competence_threshold`. The student (no demonstration) is measured the
same way, for the record. At 135M the teacher mostly cannot (wave 1: it rarely even opens a
call), so SFT is chosen; a model with real in-context learning switches SDFT on by itself.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import torch

from agent.decode import decode
from agent.prompt import PromptFormat
from learner.examples import Example, encode_example
from skills.checker import check_calls


@dataclass
class Competence:
    skill: str | None
    n: int  # demonstrations tried
    teacher_correct: int
    student_correct: int
    threshold: float
    template: str

    @property
    def teacher_rate(self) -> float:
        return self.teacher_correct / self.n if self.n else 0.0

    @property
    def student_rate(self) -> float:
        return self.student_correct / self.n if self.n else 0.0

    @property
    def can_teach(self) -> bool:
        return self.n > 0 and self.teacher_rate >= self.threshold

    @property
    def method(self) -> str:
        return "sdft" if self.can_teach else "sft"

    @property
    def why(self) -> str:
        if not self.n:
            return "sft: no tool-call demonstration to check the teacher on"
        verdict = "at or above" if self.can_teach else "below"
        return (f"{self.method}: with a demonstration in context ({self.template} template) the teacher wrote "
                f"checker-verified calls on {self.teacher_correct}/{self.n} samples ({100 * self.teacher_rate:.0f}%), "
                f"{verdict} the {100 * self.threshold:.0f}% threshold; the student alone {self.student_correct}/{self.n}")

    def to_dict(self) -> dict:
        return {**asdict(self), "teacher_rate": self.teacher_rate, "student_rate": self.student_rate,
                "can_teach": self.can_teach, "method": self.method, "why": self.why}


def expected_from_call(call: dict) -> dict:
    """A literal call as the checker's expected form: every value the one acceptable value."""
    def wrap(v):
        return {k: [wrap(x)] for k, x in v.items()} if isinstance(v, dict) else v

    return {"name": call["name"], "arguments": {k: [wrap(v)] for k, v in call.get("arguments", {}).items()}}


def _correct(fmt: PromptFormat, ids: list[int], ex: Example) -> bool:
    parsed = fmt.parse(fmt.tokenizer.decode(ids, skip_special_tokens=False), ex.tools)
    if parsed.invalid or not parsed.calls:
        return False
    try:
        return check_calls(parsed.calls, [expected_from_call(c) for c in ex.message["tool_calls"]],
                           ex.tools or []).correct
    except ValueError:  # the demonstration names a tool not offered: nothing to verify against
        return False


@torch.no_grad()
def measure(model, tokenizer, examples: list[Example], cfg, skill: str | None = None,
            generator: torch.Generator | None = None) -> Competence:
    """Teacher and student, one T=`cfg.temperature` sample each, on up to `cfg.competence_n`
    of `examples`' tool-call demonstrations (a seeded choice)."""
    fmt = PromptFormat(tokenizer)
    calls = [e for e in examples if e.is_tool_call and e.message.get("tool_calls")]
    tried = random.Random(cfg.seed * 13 + 5).sample(calls, min(cfg.competence_n, len(calls)))
    result = Competence(skill, len(tried), 0, 0, cfg.competence_threshold, cfg.teacher_template)
    if not tried:
        return result
    encoded = [encode_example(e, fmt, cfg.teacher_template) for e in tried]
    stop = {fmt.end_of_turn_id} | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fmt.end_of_turn_id
    was = model.training
    model.eval()
    try:
        for who in ("teacher", "student"):
            prompts = [e.teacher_prompt_ids if who == "teacher" else e.prompt_ids for e in encoded]
            got = decode(model, prompts, max_new_tokens=cfg.competence_max_new_tokens, stop_ids=stop,
                         pad_id=pad, temperature=cfg.temperature, top_p=cfg.top_p, generator=generator,
                         min_shared_prefix=cfg.min_shared_prefix)
            right = sum(_correct(fmt, ids, e) for ids, e in zip(got, tried, strict=True))
            if who == "teacher":
                result.teacher_correct = right
            else:
                result.student_correct = right
    finally:
        model.train(was)
    return result


def choose_methods(model, tokenizer, examples: list[Example], cfg,
                   generator: torch.Generator | None = None) -> tuple[list[str], dict[str, dict]]:
    """Per example, the new-skill loss, and per skill the measurement that chose it.
    method sdft / sft: that for every example, with no measurement ("set by the configuration")."""
    skills = list(dict.fromkeys(e.skill for e in examples))
    if cfg.method != "auto":
        why = {str(s): {"method": cfg.method, "why": f"{cfg.method}: set by the configuration (method={cfg.method})"}
               for s in skills}
        return [cfg.method] * len(examples), why
    chosen, record = {}, {}
    for s in skills:
        c = measure(model, tokenizer, [e for e in examples if e.skill == s], cfg, s, generator)
        chosen[s], record[str(s)] = c.method, c.to_dict()
    return [chosen[e.skill] for e in examples], record
