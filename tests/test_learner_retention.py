"""Retention self-distillation on the tiny model: the KL to the champion (the adapter switched
off) is exactly zero before the first step, its gradient matches a float64 reference, self-replay
trains on the champion's own greedy answers, and every lever is reachable with --set."""

import copy
from dataclasses import replace

import pytest
import torch

from agent.decode import decode
from agent.prompt import PromptFormat
from learner.batch import prefix_groups, rollout_groups
from learner.config import LearnConfig, parse_settings, shipped_config
from learner.examples import Example, examples_from_demonstrations
from learner.lora import attach_lora
from learner.retention import (
    RetentionPrompt,
    build_pool,
    champion_answers,
    encode_pool,
    kl_config,
    pool_from_memory,
    retention_batch,
    retention_objective,
)
from learner.train import micro_step, train
from skills.retention import EVERYDAY, everyday_messages
from tiny import randomise_adapter

CALL = {"name": "convert_units", "arguments": {"value": 5, "unit": "km"}}
TOOL = {"name": "convert_units", "description": "Convert a value between units",
        "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                       "required": ["value", "unit"]}}
DEMOS = [{"id": i, "skill": "u", "messages": [{"role": "user", "content": f"Convert {i} miles to km."}],
          "tool_calls": [CALL], "content": None} for i in range(1, 5)]


def _pool(n=4, tools_share=0.5):
    cfg = LearnConfig(retention="kl", retention_prompts=n, retention_tools_share=tools_share)
    return build_pool(cfg, everyday_messages(), [[TOOL]], [])


def _student(model, tokenizer, **settings):
    """The retention tests' student: `model` (float64) with a randomised adapter, the retention
    config (kl, chunk 3, `settings` on top), the prompt format and the pad id."""
    cfg = LearnConfig(method="sft", retention="kl", chunk_size=3, **settings)
    pm = attach_lora(model, cfg)
    randomise_adapter(pm)
    return pm, cfg, PromptFormat(tokenizer), tokenizer.pad_token_id


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
                                        "sources": {"everyday": 2, "everyday+tools": 2},
                                        "tool_sets": "served", "everyday_teacher": "champion"}


def _reference_kl(pm, batch, fmt, pad, cfg, max_new_tokens, origin=None, opening=1.0) -> torch.Tensor:
    """The same completions micro_step sampled (replayed from seed 3), the loss written out: the
    sum over rows of the mean over each row's sampled tokens of Σ_v p_teacher (log p_teacher −
    log p_student), the first token counted `opening` times; the teacher is the champion (adapter
    off), or `origin` for rows marked so. Clears the gradients first; the caller scales and calls
    backward."""
    completions = decode(pm, [e.prompt_ids for e in batch], max_new_tokens=max_new_tokens,
                         stop_ids={fmt.end_of_turn_id}, pad_id=pad, temperature=1.0,
                         generator=torch.Generator().manual_seed(3), min_shared_prefix=cfg.min_shared_prefix)
    for p in pm.parameters():
        p.grad = None
    pm.train()
    total = torch.zeros((), dtype=torch.float64)
    for e, c in zip(batch, completions, strict=True):
        ids = torch.tensor([e.prompt_ids + c])
        P = len(e.prompt_ids)
        student = torch.log_softmax(pm(input_ids=ids).logits[0, P - 1:-1], -1)
        with torch.no_grad():
            if origin is not None and e.teacher == "origin":
                teach = torch.log_softmax(origin(input_ids=ids).logits[0, P - 1:-1], -1)
            else:
                with pm.disable_adapter():
                    teach = torch.log_softmax(pm(input_ids=ids).logits[0, P - 1:-1], -1)
        per_token = (teach.exp() * (teach - student)).sum(-1)
        counts = torch.ones_like(per_token)
        counts[0] = opening
        total = total + (per_token * counts).sum() / counts.sum()
    return total


@pytest.mark.parametrize(("beta", "share", "opening"), [(1.0, False, 1.0), (0.25, False, 1.0), (1.0, True, 1.0),
                                                        (1.0, False, 6.0)])
