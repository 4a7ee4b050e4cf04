"""The evaluation harness: batched greedy generation, judging calls, recall into context, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from agent.decode import common_prefix
from agent.prompt import PromptFormat, call_block
from memory.store import Memory
from skills.evaluate import (
    SuiteResult,
    demonstration_messages,
    evaluate_memory_skill,
    evaluate_pack,
    evaluate_skill,
    with_demonstrations,
)
from skills.generation import generate_batch
from skills.install import install_pack
from skills.pack import SkillPack, bundled_pack, first_choice

TOOL = SkillPack.load(bundled_pack("unit_convert")).tools


def _case(text, value, src, dst, i):
    return {"id": f"c{i}", "messages": [{"role": "user", "content": text}],
            "expected": [{"name": "convert_units",
                          "arguments": {"value": [value], "from_unit": [src], "to_unit": [dst]}}]}


CASES = [
    _case("Convert 5 km to miles", 5, "kilometer", "mile", 0),
    _case("How many grams is 2 pounds", 2, "pound", "gram", 1),
    _case("What is 30 celsius in fahrenheit", 30, "celsius", "fahrenheit", 2),
    _case("Turn 3 cups into liters", 3, "cup", "liter", 3),
]

ANSWERS = {  # what the scripted model replies to each request
    "Convert 5 km": '<tool_call>\n{"name": "convert_units", "arguments": {"value": 5, "from_unit": "kilometer", "to_unit": "mile"}}\n</tool_call>',
    "How many grams": '<tool_call>\n{"name": "convert_units", "arguments": {"value": 2, "from_unit": "gram", "to_unit": "pound"}}\n</tool_call>',
    "What is 30": '<tool_call>\n{"name": "convert_units", "arguments": {"value": 30, "from_unit": "celsius"\n</tool_call>',
    "Turn 3 cups": "I cannot do that.",
}


class Scripted:
    """Stands in for generation: answers each prompt by looking its last request up in
    `answers`, and records the batches it was asked for."""

    def __init__(self, answers=None):
        self.answers = answers or ANSWERS
        self.calls = []

    def __call__(self, model, fmt, prompts, *, max_new_tokens, batch_size, **decoding):
        self.calls.append((len(prompts), max_new_tokens, batch_size))
        texts = []
        for ids in prompts:
            last = fmt.tokenizer.decode(ids).rsplit("<|im_start|>user\n", 1)[1]
            texts.append(next(v for k, v in self.answers.items() if last.startswith(k)))
        return texts


@pytest.fixture
def scripted(monkeypatch):
    def install(answers=None):
        fake = Scripted(answers)
        monkeypatch.setattr("skills.evaluate.generate_texts", fake)
        return fake

    return install


def test_cases_are_judged_by_the_checker(tiny_tokenizer, scripted):
    fake = scripted()
    r = evaluate_skill(None, tiny_tokenizer, CASES, TOOL, name="units", batch_size=3, max_new_tokens=200)
    assert [c["id"] for c in r.cases] == ["c0", "c1", "c2", "c3"]
    assert [c["correct"] for c in r.cases] == [True, False, False, False]
    assert (r.value, r.correct, r.n, r.kind) == (0.25, 1, 4, "skill")
    assert r.cases[0]["calls"] == [{"name": "convert_units", "arguments": {"value": 5, "from_unit": "kilometer", "to_unit": "mile"}}]
    assert r.cases[1]["reason"] == "convert_units: from_unit='gram' is not one of ['pound']"
    assert r.cases[2]["reason"].startswith("invalid call: malformed JSON")
    assert r.cases[3]["reason"] == "made 0 call(s), expected 1" and r.cases[3]["text"] == "I cannot do that."
    assert fake.calls == [(4, 200, 3)]


def test_answer_budget_fits_the_longest_expected_call(tiny_tokenizer, scripted):
    fake = scripted()
    evaluate_skill(None, tiny_tokenizer, CASES, TOOL)
    fmt = PromptFormat(tiny_tokenizer)
    longest = max(len(fmt.tokenizer(call_block({"name": "convert_units", "arguments": first_choice(c["expected"][0]["arguments"])}),
                                    add_special_tokens=False)["input_ids"]) for c in CASES)
    assert fake.calls == [(4, longest + 32, 8)]


def test_batched_greedy_equals_one_at_a_time(tiny_tokenizer, tiny_model):
    fmt = PromptFormat(tiny_tokenizer)
    prompts = [fmt.encode(c["messages"], TOOL) for c in CASES] + [fmt.encode([{"role": "user", "content": "hi"}])]
    assert common_prefix(prompts[:4]) > 300  # the tool schemas are shared
    single = [generate_batch(tiny_model, fmt, [p], max_new_tokens=12)[0] for p in prompts]
    for bs in (1, 2, 8):
        assert generate_batch(tiny_model, fmt, prompts, max_new_tokens=12, batch_size=bs) == single
        assert generate_batch(tiny_model, fmt, prompts[:4], max_new_tokens=12, batch_size=bs) == single[:4]
    for p, ids in zip(prompts, single, strict=True):  # and what transformers' generate() gives
        ref = tiny_model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                  max_new_tokens=12, do_sample=False, eos_token_id=fmt.end_of_turn_id,
                                  pad_token_id=tiny_tokenizer.pad_token_id)[0, len(p):].tolist()
        assert ids == [t for t in ref if t not in (fmt.end_of_turn_id, tiny_tokenizer.pad_token_id)][:12]


def test_generation_stops_at_end_of_turn(tiny_tokenizer, tiny_model):
    fmt = PromptFormat(tiny_tokenizer)
    with torch.no_grad():  # make end-of-turn the likeliest next token everywhere
        tiny_model.lm_head.weight[fmt.end_of_turn_id] += 100 * tiny_model.lm_head.weight.abs().max()
    prompts = [fmt.encode(c["messages"], TOOL) for c in CASES[:3]]
    assert generate_batch(tiny_model, fmt, prompts, max_new_tokens=5) == [[], [], []]
    assert generate_batch(tiny_model, fmt, prompts, max_new_tokens=0) == [[], [], []]


def test_demonstrations_become_earlier_exchanges():
    demo = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "5 km in miles?"}],
            "tool_calls": [{"name": "convert_units", "arguments": {"value": 5}}], "content": None}
    assert demonstration_messages([demo]) == [
        {"role": "user", "content": "5 km in miles?"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "convert_units", "arguments": {"value": 5}}]},
    ]
    case = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 lb in g?"}]
    assert with_demonstrations(case, [demo]) == [case[0], *demonstration_messages([demo]), case[1]]
    assert with_demonstrations(case, []) == case


def test_recall_puts_similar_demonstrations_in_context(tiny_tokenizer, tmp_path, scripted):
    pack = SkillPack.load(bundled_pack("unit_convert"))
    pack.eval = pack.eval[:2]
    scripted({m["content"][:12]: "no" for c in pack.eval for m in c["messages"]})
    with Memory(tmp_path / "h") as mem:
        install_pack(mem, pack)
        r = evaluate_memory_skill(None, tiny_tokenizer, mem, "unit_convert", recall=3, max_new_tokens=4)
        plain = evaluate_memory_skill(None, tiny_tokenizer, mem, "unit_convert", max_new_tokens=4)
        expected_ids = [[d["id"] for d in mem.recall(c["messages"][0]["content"], k=3, skill="unit_convert")]
                        for c in pack.eval]
    assert [c["recalled"] for c in r.cases] == expected_ids and all(len(x) == 3 for x in expected_ids)
    assert [c["recalled"] for c in plain.cases] == [[], []]
    assert all(a["prompt_tokens"] > b["prompt_tokens"] for a, b in zip(r.cases, plain.cases, strict=True))
    assert r.notes == ["recall 3", "decoding: constrained"]
    # a pack that is not installed recalls from its own demonstrations the same way
    from_pack = evaluate_pack(None, tiny_tokenizer, pack, recall=3, max_new_tokens=4)
    assert [c["prompt_tokens"] for c in from_pack.cases] == [c["prompt_tokens"] for c in r.cases]


def test_recall_needs_a_recaller(tiny_tokenizer):
    with pytest.raises(ValueError, match="recaller"):
        evaluate_skill(None, tiny_tokenizer, CASES, TOOL, recall=2)


def test_suite_result_round_trips():
    r = SuiteResult("x", "skill", [{"id": "0", "score": 1.0}, {"id": "1", "score": 0.0}])
    d = r.to_dict()
    assert (d["accuracy"], d["correct"], d["n"]) == (0.5, 1, 2)
    assert SuiteResult.from_dict(json.loads(json.dumps(d))).scores() == {"0": 1.0, "1": 0.0}


# ---- the command line ----------------------------------------------------------------------


def _app():
    from cli.eval_cmd import eval_

    app = typer.Typer()
    app.command("eval")(eval_)
    app.command("noop")(lambda: None)  # keep "eval" a subcommand
    return app


def test_eval_cli_json_gives_per_case_outcomes(tiny_home, tmp_path):
    pack = SkillPack.load(bundled_pack("unit_convert"))
    pack.eval = pack.eval[:3]
    path = pack.save(tmp_path / "small.json")
    result = CliRunner().invoke(_app(), ["eval", "--pack", str(path), "--max-new-tokens", "4", "--json",
                                         "--home", str(tiny_home)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model"] == "tiny" and out["recall"] == 0 and out["accuracy"] == 0.0
    [suite] = out["suites"]
    assert suite["name"] == "unit_convert" and suite["n"] == 3
    assert {"id", "correct", "reason", "calls", "text", "expected"} <= set(suite["cases"][0])


def test_eval_cli_table_with_probes(tiny_home, tmp_path):
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"context": "Q: sky?\nA:", "choices": [" blue", " green"], "gold": 0}) + "\n")
    result = CliRunner().invoke(_app(), ["eval", "--probe-sets", "drift", "--probes", str(mc),
                                         "--home", str(tiny_home)])
    assert result.exit_code == 0, result.output
    assert "drift" in result.output and "mc" in result.output and "0.0000 mean KL" in result.output


def test_eval_cli_unknown_skill_is_one_clear_line(tiny_home):
    result = CliRunner().invoke(_app(), ["eval", "--skill", "nope", "--home", str(tiny_home)])
    assert result.exit_code == 1 and "no bundled skill pack 'nope'" in result.output


@pytest.mark.parametrize("flags, env, constrained", [
    ([], None, True), (["--no-constrain"], None, False), ([], "0", False), (["--constrain"], "0", True)])
def test_eval_cli_records_the_decoding(tiny_home, tmp_path, monkeypatch, flags, env, constrained):
    """Constrained by default; --no-constrain (or SDFT_AGENT_CONSTRAIN=0, which --constrain
    overrides) decodes freely; the result says which, as do the probes' decodings."""
    import skills.probes
    from agent.decode import default_constrain

    if env is None:
        monkeypatch.delenv("SDFT_AGENT_CONSTRAIN", raising=False)
    else:
        monkeypatch.setenv("SDFT_AGENT_CONSTRAIN", env)
    seen = []
    real = skills.probes.run_probes

    def run_probes(*args, **kwargs):
        seen.append(default_constrain())
        return real(*args, **kwargs)

    monkeypatch.setattr(skills.probes, "run_probes", run_probes)
    pack = SkillPack.load(bundled_pack("unit_convert"))
    pack.eval = pack.eval[:2]
    path = pack.save(tmp_path / "small.json")
    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"context": "Q: sky?\nA:", "choices": [" blue", " green"], "gold": 0}) + "\n")
    result = CliRunner().invoke(_app(), ["eval", "--pack", str(path), "--probes", str(mc), "--max-new-tokens", "4",
                                         "--json", *flags, "--home", str(tiny_home)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["constrained"] is constrained
    skill = next(s for s in out["suites"] if s["kind"] == "skill")
    assert skill["constrained"] is constrained
    assert f"decoding: {'constrained' if constrained else 'free'}" in skill["notes"]
    assert seen == [constrained]
    assert default_constrain() is (env is None)  # the switch ends with the command


def test_eval_cli_tool_restraint_offers_the_installed_tools(tiny_home, monkeypatch):
    """`eval --probe-sets tool_restraint` reads the installed tools from memory (it used to skip
    the suite for want of them): every installed tool offered, as the agent serves."""
    import skills.probes.fetched
    from skills.install import install_pack
    from skills.probes.restraint import EVERYDAY

    def offline(*_, **__):
        raise skills.probes.fetched.ProbeFetchError("offline in this test")

    monkeypatch.setattr(skills.probes.fetched, "bfcl_irrelevance_sets", offline)
    pack = SkillPack.load(bundled_pack("unit_convert"))
    pack.demonstrations, pack.eval = pack.demonstrations[:2], pack.eval[:2]
    with Memory(tiny_home) as mem:
        install_pack(mem, pack)
    result = CliRunner().invoke(_app(), ["eval", "--probe-sets", "tool_restraint", "--json", "--home", str(tiny_home)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    [suite] = [s for s in out["suites"] if s["name"] == "tool_restraint"]
    assert suite["n"] == len(EVERYDAY)
    assert f"{len(pack.tools)} tool(s) offered" in " ".join(suite["notes"])
