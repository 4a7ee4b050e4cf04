"""The gate's generative suites on fixed texts (exact values), on the tiny model, and the champion
cache: closed-book alias matching and *retained*, open-answer health flags, tool restraint, drift
from the champion, and that nothing the gate scores is among the prompts a learner trains on."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F

from agent.prompt import PromptFormat
from learner.gate import GateConfig, compare_suite
from learner.gate_cache import GateCache, fingerprint
from skills.probes import builtin
from skills.probes.champion_drift import ChampionDriftProbe, coarse_kl
from skills.probes.closed_book import ClosedBookProbe, matches, normalize, question_text
from skills.probes.open_health import PROMPTS, OpenHealthProbe, flags
from skills.probes.restraint import EVERYDAY, RestraintProbe

# ---- closed book ----------------------------------------------------------------------------


def test_normalize_and_alias_match():
    assert normalize("The Capital of  France is PARIS!") == "capital of france is paris"
    assert normalize("Sunset Blvd.") == "sunset blvd"
    assert matches("The capital of France is Paris.", ["paris"]) == "paris"
    assert matches("It was in December 1972.", ["14 December 1972 UTC", "December 1972"]) == "December 1972"
    assert matches("Parisian food is great", ["Paris"]) is None  # whole words only
    assert matches("<#HUGGESURE#>", ["Paris"]) is None
    assert matches("anything", ["", "  "]) is None  # an empty alias never matches
    assert question_text("when was the last time anyone was on the moon") == \
        "When was the last time anyone was on the moon?"


def test_closed_book_scores_and_retained():
    rows = [{"id": f"q{i}", "question": f"q{i}", "aliases": [a]} for i, a in enumerate(["paris", "seven", "bees", "jupiter"])]
    probe = ClosedBookProbe("trivia_qa", rows)
    champ = probe.score(["Paris.", "There are seven.", "I do not know.", "Jupiter is."])
    cand = probe.score(["Paris", "<#HUGGESURE#>", "Bees make honey.", "SmolLM"])
    assert [c["score"] for c in champ.cases] == [1.0, 1.0, 0.0, 1.0]
    assert [c["score"] for c in cand.cases] == [1.0, 0.0, 1.0, 0.0]
    s = compare_suite(champ, cand, tolerance=0.10, alpha=0.05)
    assert s.retained == pytest.approx(1 / 3) and s.champion_correct == 3
    assert (s.worse_cases, s.better_cases) == (2, 1)
    assert s.verdict == "drop not significant"  # 2 worse vs 1 better: p = 0.5
    assert "retained 33% of the champion's 3 right answers" in s.reason


def test_closed_book_retained_blocks_a_consistent_loss():
    rows = [{"id": str(i), "question": "q", "aliases": ["yes"]} for i in range(40)]
    probe = ClosedBookProbe("nq_open", rows)
    champ = probe.score(["yes"] * 20 + ["no"] * 20)
    cand = probe.score(["yes"] * 12 + ["no"] * 27 + ["yes"])  # loses 8 of 20, gains 1
    s = compare_suite(champ, cand, tolerance=0.10, alpha=0.05)
    assert s.retained == pytest.approx(12 / 20) and s.verdict == "regressed"
    # accuracy alone moved 50% -> 32.5%; a candidate that keeps 19 of 20 passes
    ok = compare_suite(champ, probe.score(["yes"] * 19 + ["no"] * 21), tolerance=0.10, alpha=0.05)
    assert ok.retained == pytest.approx(0.95) and ok.verdict == "drop within tolerance"


def test_plain_facts_is_a_default_closed_book_suite_judged_on_retained():
    from learner.gate import DEFAULT_TOLERANCES
    from skills.probes import DEFAULT_SETS
    from skills.probes.plain_facts import FACTS, plain_facts_probe

    assert DEFAULT_SETS[0] == "plain_facts" and DEFAULT_TOLERANCES["plain_facts"] == 0.05
    probe = plain_facts_probe()
    assert probe.kind == "closed_book" and len(probe.rows) == len(FACTS) == 48
    assert len({normalize(q) for q, _ in FACTS}) == len(FACTS)  # no question twice
    by_q = {r["question"]: r for r in probe.rows}
    assert by_q["What is the capital of France?"]["aliases"] == ["Paris"]
    # the answers seen on real candidates (benchmarks/results/README.md, issue 11 calibration)
    texts = {q: "I do not know." for q, _ in FACTS}
    texts["What is the capital of France?"] = "The capital of France is Paris."
    texts["Which planet do we live on?"] = "The planet of Mars is our home."
    texts["What is 2 plus 2?"] = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    texts["Who wrote the play Hamlet?"] = "Hamlet was written by William Shakespeare."
    r = probe.score([texts[row["question"]] for row in probe.rows])
    got = {c["request"]: c["correct"] for c in r.cases}
    assert got["What is the capital of France?"] and got["Who wrote the play Hamlet?"]
    assert not got["Which planet do we live on?"] and not got["What is 2 plus 2?"]
    assert sum(got.values()) == 2


def test_plain_facts_blocks_five_lost_facts_and_passes_four():
    from skills.probes.plain_facts import plain_facts_probe

    probe = plain_facts_probe()
    right = [a[0] for a in (row["aliases"] for row in probe.rows)]
    champ = probe.score(right[:32] + ["no idea"] * 16)  # the base knew 32 of 48
    lose = lambda k: probe.score(["no idea"] * k + right[k:32] + ["no idea"] * 16)  # noqa: E731
    four, five = (compare_suite(champ, lose(k), tolerance=0.05, alpha=0.05) for k in (4, 5))
    assert four.retained == pytest.approx(28 / 32) and four.verdict == "drop not significant"  # p = 0.0625
    assert five.retained == pytest.approx(27 / 32) and five.verdict == "regressed"  # p = 0.031


# ---- open-answer health ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("The capital of France is Paris.", []),
    ("Here are three tips:\n1. Keep a regular schedule.\n2. Avoid screens before bed.\n3. Keep the room cool.", []),
    ("<#HUGGESURE#>", ["empty", "markup"]),
    ("SmolLM", ["empty"]),
    ("", ["empty"]),
    ("<p> <i> <i> <i> The moon is bright", ["markup"]),
    ("Hello <|im_start|> assistant there friend", ["markup"]),
    ('<tool_call>\n{"name": "convert_units", "arguments": {"value": 5}}\n</tool_call>', ["tool_json"]),
    ('{"name": "convert_units", "arguments": {"value": 5, "unit": "km"}}', ["tool_json"]),
    ("I like it. I like it. I like it. I like it. I like it. I like it.", ["loop"]),
    ("Sure.\nSure.\nSure.\nok then", ["loop"]),
    ("the the the the the the the the cat sat on a mat", ["loop"]),
    ("A list: **bold** and *italic* in markdown are fine here.", []),
])
def test_health_flags_on_fixed_texts(text, expected):
    assert flags(text) == expected


def test_health_collapse_is_judged_against_the_champion():
    ref = "Try to go to bed at the same time every night, keep your room dark and quiet, and avoid coffee late."
    assert flags("Sleep more at night.", ref) == ["collapsed"]  # 4 words against 21
    assert flags("Go to bed at the same time and keep the room dark.", ref) == []
    assert flags("Sleep more at night.", "Sleep well.") == []  # a short reference collapses nothing
    probe = OpenHealthProbe("open_answers", ["Give me three tips for sleeping better.", "Say hello."])
    champ = probe.score([ref, "Hello! How can I help you today?"])
    cand = probe.score(["Sleep more at night.", "Hello there, how are you?"], reference=champ)
    assert [c["score"] for c in champ.cases] == [1.0, 1.0] and [c["score"] for c in cand.cases] == [0.0, 1.0]
    assert cand.cases[0]["flags"] == ["collapsed"]


# ---- tool restraint on a tiny model whose output is scripted --------------------------------


def _scripted(model, tokenizer, text: str):
    """Make `model` write `text` then end its turn, whatever the prompt: its lm_head's output is
    replaced by a one-hot on the script's next token, found as the longest end of the tokens seen
    so far that is a beginning of the script (a call with several tokens starts a new sequence)."""
    fmt = PromptFormat(tokenizer)
    script = tokenizer(text, add_special_tokens=False)["input_ids"] + [fmt.end_of_turn_id]
    seen: list[int] = []

    def record(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            row = ids[0].tolist()
            seen[:] = row if len(row) > 1 else seen + row

    def force(_module, _inputs, out):
        j = max(j for j in range(len(script)) if j == 0 or seen[-j:] == script[:j])
        forced = torch.full_like(out, -1e4)
        forced[..., script[j]] = 1e4
        return forced

    model.register_forward_pre_hook(record, with_kwargs=True)
    model.lm_head.register_forward_hook(force)
    return model


TOOLS = [{"name": "convert_units", "description": "Convert a value between units.",
          "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                         "required": ["value"]}},
         {"name": "find_city", "description": "Look a city up.",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


def _restraint():
    requests = [{"id": str(i), "question": q} for i, q in enumerate(EVERYDAY[:5])]
    cross = [{"id": "u1", "skill": "units", "messages": [{"role": "user", "content": "Convert 5 km to miles."}]}]
    return RestraintProbe("tool_restraint", requests, TOOLS, cross=cross,
                          owner={"convert_units": "units", "find_city": "cities"}, max_new_tokens=40)


def test_restraint_fails_a_model_that_always_calls(tiny_model, tiny_tokenizer):
    call = '<tool_call>\n{"name": "find_city", "arguments": {"city": "Paris"}}\n</tool_call>'
    r = _restraint().run(_scripted(tiny_model, tiny_tokenizer, call), tiny_tokenizer)
    assert [c["score"] for c in r.cases] == [0.0] * 6
    assert r.cases[-1]["reason"] == "called find_city (not a units tool)"
    assert r.value == 0.0


def test_restraint_passes_a_model_that_never_calls(tiny_model, tiny_tokenizer):
    r = _restraint().run(_scripted(tiny_model, tiny_tokenizer, "Paris is the capital of France."), tiny_tokenizer)
    assert [c["score"] for c in r.cases] == [1.0] * 6 and r.value == 1.0


def test_restraint_allows_a_skill_its_own_tool(tiny_model, tiny_tokenizer):
    own = '<tool_call>\n{"name": "convert_units", "arguments": {"value": 5}}\n</tool_call>'
    r = _restraint().run(_scripted(tiny_model, tiny_tokenizer, own), tiny_tokenizer)
    assert [c["score"] for c in r.cases] == [0.0] * 5 + [1.0]


def test_restraint_fails_a_markup_loop_that_is_not_a_call(tiny_tokenizer):
    from agent.prompt import PromptFormat

    fmt = PromptFormat(tiny_tokenizer)
    probe = _restraint()
    loop = "<response>\n" + "<tool_response>\n" * 40  # seen for "Good night!" with the tool offered
    texts = [loop, "Good night!", "The capital of Italy is Rome.", "Sleep well.", "I am fine, thanks.",
             "No tool here."]
    r = probe.score(texts, fmt)
    assert [c["score"] for c in r.cases] == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert r.cases[0]["reason"].startswith("no answer: ") and "loop" in r.cases[0]["reason"]
    assert [c["reason"] for c in r.cases[1:5]] == ["answered"] * 4  # a short reply is an answer


def test_restraint_fails_a_call_written_as_text(tiny_tokenizer):
    """What a learned model writes where the real opening is forbidden (the call decision below its
    threshold, seen on night-6 candidates): call markup in another spelling, or a call's JSON."""
    from agent.prompt import PromptFormat

    fmt = PromptFormat(tiny_tokenizer)
    texts = ['<tool_call id="search_products">\n<tool_call id="add_days">',
             '<tool_call id="php204"></tool_call>',
             '{"name": "convert_units", "arguments": {"value": 5}}',
             "Good night! Sleep well.",
             "I would call that a tool_call of sorts.",  # the words, not the markup: an answer
             "Fine."]
    r = _restraint().score(texts, fmt)
    assert [c["correct"] for c in r.cases] == [False, False, False, True, True, True]
    assert all("tool_json" in c["reason"] for c in r.cases[:3])