def test_retention_gradient_matches_a_float64_reference(tiny_model, tiny_tokenizer, beta, share, opening):
    pm, cfg, fmt, pad = _student(tiny_model.double(), tiny_tokenizer, retention_beta=beta, retention_max_new_tokens=7,
                                 share_prompt_prefix=share, retention_opening_weight=opening)
    objective = retention_objective(pm, cfg, {fmt.end_of_turn_id}, pad)
    batch = encode_pool(_pool(4, tools_share=1.0), fmt)  # all with tools: a long shared prefix
    gen = torch.Generator().manual_seed(3)
    got = micro_step(objective, pm, pm, batch, len(batch), cfg, pad, gen, scale=beta,
                     opening=cfg.retention_opening_weight)
    params = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
    ours = {n: p.grad.clone() for n, p in params}
    assert all(torch.count_nonzero(g) > 0 for g in ours.values())

    total = _reference_kl(pm, batch, fmt, pad, cfg, 7, opening=opening)
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
    pairs = ["method=auto", "retention=kl", "retention_tool_sets=each", "retention_beta=0.5", "retention_batch=2", "retention_prompts=24",
             "retention_max_new_tokens=32", "holdout_fraction=0.2", "patience=3", "eval_every=1",
             "competence_threshold=0.4", "competence_n=4", "restore_best=false", "teacher=base", "skip_first=0",
             "retention_prefix_grad=false", "demo_tools=served", "replay=20"]
    cfg = LearnConfig(**parse_settings(pairs))
    assert cfg.retention_prefix_grad is False and cfg.demo_tools == "served" and cfg.replay == 20
    assert (cfg.method, cfg.retention, cfg.retention_beta, cfg.holdout_fraction, cfg.restore_best) == \
        ("auto", "kl", 0.5, 0.2, False)
    assert cfg.retention_tool_sets == "each"
    for bad in ("retention=sometimes", "retention_tool_sets=all", "retention_beta=-1", "holdout_fraction=1.0", "method=maybe",
                "retention_opening_weight=0.5"):
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


OTHER = {**TOOL, "name": "days_between", "description": "Count the days between two dates " * 4}


def test_retention_tool_sets_is_served_by_default_and_refuses_anything_else():
    assert LearnConfig().retention_tool_sets == "served" == shipped_config().retention_tool_sets
    assert LearnConfig(retention_tool_sets="each").retention_tool_sets == "each"
    for bad in ("all", "Served", ""):
        with pytest.raises(ValueError, match=r"^retention_tool_sets must be one of served, each$"):
            LearnConfig(retention_tool_sets=bad)


def _two_skills(mem):
    """date_math (the bundled tools) and units, whose second tool shares a name with date_math's
    first: served, date_math's schema wins (skills by name)."""
    from agent_support import DATE_TOOLS

    clash = {**DATE_TOOLS[0], "description": "A different tool of the same name."}
    mem.add_skill("units", "Units", [TOOL, clash])
    mem.add_skill("date_math", "Calendar arithmetic", DATE_TOOLS)
    old = [mem.add_demonstration("date_math", [{"role": "user", "content": f"Days until day {i}?"}],
                                 [{"name": "add_days", "arguments": {"date": "2024-01-01", "days": i}}])[0] for i in range(4)]
    old += [mem.add_demonstration("units", [{"role": "user", "content": f"Convert {i} miles."}], [CALL])[0]
            for i in range(2)]
    run = mem.start_run("sft", {}, "date_math")
    mem.mark_used(old, run)
    new = [mem.add_demonstration("units", [{"role": "user", "content": f"Convert {i} feet."}], [CALL])[0]
           for i in range(3)]
    learning = [Example([], None, {}, "", True, demo_id=i, skill="units") for i in new]
    return DATE_TOOLS + [TOOL], [TOOL, clash], DATE_TOOLS, learning


