"""The SDFT step on the tiny model: exact positions and masks, the teachers, the EMA update,
and that a few steps move the student toward the demonstration."""

import copy
from functools import partial

import pytest
import torch

from agent.decode import decode
from agent.prompt import PromptFormat
from learner import teacher_templates
from learner.batch import completion_hidden, pack, prefix_groups
from learner.config import LearnConfig
from learner.divergence import token_divergence
from learner.examples import encode_example, examples_from_demonstrations
from learner.lora import (
    STUDENT,
    TEACHER,
    adapter_pairs,
    attach_lora,
    ema_update,
    merged_adapter,
    teacher_context,
)
from learner.sdft import SDFTObjective
from learner.sft import SFTObjective
from learner.train import micro_step, train

sample = partial(decode, temperature=1.0)  # the rollouts' setting; greedy where a test says 0

CALL = {"name": "convert_units", "arguments": {"value": 5, "unit": "km"}}
DEMOS = [
    {"id": 1, "skill": "u", "messages": [{"role": "user", "content": "Convert 5 miles to km."}],
     "tool_calls": [CALL], "content": None},
    {"id": 2, "skill": "u", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Convert 3 km"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": '{"result": 42}'}], "tool_calls": None, "content": "The answer is 42."},
]


TOOL = {"name": "convert_units", "description": "Convert a value between units",
        "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                       "required": ["value", "unit"]}}


def _setup(tok, model, tools=None, **cfg_kw):
    fmt = PromptFormat(tok)
    cfg = LearnConfig(**{"max_new_tokens": 10, **cfg_kw})
    examples = examples_from_demonstrations(DEMOS, fmt, {"u": tools} if tools else None)
    enc = [encode_example(e, fmt, cfg.teacher_template, cfg.force_tool_prefix) for e in examples]
    pm = attach_lora(model, cfg)
    obj = (SDFTObjective if cfg.method == "sdft" else SFTObjective)(pm, cfg, {fmt.end_of_turn_id}, tok.pad_token_id)
    return fmt, cfg, enc, pm, obj


def _randomise_student(pm, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if f".{STUDENT}." in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def _fixed_rollouts(obj, completions):
    obj.rollouts = lambda batch, generator, prefixes=None: (completions, [False] * len(completions))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("tools", [None, [TOOL]], ids=["no-shared-prefix", "shared-prefix"])
def test_loss_is_the_mean_over_exactly_the_trained_positions(tiny_model, tiny_tokenizer, tools):
    """Against an independent computation on each unpadded sequence: the divergence at every
    completion index ≥ 3 (the mask), between the teacher reading (teacher prompt + completion)
    and the student reading (student prompt + completion); mean per sequence, then batch.
    Prompt positions, padding and the first 3 completion tokens take no part. With tools, the
    prompts share their long system turn, which the batch runs once (learner.batch)."""
    fmt, cfg, enc, pm, obj = _setup(tiny_tokenizer, tiny_model, tools, teacher="base")
    shared = pack([e.prompt_ids for e in enc], [[1], [1]], 0).prefix_ids
    assert (len(shared) > 100) == bool(tools)
    _randomise_student(pm, 0.3)
    completions = [[40, 41, 42, 43, 44, 45, fmt.end_of_turn_id], [50, 51, 52, 53, fmt.end_of_turn_id]]
    _fixed_rollouts(obj, completions)
    got = micro_step(obj, pm, pm, enc, 2, cfg, tiny_tokenizer.pad_token_id)

    per_seq = []
    for e, c in zip(enc, completions, strict=True):
        s = _logits(pm, e.prompt_ids + c)[len(e.prompt_ids) - 1:-1]
        with pm.disable_adapter():
            t = _logits(pm, e.teacher_prompt_ids + c)[len(e.teacher_prompt_ids) - 1:-1]
        per_seq.append(token_divergence(s[3:], t[3:]).mean())
    assert got["loss"] == pytest.approx(float(sum(per_seq) / 2), abs=1e-5)
    assert got["trained_tokens"] == (7 - 3) + (5 - 3)


def test_padding_tokens_do_not_change_the_loss(tiny_model, tiny_tokenizer):
    fmt, cfg, enc, pm, obj = _setup(tiny_tokenizer, tiny_model, teacher="base")
    _randomise_student(pm, 0.3)
    _fixed_rollouts(obj, [[40, 41, 42, 43, 44, 45, 46], [50, 51, 52, 53]])  # right padding in row 1
    losses, grads = [], []
    for pad in (tiny_tokenizer.pad_token_id, 7, 300):
        pm.zero_grad(set_to_none=True)
        obj.pad_id = pad
        losses.append(micro_step(obj, pm, pm, enc, 2, cfg, pad)["loss"])
        grads.append(torch.cat([p.grad.flatten() for _, p in pm.named_parameters() if p.grad is not None]))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6) and losses[0] == pytest.approx(losses[2], abs=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and torch.allclose(grads[0], grads[2], atol=1e-6)


def test_divergence_is_zero_when_teacher_sees_what_student_sees(tiny_model, tiny_tokenizer, monkeypatch):
    """Teacher prompt = student prompt and teacher weights = student weights → loss 0."""
    monkeypatch.setitem(teacher_templates.TEMPLATES, "same", lambda ex, demo: ex.messages)
    fmt, cfg, enc, pm, obj = _setup(tiny_tokenizer, tiny_model, teacher="ema", teacher_template="same")
    _randomise_student(pm, 0.3)
    with torch.no_grad():
        for t, s in adapter_pairs(pm):
            t.copy_(s)  # EMA teacher = the (non-trivial) student
    assert all(e.teacher_prompt_ids == e.prompt_ids for e in enc)
    got = micro_step(obj, pm, pm, enc, 2, cfg, tiny_tokenizer.pad_token_id, torch.Generator().manual_seed(0))
    assert got["trained_tokens"] > 0
    assert abs(got["loss"]) < 1e-6 and abs(got["token_loss_sum"]) < 1e-5
    live = SDFTObjective(pm, LearnConfig(teacher="live", teacher_template="same", max_new_tokens=10),
                         {fmt.end_of_turn_id}, tiny_tokenizer.pad_token_id)
    got = micro_step(live, pm, pm, enc, 2, cfg, tiny_tokenizer.pad_token_id, torch.Generator().manual_seed(1))
    assert abs(got["loss"]) < 1e-6


def test_teachers_run_the_right_weights(tiny_model, tiny_tokenizer):
    base = copy.deepcopy(tiny_model)
    fmt, cfg, enc, pm, obj = _setup(tiny_tokenizer, tiny_model, teacher="ema")
    ids = enc[0].teacher_prompt_ids
    _randomise_student(pm, 0.3)  # student ≠ base; the EMA teacher is still the initial copy (B = 0)
    student = _logits(pm, ids)
    assert not torch.allclose(student, _logits(base, ids), atol=1e-3)
    with teacher_context(pm, "base"):
        assert torch.allclose(_logits(pm, ids), _logits(base, ids), atol=1e-6)
    with teacher_context(pm, "ema"):
        assert torch.allclose(_logits(pm, ids), _logits(base, ids), atol=1e-6)  # teacher B is 0
    with teacher_context(pm, "live"):
        assert torch.equal(_logits(pm, ids), student)
    assert torch.equal(_logits(pm, ids), student)  # the student is back
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all(f".{STUDENT}." in n for n in trainable)
    assert len(trainable) == len(adapter_pairs(pm))

    # the objective's teacher pass really is the base model for teacher="base"
    base_obj = SDFTObjective(pm, LearnConfig(teacher="base", max_new_tokens=6), {fmt.end_of_turn_id},
                             tiny_tokenizer.pad_token_id)
    targets = base_obj.targets(enc[:1], torch.Generator().manual_seed(0))
    packed = pack([ids], targets.completions, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        want = completion_hidden(base, packed)
    assert torch.allclose(targets.teacher_hidden, want, atol=1e-6)


def test_ema_update_matches_the_formula(tiny_model, tiny_tokenizer):
    fmt, cfg, enc, pm, obj = _setup(tiny_tokenizer, tiny_model, teacher="ema", ema_alpha=0.02)
    _randomise_student(pm, 1.0, seed=1)
    before = [(t.clone(), s.clone()) for t, s in adapter_pairs(pm)]
    ema_update(pm, 0.02)
    for (t0, s0), (t1, _) in zip(before, adapter_pairs(pm), strict=True):
        assert torch.allclose(t1, 0.02 * s0 + 0.98 * t0, atol=1e-7)


def test_training_updates_the_ema_teacher_after_every_step(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    snaps = []
    holder = {}

    def on_step(m):
        pairs = adapter_pairs(holder["model"])
        snaps.append(([t.detach().clone() for t, _ in pairs], [s.detach().clone() for _, s in pairs]))

    import learner.train as train_mod
    real_attach = train_mod.attach_lora

    def attach(model, cfg, **kw):
        holder["model"] = real_attach(model, cfg, **kw)
        return holder["model"]

    train_mod.attach_lora, saved = attach, train_mod.attach_lora
    try:
        cfg = LearnConfig(max_steps=2, batch_size=2, max_new_tokens=6, warmup_ratio=0.0, lr=1e-2, ema_alpha=0.05)
        train(tiny_model, tiny_tokenizer, examples_from_demonstrations(DEMOS, fmt), cfg,
              progress=False, on_step=on_step)
    finally:
        train_mod.attach_lora = saved
    (t1, _), (t2, s2) = snaps
    assert any(not torch.equal(a, b) for a, b in zip(t1, t2, strict=True))
    for a, b, s in zip(t1, t2, s2, strict=True):
        assert torch.allclose(b, 0.05 * s + 0.95 * a, atol=1e-7)
    assert all(p.grad is None and not p.requires_grad
               for n, p in holder["model"].named_parameters() if f".{TEACHER}." in n)


def test_forced_opening_and_teacher_rollouts(tiny_model, tiny_tokenizer):
    fmt, cfg, enc, pm, obj = _setup(tiny_tokenizer, tiny_model, force_tool_prefix=True,
                                    teacher_rollout_fraction=1.0, teacher="base", skip_first=2)
    targets = obj.targets(enc, torch.Generator().manual_seed(0))
    forced = enc[0].forced_ids
    assert forced and targets.completions[0][: len(forced)] == forced
    assert targets.starts == [len(forced) + 2, 2]  # masked tokens counted after the opening
    assert targets.stats["teacher_rollouts"] == 2
    # a teacher rollout is sampled by the teacher on its own prompt: reproduce it by hand
    # (the generator first draws the λ coin flips)
    g = torch.Generator().manual_seed(0)
    torch.rand(2, generator=g)
    with pm.disable_adapter():
        want = sample(pm, [e.teacher_prompt_ids for e in enc], forced=[e.forced_ids for e in enc],
                      max_new_tokens=10, stop_ids={fmt.end_of_turn_id}, pad_id=tiny_tokenizer.pad_token_id,
                      generator=g)
    assert targets.completions == want


def _teach_in_context(model, enc, tok, steps=40):
    """Give the tiny model what SDFT relies on: with the demonstration in context (the teacher's
    prompt) it answers with it; without (the student's prompt) it says something else."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    other = tok("The answer is 42.<|im_end|>", add_special_tokens=False)["input_ids"]
    p = pack([enc.teacher_prompt_ids, enc.prompt_ids], [enc.completion_ids, other], tok.pad_token_id)
    for _ in range(steps):
        logits = model.get_output_embeddings()(completion_hidden(model, p))
        loss = torch.nn.functional.cross_entropy(logits[p.completion_mask], p.completion_ids[p.completion_mask])
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def _demo_logp(model, enc, tok):
    p = pack([enc.prompt_ids], [enc.completion_ids], tok.pad_token_id)
    with torch.no_grad():
        lp = model.get_output_embeddings()(completion_hidden(model, p)).log_softmax(-1)
    return lp.gather(-1, p.completion_ids.unsqueeze(-1)).mean().item()


def test_sdft_raises_the_students_logprob_of_the_demonstration(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    ex = examples_from_demonstrations(DEMOS[:1], fmt)
    enc = encode_example(ex[0], fmt)
    _teach_in_context(tiny_model, enc, tiny_tokenizer)
    before = _demo_logp(tiny_model, enc, tiny_tokenizer)
    cfg = LearnConfig(max_steps=5, batch_size=4, lr=1e-2, warmup_ratio=0.0, max_new_tokens=16)  # paper defaults otherwise
    result = train(tiny_model, tiny_tokenizer, ex, cfg, progress=False)
    after = _demo_logp(result.model, enc, tiny_tokenizer)
    assert after > before + 0.1, (before, after)


def test_merged_adapter_is_the_same_function_and_restores_the_weights(tiny_model, tiny_tokenizer):
    fmt, cfg, enc, pm, obj = _setup(tiny_tokenizer, tiny_model, teacher="ema")
    _randomise_student(pm, 0.3)  # the EMA teacher is still the initial copy: teacher ≠ student
    ids = enc[0].prompt_ids
    before = {n: p.detach().clone() for n, p in pm.named_parameters()}
    student = _logits(pm, ids)
    with teacher_context(pm, "ema"):
        teacher = _logits(pm, ids)
    assert not torch.allclose(student, teacher, atol=1e-3)
    with merged_adapter(pm, STUDENT):
        assert torch.allclose(_logits(pm, ids), student, atol=1e-5)
    with merged_adapter(pm, TEACHER):
        assert torch.allclose(_logits(pm, ids), teacher, atol=1e-5)
    with pytest.raises(RuntimeError), merged_adapter(pm, STUDENT):
        raise RuntimeError("interrupted mid-rollout")
    for n, p in pm.named_parameters():  # bit for bit, adapters active again
        assert torch.equal(p, before[n]), n
    assert torch.equal(_logits(pm, ids), student)


def test_merged_rollouts_sample_what_the_adapter_model_samples(tiny_model, tiny_tokenizer):
    fmt, cfg, enc, pm, obj = _setup(tiny_tokenizer, tiny_model, temperature=0.0, max_new_tokens=8)
    _randomise_student(pm, 0.3)
    merged = obj.targets(enc, teacher=False).completions
    obj.cfg = LearnConfig(temperature=0.0, max_new_tokens=8, merged_rollouts=False)
    assert obj.targets(enc, teacher=False).completions == merged


def test_mixed_batch_trains_group_by_group_with_the_whole_batch_gradient(tiny_model, tiny_tokenizer):
    """Rows of two skills (different tools in the prompt) run as two prefix groups; the loss
    and the gradient equal one pass over the whole batch without prefix sharing (float64)."""
    fmt = PromptFormat(tiny_tokenizer)
    other = {**TOOL, "name": "days_between", "description": "Count the days between two dates " * 4}
    demos = [{**DEMOS[0], "id": i, "skill": "uv"[i % 2],
              "messages": [{"role": "user", "content": f"Convert {i + 2} miles to km."}]} for i in range(4)]
    examples = examples_from_demonstrations(demos, fmt, {"u": [TOOL], "v": [other]})
    enc = [encode_example(e, fmt) for e in examples]
    assert prefix_groups([e.prompt_ids for e in enc]) == [[0, 2], [1, 3]]
    completions = [[40, 41, 42, 43, fmt.end_of_turn_id], [50, 51, 52, 53], [60, 61, 62, 63, 64, 65], [70, 71, 72, 73]]

    def run(share: bool):
        model = copy.deepcopy(tiny_model).double()
        cfg = LearnConfig(max_new_tokens=10, share_prompt_prefix=share, skip_first=1)
        pm = attach_lora(model, cfg)
        _randomise_student(pm, 0.2)
        obj = SDFTObjective(pm, cfg, {fmt.end_of_turn_id}, tiny_tokenizer.pad_token_id)
        _fixed_rollouts(obj, completions)
        stats = micro_step(obj, pm, pm, enc, 4, cfg, tiny_tokenizer.pad_token_id)
        grads = torch.cat([p.grad.flatten() for n, p in pm.named_parameters() if p.grad is not None])
        return stats, grads

    grouped, g1 = run(True)
    whole, g2 = run(False)
    assert grouped["prefix_groups"] == 2 and whole["prefix_groups"] == 1
    assert grouped["trained_tokens"] == whole["trained_tokens"] == sum(len(c) - 1 for c in completions)
    assert abs(grouped["loss"] - whole["loss"]) < 1e-9 and grouped["loss"] > 0
    assert g1.abs().max() > 0 and (g1 - g2).abs().max() < 1e-6 * g1.abs().max()


def test_sft_warmup_steps_then_sdft(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(max_steps=3, batch_size=2, max_new_tokens=6, sft_warmup_steps=2)
    result = train(tiny_model, tiny_tokenizer, examples_from_demonstrations(DEMOS, fmt), cfg, progress=False)
    phases = ["cross_entropy" in h and "divergence" not in h for h in result.history]
    assert phases == [True, True, False]
    assert "divergence_last" in result.summary
    with pytest.raises(ValueError, match="sft_warmup_steps"):
        LearnConfig(sft_warmup_steps=-1)
