"""The evaluation harness: batched greedy generation, judging calls, recall into context, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from agent.generate import generate_reply
from agent.prompt import PromptFormat
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
from skills.pack import SkillPack, bundled_pack

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


class ScriptedModel:
    """Answers by looking the last request up in ANSWERS; records every batch it was given."""

    device = torch.device("cpu")

    def __init__(self, tokenizer, answers=None):
        self.tok = tokenizer
        self.answers = answers or ANSWERS
        self.fmt = PromptFormat(tokenizer)
        self.batches = []

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **_):
        self.batches.append((input_ids.clone(), attention_mask.clone()))
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            prompt = self.tok.decode(ids[mask.bool()])
            last = prompt.rsplit("<|im_start|>user\n", 1)[1]
            reply = next(v for k, v in self.answers.items() if last.startswith(k))
            new = self.tok(reply, add_special_tokens=False)["input_ids"][:max_new_tokens - 1] + [eos_token_id]
            rows.append(ids.tolist() + new)
        width = max(map(len, rows))
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])


def test_cases_are_judged_by_the_checker(tiny_tokenizer):
    model = ScriptedModel(tiny_tokenizer)
    r = evaluate_skill(model, tiny_tokenizer, CASES, TOOL, name="units", batch_size=3, max_new_tokens=200)
    assert [c["id"] for c in r.cases] == ["c0", "c1", "c2", "c3"]
    assert [c["correct"] for c in r.cases] == [True, False, False, False]
    assert (r.value, r.correct, r.n, r.kind) == (0.25, 1, 4, "skill")
    assert r.cases[0]["calls"] == [{"name": "convert_units", "arguments": {"value": 5, "from_unit": "kilometer", "to_unit": "mile"}}]
    assert r.cases[1]["reason"] == "convert_units: from_unit='gram' is not one of ['pound']"
    assert r.cases[2]["reason"].startswith("invalid call: malformed JSON")
    assert r.cases[3]["reason"] == "made 0 call(s), expected 1" and r.cases[3]["text"] == "I cannot do that."
    assert len(model.batches) == 2  # 4 prompts, batch size 3


def test_batches_are_left_padded(tiny_tokenizer):
    model = ScriptedModel(tiny_tokenizer)
    evaluate_skill(model, tiny_tokenizer, CASES, TOOL, batch_size=4, max_new_tokens=200)
    [(ids, mask)] = model.batches
    lengths = mask.sum(1)
    assert lengths.min() < lengths.max()  # different prompt lengths, so padding happened
    for row, n in zip(mask, lengths, strict=True):
        assert row[-n:].all() and not row[:-n].any()


def test_batched_greedy_equals_one_at_a_time(tiny_tokenizer, tiny_model):
    fmt = PromptFormat(tiny_tokenizer)
    prompts = [fmt.encode(c["messages"], TOOL) for c in CASES[:3]] + [fmt.encode([{"role": "user", "content": "hi"}])]
    batched = generate_batch(tiny_model, fmt, prompts, max_new_tokens=12, batch_size=4)
    single = generate_batch(tiny_model, fmt, prompts, max_new_tokens=12, batch_size=1)
    assert batched == single
    reply = generate_reply(tiny_model, tiny_tokenizer, [{"role": "user", "content": "hi"}], max_new_tokens=12)
    assert tiny_tokenizer.decode(single[3], skip_special_tokens=True) == reply


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


def test_recall_puts_similar_demonstrations_in_context(tiny_tokenizer, tmp_path):
    pack = SkillPack.load(bundled_pack("unit_convert"))
    pack.eval = pack.eval[:2]
    model = ScriptedModel(tiny_tokenizer, {m["content"][:12]: "no" for c in pack.eval for m in c["messages"]})
    with Memory(tmp_path / "h") as mem:
        install_pack(mem, pack)
        r = evaluate_memory_skill(model, tiny_tokenizer, mem, "unit_convert", recall=3, max_new_tokens=4)
        plain = evaluate_memory_skill(model, tiny_tokenizer, mem, "unit_convert", max_new_tokens=4)
        expected_ids = [[d["id"] for d in mem.recall(c["messages"][0]["content"], k=3, skill="unit_convert")]
                        for c in pack.eval]
    assert [c["recalled"] for c in r.cases] == expected_ids and all(len(x) == 3 for x in expected_ids)
    assert [c["recalled"] for c in plain.cases] == [[], []]
    assert all(a["prompt_tokens"] > b["prompt_tokens"] for a, b in zip(r.cases, plain.cases, strict=True))
    assert r.notes == ["recall 3"]
    # a pack that is not installed recalls from its own demonstrations the same way
    from_pack = evaluate_pack(model, tiny_tokenizer, pack, recall=3, max_new_tokens=4)
    assert [c["prompt_tokens"] for c in from_pack.cases] == [c["prompt_tokens"] for c in r.cases]


def test_recall_needs_a_recaller(tiny_tokenizer):
    with pytest.raises(ValueError, match="recaller"):
        evaluate_skill(ScriptedModel(tiny_tokenizer), tiny_tokenizer, CASES, TOOL, recall=2)


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