def test_served_offers_every_retention_prompt_the_agents_full_tool_list(home, tiny_tokenizer):
    from cli.agent_cmd import skill_tools
    from memory.store import Memory
    from skills.tools import implementation

    cfg = LearnConfig(retention="kl", retention_prompts=12, retention_demo_share=0.25, retention_tools_share=0.5)
    with Memory(home) as mem:
        served, units, dates, learning = _two_skills(mem)
        assert mem.served_tools() == served
        agent = skill_tools(mem, None)  # what `sdft-agent chat` offers: the same list, same order
        assert [t for t, _ in agent] == served
        assert [impl for _, impl in agent] == [implementation("date_math")[t["name"]] for t in dates] + [None]
        pool = pool_from_memory(mem, cfg, learning)
        each = pool_from_memory(mem, replace(cfg, retention_tool_sets="each"), learning)
    kinds = [p.source for p in pool]
    assert len(pool) == 12 and kinds.count("everyday+tools") == 4 and kinds.count("everyday") == 5
    assert sum(k.startswith("demo:") for k in kinds) == 3  # of the 6 used before; the 3 new ones never
    assert not any("feet" in p.messages[0]["content"] for p in pool)
    with_tools = [p for p in pool if p.source != "everyday"]
    assert len(with_tools) == 7 and all(p.tools == served for p in with_tools)
    assert all(p.tools is None for p in pool if p.source == "everyday")
    # one system prompt for all of them: one prefix group, its tool schemas computed once
    ids = [e.prompt_ids for e in encode_pool(with_tools, PromptFormat(tiny_tokenizer))]
    assert rollout_groups(ids) == [list(range(7))]

    # "each" draws the same prompts (seeded alike) but offers one skill's tools: everyday prompts
    # cycle the skill being learned, then the others; a demonstration its own skill's
    assert [(p.messages, p.source) for p in each] == [(p.messages, p.source) for p in pool]
    everyday_sets = [p.tools for p in each if p.source == "everyday+tools"]
    assert sorted(everyday_sets, key=len) == [units, units, dates, dates]
    assert all(p.tools == (dates if p.source == "demo:date_math" else units)
               for p in each if p.source.startswith("demo:"))
    assert all(p.tools is None for p in each if p.source == "everyday")


def test_a_mixed_retention_step_samples_and_trains_per_prefix_group_with_the_one_batch_gradient(
        tiny_model, tiny_tokenizer, monkeypatch):
    """Retention prompts with two tool sets and none: rollouts are decoded one prefix group at a
    time (the prompts sharing nothing together) and the KL forward runs group by group; greedy
    rollouts make the samples the same as decoding the batch whole, and then the loss and the
    gradient equal one pass over the whole batch without prefix sharing (float64)."""
    import learner.sdft

    fmt = PromptFormat(tiny_tokenizer)
    everyday = everyday_messages()
    pool = [RetentionPrompt(everyday[i], [[TOOL], [OTHER], None][i % 3], "x") for i in range(6)]
    batch = encode_pool(pool, fmt)
    prompts = [e.prompt_ids for e in batch]
    assert prefix_groups(prompts) == [[0, 3], [1, 4], [2], [5]]
    assert rollout_groups(prompts) == [[0, 3], [1, 4], [2, 5]]
    assert rollout_groups(prompts, None) == [[0, 1, 2, 3, 4, 5]]

    calls = []
    real = learner.sdft.decode

    def spy(model, prompts, **kw):
        calls[-1].append([batch_prompts.index(p) for p in prompts])
        return real(model, prompts, **kw)

    batch_prompts = [list(p) for p in prompts]
    monkeypatch.setattr(learner.sdft, "decode", spy)

    def run(share: bool):
        model = copy.deepcopy(tiny_model).double()
        cfg = LearnConfig(method="sft", retention="kl", retention_temperature=0.0, retention_max_new_tokens=6,
                          retention_beta=0.5, chunk_size=4, share_prompt_prefix=share)
        pm = attach_lora(model, cfg)
        randomise_adapter(pm, 0.2)
        objective = retention_objective(pm, cfg, {fmt.end_of_turn_id}, tiny_tokenizer.pad_token_id)
        calls.append([])
        stats = micro_step(objective, pm, pm, batch, 8, cfg, tiny_tokenizer.pad_token_id,
                           torch.Generator().manual_seed(0), scale=0.5)
        grads = torch.cat([p.grad.flatten() for p in pm.parameters() if p.grad is not None])
        return stats, grads

    grouped, g1 = run(True)
    whole, g2 = run(False)
    assert calls == [[[0, 3], [1, 4], [2, 5]], [[0, 1, 2, 3, 4, 5]]]
    assert grouped["prefix_groups"] == 4 and whole["prefix_groups"] == 1
    assert grouped["trained_tokens"] == whole["trained_tokens"] > 6  # the same greedy samples
    assert grouped["loss"] > 0 and grouped["loss"] == pytest.approx(whole["loss"], rel=1e-6)  # summed in float32
    assert g1.abs().max() > 0 and (g1 - g2).abs().max() < 1e-6 * g1.abs().max()


