"""Property: generated malformed packs, demonstrations, eval cases, JSONL imports and stdin-daemon
lines thrown at the public entry points get a clear error or succeed — never a traceback — and a
refused input leaves the database's integrity check and row counts exactly as they were. An
accepted one never silently changes an installed skill's tools and never removes a row.

The entry points: `skills add PACK` (whole packs, and packs whose only fault is in one
demonstration or one eval case), `memory import FILE` (an export's header, skill, demonstration
and eval-case lines, one of them mutated, perhaps a junk line among them) and `serve --stdin`
(junk lines, commands with junk fields, and the teach path: `{"command": "teach", ...}` with
mutated tool calls, the daemon's way of adding a demonstration), one line a run so that every
refused line is checked on its own.

Bounded (a few dozen examples per entry point, derandomized, no deadline) so it runs in the
default suite in seconds. The shapes are mutations of valid records: a field dropped, retyped or
replaced by junk, since that is where a validator is most likely to let something through
half-checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_hostile import cli, unit_home

from memory.lease import acquire
from memory.models import ModelStore
from memory.store import Memory
from skills.pack import SkillPack, bundled_pack


def _settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=8),
                 st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))

CALLS = [{"name": "convert_units", "arguments": {"value": 3, "from_unit": "kilometer", "to_unit": "mile"}}]


def _valid_pack() -> dict:
    pack = SkillPack.load(bundled_pack("unit_convert"))
    return {"name": "fuzzed", "description": "fuzz", "tools": pack.tools,
            "demonstrations": pack.demonstrations[:2], "eval": pack.eval[:2]}


@st.composite
def mutated(draw, base, at: tuple = ()):
    """`base` with one value somewhere inside `base[at…]` replaced by junk or removed."""
    doc = json.loads(json.dumps(base))
    node = doc
    path: list = []
    for key in at:
        path.append((node, key))
        node = node[key]
    for _ in range(draw(st.integers(0 if at else 1, 5))):
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


def state(home) -> dict:
    """Integrity checked; the row counts and every installed skill's tools."""
    with Memory(home) as m:
        assert m.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        s = m.stats()
        tools = {sk["name"]: sk["tools"] for sk in m.list_skills()}
    return {k: s[k] for k in ("skills", "tools", "demonstrations", "eval_cases", "episodes")} | {"schemas": tools}


def _refused(result) -> bool:
    """A clear refusal (True) or a success (False); never a traceback or an unexpected code."""
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code:
        assert result.output.strip(), "a refusal must say why"
        assert "unexpected" not in result.output, result.output  # the bug fallback of cli.common.explain
    return result.exit_code != 0


def assert_kept(before: dict, after: dict, refused: bool, what: str) -> None:
    event(f"{what}: {'refused' if refused else 'accepted'}")  # --hypothesis-show-statistics: both happen
    if refused:
        assert after == before, f"a refused {what} changed the database"
        return
    for name, tools in before["schemas"].items():  # nothing overwritten silently
        assert after["schemas"].get(name) == tools, f"an accepted {what} changed the tools of {name!r}"
    for k in ("skills", "tools", "demonstrations", "eval_cases", "episodes"):
        assert after[k] >= before[k], f"an accepted {what} removed {k}"


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory):
    """The bundled unit_convert skill, a tiny champion (so the daemon serves), one episode to
    give feedback on, and the learning lease held (a generated `learn` line is refused as busy
    rather than starting a run)."""
    from tiny import save_tiny

    src = tmp_path_factory.mktemp("tiny-src")
    save_tiny(src)
    home = unit_home(tmp_path_factory.mktemp("fuzz") / "home")
    ModelStore(home, quiet=True).add_folder(src, "tiny")
    memory = Memory(home)
    memory.record_episode([{"role": "user", "content": "3 km in miles?"}], CALLS, skill="unit_convert")
    lease = acquire(memory.db)
    yield home
    lease.release()
    memory.close()


def _add_pack(home, tmp_path_factory, doc) -> None:
    path = Path(tmp_path_factory.mktemp("p")) / "pack.json"
    path.write_text(json.dumps(doc))
    before = state(home)
    result = cli("skills", "add", str(path), home=home)
    assert_kept(before, state(home), _refused(result), "pack")


@_settings(25)
@given(doc=mutated(_valid_pack()))
def test_malformed_packs(fuzz_home, tmp_path_factory, doc):
    _add_pack(fuzz_home, tmp_path_factory, doc)


def _pack_with_one_malformed(data, key: str, label: str) -> dict:
    """A valid pack with one of its `key` items ("demonstrations" or "eval") mutated, or one more
    made of junk or of a mutated neighbour."""
    pack = _valid_pack()
    i = data.draw(st.integers(0, len(pack[key])), label=label)
    if i == len(pack[key]):
        pack[key].append(data.draw(st.one_of(JUNK, mutated(pack[key][0]))))
        return pack
    return data.draw(mutated(pack, (key, i)))


