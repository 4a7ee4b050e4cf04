"""Retention self-distillation on the tiny model: the KL to the champion (the adapter switched
off) is exactly zero before the first step, its gradient matches a float64 reference, self-replay
trains on the champion's own greedy answers, and every lever is reachable with --set."""

import pytest
import torch

from agent.decode import decode
from agent.prompt import PromptFormat
from learner.config import LearnConfig, parse_settings
from learner.examples import examples_from_demonstrations
from learner.lora import STUDENT, attach_lora
from learner.retention import (
    RetentionPrompt,
    build_pool,
    champion_answers,
    encode_pool,
    kl_config,
    retention_batch,
    retention_objective,
)
from learner.train import micro_step, train
from skills.retention import EVERYDAY, everyday_messages

CALL = {"name": "convert_units", "arguments": {"value": 5, "unit": "km"}}
TOOL = {"name": "convert_units", "description": "Convert a value between units",
        "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                       "required": ["value", "unit"]}}
DEMOS = [{"id": i, "skill": "u", "messages": [{"role": "user", "content": f"Convert {i} miles to km."}],
          "tool_calls": [CALL], "content": None} for i in range(1, 5)]


def _pool(n=4, tools_share=0.5):
    cfg = LearnConfig(retention="kl", retention_prompts=n, retention_tools_share=tools_share)
    return build_pool(cfg, everyday_messages(), [[TOOL]], [])


def _randomise(pm, scale=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if f".{STUDENT}." in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


def test_pool_mixes_plain_tool_offering_and_earlier_demonstration_prompts():
    earlier = [RetentionPrompt([{"role": "user", "content": f"old {i}"}], [TOOL], "demo:old") for i in range(10)]
    cfg = LearnConfig(retention_prompts=12, retention_demo_share=0.25, retention_tools_share=0.5)
    pool = build_pool(cfg, everyday_messages(), [[TOOL], []], earlier)
    kinds = [p.source for p in pool]
    assert len(pool) == 12
    assert kinds.count("demo:old") == 3 and kinds.count("everyday+tools") == 4 and kinds.count("everyday") == 5  # round(4.5) = 4
    assert all(p.tools == [TOOL] for p in pool if p.source == "everyday+tools")
    assert all(p.tools is None for p in pool if p.source == "everyday")
    assert pool == build_pool(cfg, everyday_messages(), [[TOOL], []], earlier)  # seeded
    assert len(set(EVERYDAY)) == len(EVERYDAY)


def test_retention_batches_cycle_through_the_pool():
    cfg = LearnConfig(retention_batch=3)
    seen = [i for step in range(4) for i in retention_batch(step, 6, cfg)]
    assert sorted(seen[:6]) == list(range(6)) and seen[6:] == seen[:6]


def test_kl_to_the_champion_is_exactly_zero_before_the_first_step(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(method="sft", retention="kl", retention_max_new_tokens=8)
    pm = attach_lora(tiny_model, cfg)
    stop = {fmt.end_of_turn_id}
    objective = retention_objective(pm, cfg, stop, tiny_tokenizer.pad_token_id)
    batch = encode_pool(_pool(4), fmt)
    got = micro_step(objective, pm, pm, batch, len(batch), cfg, tiny_tokenizer.pad_token_id,
                     torch.Generator().manual_seed(0))
    assert got["trained_tokens"] > 0
    assert got["loss"] == 0.0 and got["token_loss_sum"] == 0.0
    grads = [p.grad for n, p in pm.named_parameters() if p.requires_grad]
    # its gradient, p_student − p_champion at every position, is zero up to float rounding
    assert max(g.abs().max().item() for g in grads if g is not None) < 1e-6
    # through the whole training loop too: the first step's retention KL is exactly 0
    examples = examples_from_demonstrations(DEMOS, fmt, {"u": [TOOL]})
    from tiny import build_tiny_model

    run = train(build_tiny_model(tiny_tokenizer), tiny_tokenizer, examples,
                LearnConfig(method="sft", retention="kl", retention_max_new_tokens=8, max_steps=2, batch_size=2,
                            retention_batch=2, lr=1e-2, warmup_ratio=0.0),
                retention=_pool(4), progress=False)
    assert run.history[0]["retention_kl"] == 0.0
    assert run.history[1]["retention_kl"] > 0.0  # the first SFT step moved the student
    assert run.summary["retention"] == {"kind": "kl", "beta": 1.0, "pool": 4,
                                        "sources": {"everyday": 2, "everyday+tools": 2}}


@pytest.mark.parametrize(("beta", "share"), [(1.0, False), (0.25, False), (1.0, True)])
def test_retention_gradient_matches_a_float64_reference(tiny_model, tiny_tokenizer, beta, share):
    model = tiny_model.double()
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(method="sft", retention="kl", retention_beta=beta, retention_max_new_tokens=7, chunk_size=3,
                      share_prompt_prefix=share)
    pm = attach_lora(model, cfg)
    _randomise(pm)
    pad = tiny_tokenizer.pad_token_id
    objective = retention_objective(pm, cfg, {fmt.end_of_turn_id}, pad)
    batch = encode_pool(_pool(4, tools_share=1.0), fmt)  # all with tools: a long shared prefix
    gen = torch.Generator().manual_seed(3)
    got = micro_step(objective, pm, pm, batch, len(batch), cfg, pad, gen, scale=beta)
    params = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
    ours = {n: p.grad.clone() for n, p in params}
    assert all(torch.count_nonzero(g) > 0 for g in ours.values())

    # the same completions (replayed), the loss written out: mean over each row's sampled
    # tokens of Σ_v p_champion (log p_champion − log p_student), mean over rows, times β
    completions = decode(pm, [e.prompt_ids for e in batch], max_new_tokens=7, stop_ids={fmt.end_of_turn_id},
                         pad_id=pad, temperature=1.0, generator=torch.Generator().manual_seed(3),
                         min_shared_prefix=cfg.min_shared_prefix)
    for p in pm.parameters():
        p.grad = None
    pm.train()
    total = torch.zeros((), dtype=torch.float64)
    for e, c in zip(batch, completions, strict=True):
        ids = torch.tensor([e.prompt_ids + c])
        P = len(e.prompt_ids)
        student = torch.log_softmax(pm(input_ids=ids).logits[0, P - 1:-1], -1)
        with torch.no_grad(), pm.disable_adapter():
            champ = torch.log_softmax(pm(input_ids=ids).logits[0, P - 1:-1], -1)
        total = total + (champ.exp() * (champ - student)).sum(-1).mean()
    (beta * total / len(batch)).backward()
    assert got["loss"] == pytest.approx(beta * total.item() / len(batch), rel=1e-6)  # summed in float32
    # rows run whole: equal to float64 rounding. With the tool-schema prefix run once and shared
    # (265 tokens here) the forward is still bit-equal but the gradient through the shared keys
    # and values differs at ~1e-8 of its scale, still far below any formula error.
    tol = {"rtol": 1e-6, "atol": 1e-9} if share else {"rtol": 1e-10, "atol": 1e-14}
    for n, p in params:
        torch.testing.assert_close(ours[n], p.grad, **tol)


def test_kl_config_is_sdft_with_the_champion_as_teacher_and_nothing_masked():
    k = kl_config(LearnConfig(method="sft", retention="kl", skip_first=3, teacher="ema", retention_max_new_tokens=9))
    assert (k.method, k.teacher, k.divergence, k.skip_first, k.max_new_tokens) == ("sdft", "base", "forward", 0, 9)


def test_self_replay_trains_on_the_champions_greedy_answers(tiny_model, tiny_tokenizer):
    fmt = PromptFormat(tiny_tokenizer)
    cfg = LearnConfig(method="sft", retention="self_replay", retention_max_new_tokens=6, batch_size=2)
    pool = encode_pool(_pool(3), fmt)
    stop = {fmt.end_of_turn_id}
    champion_answers(tiny_model, pool, cfg, stop, tiny_tokenizer.pad_token_id)
    for e in pool:
        alone = decode(tiny_model, [e.prompt_ids], max_new_tokens=6, stop_ids=stop, temperature=0.0)[0]
        assert e.completion_ids == alone and len(alone) >= 1
    # the first step's retention loss is the champion's own cross-entropy on those answers
    examples = examples_from_demonstrations(DEMOS, fmt, {"u": [TOOL]})
    from tiny import build_tiny_model

    fresh = build_tiny_model(tiny_tokenizer)
    run = train(fresh, tiny_tokenizer, examples,
                LearnConfig(method="sft", retention="self_replay", retention_max_new_tokens=6, max_steps=1,
                            batch_size=2, retention_batch=3, retention_prompts=3),
                retention=_pool(3), progress=False)
    assert run.history[0]["retention_ce"] > 0 and "retention_kl" not in run.history[0]


def test_every_lever_is_reachable_with_set():
    pairs = ["method=auto", "retention=kl", "retention_beta=0.5", "retention_batch=2", "retention_prompts=24",
             "retention_max_new_tokens=32", "holdout_fraction=0.2", "patience=3", "eval_every=1",
             "competence_threshold=0.4", "competence_n=4", "restore_best=false", "teacher=base", "skip_first=0"]
    cfg = LearnConfig(**parse_settings(pairs))
    assert (cfg.method, cfg.retention, cfg.retention_beta, cfg.holdout_fraction, cfg.restore_best) == \
        ("auto", "kl", 0.5, 0.2, False)
    for bad in ("retention=sometimes", "retention_beta=-1", "holdout_fraction=1.0", "method=maybe"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            LearnConfig(**parse_settings([bad]))


def test_a_learning_run_records_heldout_losses_retention_sources_and_why_this_method(tiny_home):
    from learner.learn import learn_candidate
    from memory.store import Memory
    from skills.install import install_pack
    from skills.pack import SkillPack, bundled_pack

    def pack(name):
        p = SkillPack.load(bundled_pack(name))
        p.demonstrations, p.eval = p.demonstrations[:5], p.eval[:2]
        return p

    cfg = LearnConfig(method="sft", retention="kl", retention_prompts=6, retention_batch=2, retention_demo_share=0.5,
                      retention_max_new_tokens=4, holdout_fraction=0.2, max_steps=2, batch_size=2, eval_every=1)
    with Memory(tiny_home) as memory:
        install_pack(memory, pack("unit_convert"))
    first = learn_candidate(tiny_home, cfg, skill="unit_convert", progress=False)
    with Memory(tiny_home) as memory:
        install_pack(memory, pack("date_math"))
    second = learn_candidate(tiny_home, cfg, skill="date_math", version=first.candidate, progress=False)
    with Memory(tiny_home) as memory:
        m = memory.run(second.run_id)["metrics"]
    assert m["heldout_n"] == 1 and m["heldout_loss_final"] > 0 and m["train_loss_final"] > 0
    assert m["why_method"] == {"date_math": "sft: set by the configuration (method=sft)"}
    # the second night rehearses the first skill's demonstrations, with the installed tools offered
    assert m["retention"]["sources"].get("demo", 0) == 3 and m["retention"]["pool"] == 6
    assert len(second.demonstrations) == 5  # the held-out one is used by the run too (to stop on)