def test_base_teacher_teaches_everyday_rows_and_the_champion_earlier_demonstrations(tiny_model, tiny_tokenizer):
    """retention_teacher=base: the KL of an everyday prompt is to the origin model, of an earlier
    skill's demonstration prompt to the champion; loss and gradient match a float64 reference
    written out row by row."""
    model = tiny_model.double()
    origin = copy.deepcopy(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # every weight but the embeddings / head, which LoRA never changes either
        for name, p in origin.named_parameters():
            if "embed" not in name and "lm_head" not in name:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
    origin.requires_grad_(False)
    pm, cfg, fmt, pad = _student(model, tiny_tokenizer, retention_teacher="base", retention_max_new_tokens=6,
                                 share_prompt_prefix=True)
    earlier = [RetentionPrompt(d["messages"], [TOOL], "demo:u") for d in DEMOS[:2]]
    pool = [RetentionPrompt(m, [TOOL], "everyday+tools") for m in everyday_messages()[:3]] + earlier
    batch = encode_pool(pool, fmt)
    assert [e.teacher for e in batch] == ["origin"] * 3 + ["champion"] * 2
    objective = retention_objective(pm, cfg, {fmt.end_of_turn_id}, pad, origin=origin)
    got = micro_step(objective, pm, pm, batch, len(batch), cfg, pad, torch.Generator().manual_seed(3))
    params = [(n, p) for n, p in pm.named_parameters() if p.requires_grad]
    ours = {n: p.grad.clone() for n, p in params}

    total = _reference_kl(pm, batch, fmt, pad, cfg, 6, origin=origin)
    (total / len(batch)).backward()
    assert got["loss"] == pytest.approx(total.item() / len(batch), rel=1e-6)
    for n, p in params:
        torch.testing.assert_close(ours[n], p.grad, rtol=1e-6, atol=1e-9)
    bad = copy.deepcopy(origin)
    with torch.no_grad():
        bad.get_output_embeddings().weight.add_(0.01)
    with pytest.raises(ValueError, match="output head differs"):
        retention_objective(pm, cfg, {fmt.end_of_turn_id}, pad, origin=bad)
    # the two teachers differ: the same rows against the champion alone give another loss
    champion_only = retention_objective(pm, cfg, {fmt.end_of_turn_id}, pad)
    other = micro_step(champion_only, pm, pm, batch, len(batch), cfg, pad, torch.Generator().manual_seed(3))
    assert abs(other["loss"] - got["loss"]) > 1e-3 * got["loss"]


def test_base_teacher_needs_kl_and_is_loaded_only_past_the_first_night(tiny_home):
    from agent.loading import load
    from learner.learn import retention_origin
    from memory.models import ModelStore

    with pytest.raises(ValueError, match="retention_teacher=base needs retention=kl"):
        LearnConfig(retention="self_replay", retention_teacher="base")
    with pytest.raises(ValueError, match="retention_teacher must be one of champion, base"):
        LearnConfig(retention="kl", retention_teacher="teacher")
    store = ModelStore(tiny_home, quiet=True)
    cfg = LearnConfig(retention="kl", retention_teacher="base")
    assert retention_origin(store, "tiny", cfg, "cpu") is None  # the champion is the base: same weights
    model, tok = load("tiny", store=store)
    with store.draft(parent="tiny", notes="copy") as draft:
        model.save_pretrained(draft.path)
        tok.save_pretrained(draft.path)
    origin = retention_origin(store, draft.version, cfg, "cpu")
    assert origin is not None and not any(p.requires_grad for p in origin.parameters())
    assert retention_origin(store, draft.version, replace(cfg, retention_teacher="champion"), "cpu") is None


@pytest.mark.parametrize("teacher", ["champion", "base"])
def test_the_teachers_prefix_is_run_once_per_run_and_changes_nothing(tiny_model, tiny_tokenizer, teacher):
    """The retention teachers never change during a run, so their pass over the shared served
    system prompt is kept from the first step (learner.batch.prefix_cache memo): a later step's
    loss and gradient are bit-equal to the same step with nothing kept."""
    model = tiny_model.double()
    origin = copy.deepcopy(model).requires_grad_(False) if teacher == "base" else None
    pm, cfg, fmt, pad = _student(model, tiny_tokenizer, retention_teacher=teacher, retention_max_new_tokens=5,
                                 share_prompt_prefix=True)
    batch = encode_pool([RetentionPrompt(m, [TOOL], "everyday+tools") for m in everyday_messages()[:3]]
                        + [RetentionPrompt(d["messages"], [TOOL], "demo:u") for d in DEMOS[:2]], fmt)

    def step(objective):
        pm.zero_grad(set_to_none=True)
        got = micro_step(objective, pm, pm, batch, len(batch), cfg, pad, torch.Generator().manual_seed(3))
        return got["loss"], torch.cat([p.grad.flatten() for p in pm.parameters() if p.grad is not None])

    kept = retention_objective(pm, cfg, {fmt.end_of_turn_id}, pad, origin=origin)
    step(kept)
    memos = [m for m in kept.frozen_prefixes.values() if m]
    assert memos and all(len(m) == 1 for m in memos)  # one served prefix per teacher
    assert len(memos) == (2 if teacher == "base" else 1)
    loss, grad = step(kept)
    fresh_loss, fresh_grad = step(retention_objective(pm, cfg, {fmt.end_of_turn_id}, pad, origin=origin))
    assert loss == fresh_loss and torch.equal(grad, fresh_grad)
    # SDFT's EMA teacher moves with the student every step: nothing is kept for it
    from learner.sdft import SDFTObjective

    assert SDFTObjective(pm, LearnConfig(teacher="ema"), set(), pad).frozen_prefixes[False] is None


def test_demo_tools_served_offers_every_demonstration_the_agents_full_tool_list(home, tiny_tokenizer):
    from learner.learn import demo_tools_for
    from memory.store import Memory

    assert LearnConfig().demo_tools == "own" and shipped_config().demo_tools == "served"
    with pytest.raises(ValueError, match=r"^demo_tools must be one of own, served$"):
        LearnConfig(demo_tools="all")
    fmt = PromptFormat(tiny_tokenizer)
    with Memory(home) as mem:
        served, units, dates, _ = _two_skills(mem)
        demos = mem.demonstrations("units")
        own = examples_from_demonstrations(demos, fmt, demo_tools_for(mem, LearnConfig()))
        wide = examples_from_demonstrations(demos, fmt, demo_tools_for(mem, LearnConfig(demo_tools="served")))
    assert all(e.tools == units for e in own)
    assert all(e.tools == served for e in wide)  # the same list, in the order `chat` offers it
    assert [e.completion_text for e in wide] == [e.completion_text for e in own]  # only the prompt changes


def test_replay_rehearses_a_seeded_sample_of_learned_demonstrations_never_the_runs_own(home):
    """Learned: used by a run that landed (promoted, or succeeded outside the gate)."""
    from learner.learn import rehearsal
    from memory.store import Memory

    with Memory(home) as mem:
        _two_skills(mem)
        assert rehearsal(mem, LearnConfig(replay=50), set()) == []  # used by a run still running: not learned
        (run,) = [r["id"] for r in mem.runs()]
        mem.finish_run(run, "promoted")
        learned = {d["id"] for d in mem.demonstrations() if d.get("used_in_runs")}
        assert len(learned) == 6
        # a blocked run's demonstrations are never rehearsed: the champion did not learn them
        blocked = [mem.add_demonstration("units", [{"role": "user", "content": f"Convert {i} yards."}], [CALL])[0]
                   for i in range(3)]
        other = mem.start_run("sft", {}, "units")
        mem.mark_used(blocked, other)
        mem.finish_run(other, "blocked")
        assert {d["id"] for d in rehearsal(mem, LearnConfig(replay=50), set())} == learned
        assert rehearsal(mem, LearnConfig(), set()) == []  # replay 0: nothing rehearsed
        three = [d["id"] for d in rehearsal(mem, LearnConfig(replay=3, seed=1), set())]
        assert len(set(three)) == 3 and set(three) <= learned
        assert three == [d["id"] for d in rehearsal(mem, LearnConfig(replay=3, seed=1), set())]  # seeded
        # a rerun's own demonstrations were used by the blocked run before it: never rehearsed twice
        own = set(sorted(learned)[:4])
        assert {d["id"] for d in rehearsal(mem, LearnConfig(replay=50), own)} == learned - own
    with pytest.raises(ValueError, match=r"^replay must be 0"):
        LearnConfig(replay=-1)


def test_retention_without_prefix_gradient_matches_a_float64_reference(tiny_model, tiny_tokenizer, monkeypatch):
    """retention_prefix_grad=False: the same loss, and the gradient of running every row alone on
    a copy of the shared prefix's keys/values computed without a graph; it differs from the
    exact gradient (the part through the prefix is what is dropped)."""
    from agent.decode import cache_kwarg, prefill, shared_prefix_len

    pm, cfg, fmt, pad = _student(tiny_model.double(), tiny_tokenizer, retention_prefix_grad=False,
                                 retention_max_new_tokens=6, share_prompt_prefix=True)
    batch = encode_pool(_pool(4, tools_share=1.0), fmt)
    prompts = [e.prompt_ids for e in batch]
    K = shared_prefix_len(prompts)
    assert K > 100

    def step(prefix_grad):
        pm.zero_grad(set_to_none=True)
        objective = retention_objective(pm, cfg, {fmt.end_of_turn_id}, pad)
        got = micro_step(objective, pm, pm, batch, len(batch), cfg, pad, torch.Generator().manual_seed(3),
                         prefix_grad=prefix_grad)
        return got["loss"], {n: p.grad.clone() for n, p in pm.named_parameters() if p.requires_grad}

    import agent.decode
    import learner.batch

    calls = []
    real = learner.batch.prefill
    for module in (learner.batch, agent.decode):  # the training passes' prefills and the sampler's
        monkeypatch.setattr(module, "prefill", lambda m, ids, cache=None: calls.append(len(ids)) or real(m, ids, cache))
    loss, ours = step(False)
    # the served prefix is run twice, not three times: by the teacher, and by the rollouts, whose
    # keys/values the student's pass then reads (no gradient goes through them)
    assert calls == [K, K]
    exact_loss, exact = step(True)
    assert loss == pytest.approx(exact_loss, rel=1e-9)

    completions = decode(pm, prompts, max_new_tokens=6, stop_ids={fmt.end_of_turn_id}, pad_id=pad, temperature=1.0,
                         generator=torch.Generator().manual_seed(3), min_shared_prefix=cfg.min_shared_prefix)
    pm.zero_grad(set_to_none=True)
    pm.train()
    total = torch.zeros((), dtype=torch.float64)
    for p, c in zip(prompts, completions, strict=True):
        rest = torch.tensor([p[K:] + c])
        with torch.no_grad():
            cache = prefill(pm, p[:K])
        out = pm(input_ids=rest, position_ids=torch.arange(K, len(p) + len(c)).unsqueeze(0), **{cache_kwarg(pm): cache})
        student = torch.log_softmax(out.logits[0, len(p) - K - 1:-1], -1)
        with torch.no_grad(), pm.disable_adapter():
            teach = torch.log_softmax(pm(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1:-1], -1)
        total = total + (teach.exp() * (teach - student)).sum(-1).mean()
    (total / len(batch)).backward()
    assert loss == pytest.approx(total.item() / len(batch), rel=1e-6)
    for n, p in pm.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(ours[n], p.grad, rtol=1e-6, atol=1e-9)
    differs = max(((ours[n] - exact[n]).abs().max() / exact[n].abs().max()).item() for n in ours)
    assert differs > 1e-3


def test_tool_sounding_requests_leave_out_what_an_installed_tool_serves():
    from skills.retention import TASKS, task_messages

    every = [m[0]["content"] for m in task_messages()]
    assert len(every) == len(TASKS) and len(set(every)) == len(TASKS)
    weather = {"name": "get_weather", "description": "Current conditions for a city."}
    alarm = {"name": "clock_set", "description": "Set an alarm at a given time."}
    kept = [m[0]["content"] for m in task_messages([weather, alarm, TOOL])]
    gone = set(every) - set(kept)
    assert gone == {q for q, topics in TASKS if {"weather", "alarm"} & set(topics.split())}
    assert len(gone) >= 3 and "Set an alarm for 6:30 tomorrow morning." in gone
    assert "Start a ten-minute timer for the pasta." in kept  # a timer is not an alarm here


def test_task_share_fills_the_pool_with_tool_sounding_requests_asked_with_the_served_tools(home, tiny_tokenizer):
    from memory.store import Memory

    cfg = LearnConfig(retention="kl", retention_prompts=16, retention_demo_share=0.25, retention_task_share=0.5)
    with Memory(home) as mem:
        served, _, _, learning = _two_skills(mem)
        pool = pool_from_memory(mem, cfg, learning)
        plain = pool_from_memory(mem, replace(cfg, retention_task_share=0.0), learning)
    kinds = [p.source.split(":")[0] for p in pool]
    assert (kinds.count("demo"), kinds.count("task+tools"), kinds.count("everyday+tools")) == (4, 6, 6)
    tasks = [p for p in pool if p.source == "task+tools"]
    assert all(p.tools == served for p in tasks)
    from skills.retention import TASKS

    assert {p.messages[0]["content"] for p in tasks} <= {q for q, _ in TASKS}
    assert "task+tools" not in [p.source for p in plain] and len(plain) == 16
    # taught like everyday prompts: by the base when it teaches
    assert [e.teacher for e in encode_pool(tasks, PromptFormat(tiny_tokenizer))] == ["origin"] * 6
    with pytest.raises(ValueError, match="retention_task_share must be in"):
        LearnConfig(retention_task_share=1.5)