@_settings(20)
@given(data=st.data())
def test_packs_with_a_malformed_demonstration(fuzz_home, tmp_path_factory, data):
    _add_pack(fuzz_home, tmp_path_factory, _pack_with_one_malformed(data, "demonstrations", "demonstration"))


@_settings(20)
@given(data=st.data())
def test_packs_with_a_malformed_eval_case(fuzz_home, tmp_path_factory, data):
    _add_pack(fuzz_home, tmp_path_factory, _pack_with_one_malformed(data, "eval", "eval case"))


@pytest.fixture(scope="module")
def export_lines(fuzz_home) -> dict[str, list[dict]]:
    """A real export of the fuzz home, by line type: the bases the import test mutates."""
    out = Path(fuzz_home).parent / "export.jsonl"
    assert cli("memory", "export", str(out), home=fuzz_home).exit_code == 0
    by_type: dict[str, list[dict]] = {}
    for line in out.read_text().splitlines():
        rec = json.loads(line)
        by_type.setdefault(rec["type"], []).append(rec)
    assert {"header", "skill", "demonstration", "eval_case"} <= set(by_type)
    again = cli("memory", "import", str(out), home=fuzz_home)  # the unmutated lines are accepted
    assert again.exit_code == 0 and "imported 0 skills" not in again.output, again.output
    return by_type


def _retitled(skill: dict, description: str) -> dict:
    out = json.loads(json.dumps(skill))
    out["tools"][0]["description"] = description
    return out


@_settings(30)
@given(data=st.data())
def test_malformed_jsonl_imports(fuzz_home, export_lines, tmp_path_factory, data):
    unit = [r for r in export_lines["skill"] if r["name"] == "unit_convert"]
    records = [export_lines["header"][0], *unit, *export_lines["demonstration"][:2], *export_lines["eval_case"][:2]]
    targets = ["header", "skill", "skill: other tools", "demonstration", "eval_case", "any"]
    target = data.draw(st.sampled_from(targets), label="target")
    picks = [i for i, r in enumerate(records) if target.split(":")[0] in ("any", r["type"])]
    i = data.draw(st.sampled_from(picks), label="line")
    lines = [json.dumps(r) for r in records]
    if target == "skill: other tools":  # a valid skill line that would change the installed tools
        lines[i] = json.dumps(_retitled(records[i], data.draw(st.text(min_size=1, max_size=8))))
    else:
        lines[i] = json.dumps(data.draw(mutated(records[i])))
    if data.draw(st.booleans(), label="junk line"):
        lines.insert(data.draw(st.integers(0, len(lines))), data.draw(st.text(max_size=12)).replace("\n", " "))
    path = Path(tmp_path_factory.mktemp("j")) / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    before = state(fuzz_home)
    result = cli("memory", "import", str(path), home=fuzz_home)
    assert_kept(before, state(fuzz_home), _refused(result), "import")


def _teach_line(episode_id=1):
    calls = st.one_of(mutated(CALLS), mutated(CALLS, (0,)), mutated(CALLS, (0, "arguments")))
    eid = st.one_of(st.just(episode_id), JUNK)
    return st.fixed_dictionaries({"command": st.just("teach"), "episode_id": eid, "tool_calls": calls})


STDIN_LINES = st.one_of(
    st.text(max_size=20),  # not JSON, mostly
    JUNK.map(json.dumps),  # JSON, not an object
    st.dictionaries(st.sampled_from(["command", "question", "episode_id", "outcome", "tool_calls", "skill"]),
                    JUNK, max_size=3).map(json.dumps),
    st.fixed_dictionaries({"command": st.sampled_from(["good", "bad", "teach", "learn", "status", "nope"])},
                          optional={"episode_id": st.one_of(st.integers(-1, 3), JUNK), "tool_calls": JUNK,
                                    "skill": JUNK, "note": JUNK}).map(json.dumps),
    _teach_line().map(json.dumps),
    st.fixed_dictionaries({"question": st.one_of(st.text(max_size=12), JUNK)},
                          optional={"skill": JUNK}).map(json.dumps),
)


@_settings(24)
@given(line=STDIN_LINES)
def test_malformed_stdin_daemon_lines(fuzz_home, line):
    before = state(fuzz_home)
    result = cli("serve", "--stdin", "--max-new-tokens", "2", home=fuzz_home, input=line.replace("\n", " ") + "\n")
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 0, result.output
    replies = [json.loads(x) for x in result.stdout.splitlines()]
    assert replies[0]["event"] == "ready"
    answered = replies[1:]
    assert len(answered) == (1 if line.replace("\n", " ").strip() else 0), result.stdout
    refused = bool(answered) and set(answered[0]) == {"error"}  # the daemon's refusal: {"error": why}
    if refused:
        assert isinstance(answered[0]["error"], str) and answered[0]["error"].strip()
        assert "Traceback" not in answered[0]["error"]
    assert_kept(before, state(fuzz_home), refused or not answered, "stdin line")