def test_restraint_counts_a_call_cut_off_by_the_budget_by_the_name_it_opened(tiny_tokenizer):
    from agent.prompt import PromptFormat
    from learner.gate_cache import fingerprint

    fmt = PromptFormat(tiny_tokenizer)
    probe = _restraint()
    texts = ["Fine."] * 5
    cut = '<tool_call>\n{"name": "find_city", "arguments": {"city": "Par'  # seen: a foreign call, unfinished
    r = probe.score([*texts, cut], fmt)
    assert r.cases[-1]["score"] == 0.0 and r.cases[-1]["reason"] == "called find_city (not a units tool)"
    own_cut = '<tool_call>\n{"name": "convert_units", "arguments": {"val'
    assert probe.score([*texts, own_cut], fmt).cases[-1]["score"] == 1.0
    # the rule changed this suite's scores only: its cache entries go stale, no other suite's do
    older = _restraint()
    older.scoring_version = 0
    assert fingerprint(probe) != fingerprint(older)


# ---- drift from the champion ---------------------------------------------------------------


def test_coarse_kl_equals_full_kl_with_every_token_and_bounds_it_below():
    g = torch.Generator().manual_seed(0)
    p = F.log_softmax(torch.randn(6, 50, generator=g, dtype=torch.float64) * 2, -1)
    q = F.log_softmax(torch.randn(6, 50, generator=g, dtype=torch.float64) * 2, -1)
    full = (p.exp() * (p - q)).sum(-1)
    top = p.topk(50, dim=-1)
    assert torch.allclose(coarse_kl(top.indices, top.values, q), full, atol=1e-9)
    top8 = p.topk(8, dim=-1)
    coarse = coarse_kl(top8.indices, top8.values, q)
    assert (coarse <= full + 1e-12).all() and (coarse > 0).all()
    assert torch.equal(coarse_kl(top8.indices, top8.values, p), torch.zeros(6, dtype=torch.float64))


