"""Property: generated malformed packs, demonstrations, eval cases, JSONL imports and stdin-daemon
lines thrown at the public entry points get a clear error or succeed — never a traceback — and a
refused input leaves the database's integrity check and row counts exactly as they were.

Bounded (a few dozen examples per entry point, no shrinking deadline) so it runs in the default
suite in seconds. The shapes are mutations of valid records: a field dropped, retyped or replaced
by junk, since that is where a validator is most likely to let something through half-checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile import cli, counts, unit_home

from skills.pack import SkillPack, bundled_pack

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=8),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _valid_pack() -> dict:
    pack = SkillPack.load(bundled_pack("unit_convert"))
    return {"name": "fuzzed", "description": "fuzz", "tools": pack.tools,
            "demonstrations": pack.demonstrations[:2], "eval": pack.eval[:2]}


@st.composite
def mutated(draw, base):
    """`base` with one value somewhere inside replaced by junk or removed."""
    doc = json.loads(json.dumps(base))
    path: list = []
    node = doc
    for _ in range(draw(st.integers(1, 5))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            key = draw(st.integers(0, len(node) - 1))
        else:
            break
        path.append((node, key))
        node = node[key]
    if not path:
        return draw(JUNK)
    parent, key = path[-1]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = draw(JUNK)
    return doc


def _refused_or_ok(result) -> bool:
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        assert result.output.strip(), "a refusal must say why"
    return result.exit_code == 0


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory):
    return unit_home(tmp_path_factory.mktemp("fuzz") / "home")


@SETTINGS
@given(doc=mutated(_valid_pack()))
def test_malformed_packs(fuzz_home, tmp_path_factory, doc):
    path = Path(tmp_path_factory.mktemp("p")) / "pack.json"
    path.write_text(json.dumps(doc))
    before = counts(fuzz_home)
    result = cli("skills", "add", str(path), home=fuzz_home)
    if not _refused_or_ok(result):
        assert counts(fuzz_home) == before, "a refused pack changed the database"


def _export_line(home) -> dict:
    out = Path(home).parent / "export.jsonl"
    assert cli("memory", "export", str(out), home=home).exit_code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    return lines[0] if lines else {"kind": "demonstration"}


@SETTINGS
@given(data=st.data())
def test_malformed_jsonl_imports(fuzz_home, tmp_path_factory, data):
    base = _export_line(fuzz_home)
    lines = [json.dumps(data.draw(mutated(base))) for _ in range(data.draw(st.integers(1, 3)))]
    if data.draw(st.booleans()):
        lines.insert(data.draw(st.integers(0, len(lines))), data.draw(st.text(max_size=12)))
    path = Path(tmp_path_factory.mktemp("j")) / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    before = counts(fuzz_home)
    result = cli("memory", "import", str(path), home=fuzz_home)
    if not _refused_or_ok(result):
        assert counts(fuzz_home) == before, "a refused import changed the database"


@SETTINGS
@given(lines=st.lists(st.one_of(st.text(max_size=20), JUNK.map(json.dumps),
                                st.dictionaries(st.sampled_from(["command", "question", "episode_id", "outcome"]),
                                                JUNK, max_size=3).map(json.dumps)), min_size=1, max_size=4))
def test_malformed_stdin_daemon_lines(fuzz_home, lines):
    before = counts(fuzz_home)
    text = "\n".join(x.replace("\n", " ") for x in lines) + "\n"
    result = cli("serve", "--stdin", home=fuzz_home, input=text)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 1), result.output
    after = counts(fuzz_home)
    assert after["demonstrations"] == before["demonstrations"] and after["skills"] == before["skills"]