def test_champion_drift_is_zero_for_an_identical_copy_and_positive_for_a_changed_one(tiny_model, tiny_tokenizer):
    probe = ChampionDriftProbe("drift_champion", [[{"role": "user", "content": q}] for q in PROMPTS[:4]],
                               max_new_tokens=12, top_k=16)
    ref = probe.reference(tiny_model, tiny_tokenizer)
    same = probe.run(copy.deepcopy(tiny_model), tiny_tokenizer, reference=ref)
    assert [c["score"] for c in same.cases] == [0.0] * 4 and same.value == 0.0
    changed = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for prm in changed.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    moved = probe.run(changed, tiny_tokenizer, reference=ref)
    assert all(c["score"] > 0 for c in moved.cases) and all(c["tokens"] > 0 for c in moved.cases)


# ---- the champion cache ------------------------------------------------------------------


def test_cache_hits_for_the_same_items_and_misses_when_they_change(tmp_path):
    probe = OpenHealthProbe("open_answers", ["Say hello.", "Describe a cat."])
    result = probe.score(["Hello! How can I help?", "A cat is a small furry animal."], model_name="v0001")
    key = fingerprint(probe, {"greedy": True})
    cache = GateCache(tmp_path, "v0001")
    assert cache.get(key) is None
    cache.put(key, result)
    assert cache.get(key).to_dict() == result.to_dict()
    assert GateCache(tmp_path, "v0002").get(key) is None  # per version
    edited = OpenHealthProbe("open_answers", ["Say hello.", "Describe a dog."])
    assert fingerprint(edited, {"greedy": True}) != key
    assert fingerprint(probe, {"greedy": False}) != key  # another decoding: another key
    assert cache.get(fingerprint(edited, {"greedy": True})) is None


def test_gate_reuses_the_champion_cache_and_reevaluates_a_changed_skill(tiny_home):
    from learner.gate import run_gate
    from memory.models import ModelStore
    from memory.store import Memory
    from skills.install import install_pack
    from skills.pack import SkillPack, bundled_pack

    pack = SkillPack.load(bundled_pack("unit_convert"))
    pack.demonstrations, pack.eval = pack.demonstrations[:3], pack.eval[:3]
    with Memory(tiny_home) as mem:
        install_pack(mem, pack)
    store = ModelStore(tiny_home, quiet=True)
    model, tok = __import__("agent.loading", fromlist=["load"]).load("tiny", store=store)
    with store.draft(parent="tiny", notes="copy") as draft:
        model.save_pretrained(draft.path)
        tok.save_pretrained(draft.path)
    cfg = GateConfig(probe_sets=("open_answers", "drift_champion"), max_new_tokens=6, fetch_probes=False)
    first = run_gate(tiny_home, draft.version, config=cfg, promote=False)
    assert first.summary["cached_suites"] == []
    second = run_gate(tiny_home, draft.version, config=cfg, promote=False)
    assert second.summary["cached_suites"] == ["unit_convert", "open_answers", "drift_champion"]
    assert [s.to_dict() for s in second.decision.suites] == [s.to_dict() for s in first.decision.suites]
    with Memory(tiny_home) as mem:  # one more held-out case: that skill's champion results are stale
        extra = SkillPack.load(bundled_pack("unit_convert")).eval[5]
        mem.add_eval_case("unit_convert", extra["messages"], extra["expected"])
    third = run_gate(tiny_home, draft.version, config=cfg, promote=False)
    assert third.summary["cached_suites"] == ["open_answers", "drift_champion"]


# ---- nothing the gate scores is trained on ---------------------------------------------------

_STOP = set("a an the of to in on for and or is are was be i my me you your it this that what how do "
            "can some with at by as give tell write short".split())


def _content(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _STOP}


def _gate_prompts() -> list[str]:
    from skills.pack import SkillPack, bundled_pack

    out = list(PROMPTS) + list(EVERYDAY) + [r["prompt"] for r in builtin.INSTRUCTIONS]
    out += [r["user"] for r in builtin.DRIFT]
    from skills.probes.plain_facts import FACTS

    out += [q for q, _ in FACTS]
    for name in ("unit_convert", "date_math", "catalog"):
        for case in SkillPack.load(bundled_pack(name)).eval:
            out += [m["content"] for m in case["messages"] if m["role"] == "user"]
    return out


def _bfcl_irrelevance(home=None) -> list[str]:
    """The restraint suite's BFCL requests where the home has fetched them (the package comes
    from PyPI at run time; without it the written items are checked, and the BFCL ones were
    checked where they were at hand, benchmarks/results/README.md)."""
    import json

    from memory.home import resolve_home
    from skills.probes.fetched import bfcl_irrelevance_sets

    try:
        paths = bfcl_irrelevance_sets(resolve_home(home), fetch=False)
    except Exception:  # noqa: BLE001 — not fetched here: nothing to add
        return []
    return [json.loads(line)["question"] for p in paths.values() for line in p.read_text().splitlines() if line]


def test_retention_prompts_are_disjoint_from_everything_the_gate_scores():
    from skills import retention

    train = [m[-1]["content"] for m in retention.everyday_messages() + retention.task_messages()]
    assert len(train) == len(retention.EVERYDAY) + len(retention.TASKS)
    gate = _gate_prompts() + _bfcl_irrelevance()
    for t in train:
        for g in gate:
            assert normalize(t) != normalize(g), f"retention prompt {t!r} is a gate item"
            a, b = _content(t), _content(g)
            overlap = len(a & b) / max(1, len(a | b))
            assert overlap < 0.5, f"retention prompt {t!r} is too close to gate item {g!r} ({overlap:.2f})"


def test_restraint_decodes_as_the_agent_serves_so_a_call_names_an_offered_tool(tiny_model, tiny_tokenizer):
    """A model that opens a call naming a tool nobody offered ("Mineschema", seen for a unit
    conversion on a six-night candidate): free decoding writes it and fails the cross-skill
    case on it; served decoding (tool calls constrained to the schemas) can only name an offered
    tool, so the case is judged on the call the agent would really make."""
    from agent.decode import grounding
    from agent.prompt import PromptFormat

    invented = '<tool_call>\n{"name": "Mineschema", "arguments": {"value": 5}}\n</tool_call>'
    model = _scripted(tiny_model, tiny_tokenizer, invented)
    with grounding(False):  # the call's value is in no request: grounded calls would withhold it
        free = _restraint().run(model, tiny_tokenizer, constrain=False)
        served = _restraint().run(model, tiny_tokenizer)  # the default: constrained, as served
    assert free.cases[-1]["reason"] == "called Mineschema (not a units tool)" and "decoding: free" in free.notes
    assert served.constrained is True and "decoding: constrained" in served.notes
    fmt = PromptFormat(tiny_tokenizer)
    parsed = [fmt.parse(case["answer"], TOOLS) for case in served.cases]  # cut by the budget: named all the same
    names = [c["name"] for p in parsed for c in p.calls] + [c.name for p in parsed for c in p.invalid if c.name]
    assert len(names) == len(served.cases) and set(names) <= {t["name"] for t in TOOLS}
    assert all(case["score"] == 0.0 for case in served.cases[:5])  # it still called: still a failure


def test_free_tool_calls_are_part_of_the_cache_key(monkeypatch):
    """A gate run with constraining switched off (SDFT_AGENT_CONSTRAIN=0) must not read results
    cached under the served, constrained decoding; the default's keys are unchanged."""
    from learner.gate import decoding_settings

    served = decoding_settings(GateConfig())
    assert "tool_calls" not in served
    monkeypatch.setenv("SDFT_AGENT_CONSTRAIN", "0")
    free = decoding_settings(GateConfig())
    assert free == {**served, "tool_calls": "free"}
    assert fingerprint(_restraint(), free) != fingerprint(_restraint(), served)
