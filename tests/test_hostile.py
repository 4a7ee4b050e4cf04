"""Hostile input and broken state, one test per row of issue 16's table: a clear message of one
or two lines, a non-zero exit code, no traceback, nothing overwritten."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from memory.home import LooseHomeWarning
from memory.lease import acquire
from memory.models import ModelStore
from memory.store import Memory

ROOT = Path(__file__).parents[1]
runner = CliRunner()


def cli(*args, home=None, input=None):
    extra = ["--home", str(home)] if home is not None else []
    return runner.invoke(app, [*args, *extra], input=input)


def clean_error(result, code: int = 1, max_lines: int = 2) -> str:
    """The result is a refusal: exit `code`, no traceback, at most `max_lines` lines."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert 1 <= len(lines) <= max_lines, result.output
    return result.output


def unit_home(home: Path) -> Path:
    assert cli("skills", "add", "unit_convert", home=home).exit_code == 0
    return home


def counts(home: Path) -> dict:
    with Memory(home) as m:
        s = m.stats()
        assert m.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tools = m.tools_for("unit_convert") if m.get_skill("unit_convert") else []
    return {k: s[k] for k in ("skills", "tools", "demonstrations", "eval_cases", "episodes")} | {"schemas": tools}


# ---- memory.db corrupted --------------------------------------------------------------------


def _corrupt(path: Path, offset: int, size: int | None = None) -> None:
    size = size if size is not None else path.stat().st_size - offset
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))


def _table_page(db_path: Path, table: str) -> tuple[int, int]:
    con = sqlite3.connect(db_path)
    page_size = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", [table]).fetchone()[0]
    con.close()
    return (root - 1) * page_size, page_size


@pytest.mark.parametrize("where", ["header", "every page after the first", "one table's pages"])
def test_a_corrupt_database_names_the_file_and_the_recovery(home, where):
    db = unit_home(home) / "memory.db"
    if where == "header":
        _corrupt(db, 0, 100)
    elif where == "every page after the first":
        _corrupt(db, 4096)
    else:  # the schema reads fine, the first query of the table fails
        offset, size = _table_page(db, "demonstrations")
        _corrupt(db, offset, size)
    for command in (["memory", "stats"], ["skills", "list"], ["memory", "search", "convert km"]):
        out = clean_error(cli(*command, home=home))
        assert f"{db}" in out and "is damaged" in out
        assert ".recover" in out and "memory export" in out


def test_debug_shows_the_traceback_the_plain_message_hides(home):
    db = unit_home(home) / "memory.db"
    _corrupt(db, 0, 100)
    env = {**os.environ, "SDFT_AGENT_HOME": str(home)}
    plain = subprocess.run([sys.executable, "-m", "cli.main", "memory", "stats"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    debug = subprocess.run([sys.executable, "-m", "cli.main", "--debug", "memory", "stats"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr and "is damaged" in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DatabaseError" in debug.stderr


# ---- the home is a file ---------------------------------------------------------------------


def test_a_home_that_is_a_file_is_named_with_the_fix(tmp_path):
    file = tmp_path / "home"
    file.write_text("not a folder")
    for command in (["skills", "list"], ["memory", "stats"], ["models", "list"]):
        out = clean_error(cli(*command, home=file))
        assert f"the home {file} is a file" in out and "--home" in out and "SDFT_AGENT_HOME" in out
    out = clean_error(cli("skills", "list", home=file / "inside"))
    assert f"{file} is a file" in out
    assert file.read_text() == "not a folder"


# ---- skills add -----------------------------------------------------------------------------


def test_skills_add_of_a_folder_says_it_is_a_folder(home, tmp_path):
    folder = tmp_path / "packs"
    folder.mkdir()
    (folder / "mine.json").write_text("{}")
    out = clean_error(cli("skills", "add", str(folder), home=home))
    assert f"{folder} is a folder" in out and "mine.json" in out
    out = clean_error(cli("skills", "add", str(tmp_path / "missing.json"), home=home))
    assert "no file" in out and "missing.json" in out


def test_an_invalid_pack_is_one_error_and_its_list_without_a_stray_exit_code(home, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "description": "d", "tools": [], "demonstrations": [], "eval": []}))
    result = cli("skills", "add", str(bad), home=home)
    out = clean_error(result, max_lines=3)
    assert out.count("error:") == 1 and "error: 1" not in out
    assert "is not a valid skill pack" in out


def _foreign_pack(tmp_path: Path) -> Path:
    """A pack that reuses the bundled skill's name and tool name with another schema."""
    pack = {"name": "unit_convert", "description": "weather", "tools": [{
        "name": "convert_units", "description": "weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "demonstrations": [{"messages": [{"role": "user", "content": "weather in Paris"}],
                            "tool_calls": [{"name": "convert_units", "arguments": {"city": "Paris"}}]}],
        "eval": []}
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(pack))
    return path


def _extended_pack(tmp_path: Path) -> Path:
    """The bundled pack with one more optional parameter: every stored item still validates."""
    pack = json.loads((ROOT / "skills/packs/unit_convert.json").read_text())
    pack["tools"][0]["parameters"]["properties"]["precision"] = {"type": "integer", "description": "digits"}
    pack["demonstrations"], pack["eval"] = pack["demonstrations"][:2], pack["eval"][:2]
    path = tmp_path / "extended.json"
    path.write_text(json.dumps(pack))
    return path


def test_a_pack_whose_skill_exists_with_other_tools_is_refused_and_changes_nothing(home, tmp_path):
    before = counts(unit_home(home))
    out = clean_error(cli("skills", "add", str(_foreign_pack(tmp_path)), home=home))
    assert "'unit_convert' is installed with other tools" in out and "--replace" in out
    assert counts(home) == before
    # the same pack again is not a conflict: its demonstrations are known already
    result = cli("skills", "add", "unit_convert", home=home)
    assert result.exit_code == 0 and "0 new demonstration(s) (40 already known)" in result.output
    assert counts(home)["demonstrations"] == before["demonstrations"]


def test_replace_that_would_break_stored_items_names_them_and_changes_nothing(home, tmp_path):
    before = counts(unit_home(home))
    result = cli("skills", "add", "--replace", str(_foreign_pack(tmp_path)), home=home)
    out = clean_error(result, max_lines=13)
    assert "--replace refused: 80 stored item(s)" in out  # 40 demonstrations + 40 eval cases
    assert "demonstration 1:" in out and "city" in out and "and 70 more" in out
    assert counts(home) == before


def test_replace_that_keeps_every_item_valid_swaps_the_tools_and_unbinds_the_implementation(home, tmp_path):
    from cli.agent_cmd import skill_tools
    from skills.tools.unit_convert import TOOLS

    unit_home(home)
    with Memory(home) as m:
        assert skill_tools(m, "unit_convert")[0][1] is TOOLS["convert_units"]
    result = cli("skills", "add", "--replace", str(_extended_pack(tmp_path)), home=home)
    assert result.exit_code == 0 and "replaced the tools" in result.output
    with Memory(home) as m:
        [(schema, impl)] = skill_tools(m, "unit_convert")
        assert "precision" in schema["parameters"]["properties"]
        assert impl is None  # the implementation was written for the bundled schema, not this one
        assert len(m.demonstrations("unit_convert")) == 40


def test_memory_import_of_a_skill_with_other_tools_is_refused_and_changes_nothing(home, tmp_path):
    """The same silent replacement as `skills add`, through the other door: a JSONL skill line."""
    before = counts(unit_home(home))
    foreign = json.loads(_foreign_pack(tmp_path).read_text())
    header = {"type": "header", "format": "sdft-agent-memory", "version": 1}
    skill = {"type": "skill", "name": "unit_convert", "description": "weather", "tools": foreign["tools"]}
    demo = {"type": "demonstration", "skill": "unit_convert", **foreign["demonstrations"][0]}
    file = tmp_path / "foreign.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in (header, skill, demo)))
    out = clean_error(cli("memory", "import", str(file), home=home))
    assert "foreign.jsonl:2: skill 'unit_convert' is installed with other tools" in out
    assert "nothing was imported" in out and "--replace" in out
    assert counts(home) == before
    # an export of the same home imports back: the same tools are not a conflict
    export = tmp_path / "same.jsonl"
    assert cli("memory", "export", str(export), home=home).exit_code == 0
    result = cli("memory", "import", str(export), home=home)
    assert result.exit_code == 0 and "40 already present" in result.output, result.output
    assert counts(home) == before
    # the Python API refuses it too, inside the import's own transaction (no race with the CLI's check)
    from memory.store import Memory
    from memory.validate import ValidationError

    with Memory(home) as mem, pytest.raises(ValidationError, match=r"foreign.jsonl:2: skill 'unit_convert' is installed"):
        mem.import_jsonl(file)
    assert counts(home) == before


def test_memory_import_of_one_new_skill_listed_twice_with_other_tools_is_refused(home, tmp_path):
    before = counts(unit_home(home))
    foreign = json.loads(_foreign_pack(tmp_path).read_text())
    header = {"type": "header", "format": "sdft-agent-memory", "version": 1}
    first = {"type": "skill", "name": "weather2", "description": "weather", "tools": foreign["tools"]}
    other = {**first, "tools": [{**foreign["tools"][0], "description": "something else"}]}
    file = tmp_path / "twice.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in (header, first, other)))
    out = clean_error(cli("memory", "import", str(file), home=home))
    assert "twice.jsonl:3: skill 'weather2' has other tools on line 2" in out and "nothing was imported" in out
    assert counts(home) == before


# ---- models add -----------------------------------------------------------------------------


def _model_folder(tmp_path: Path, name: str, *, tokenizer=True, template=True, junk_weights=False) -> Path:
    from tiny import save_tiny

    folder = tmp_path / name
    _, tok = save_tiny(folder)
    if not tokenizer:
        for f in folder.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                f.unlink()
    elif not template:
        tok.chat_template = None
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        tok.save_pretrained(folder)
        (folder / "chat_template.jinja").unlink(missing_ok=True)
        cfg = json.loads((folder / "tokenizer_config.json").read_text())
        cfg.pop("chat_template", None)
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    if junk_weights:
        (folder / "model.safetensors").write_bytes(os.urandom(4096))
    return folder


@pytest.mark.parametrize("broken, phrase", [
    ({"tokenizer": False, "junk_weights": True}, "has no usable tokenizer"),
    ({"junk_weights": True}, "model.safetensors is not a readable safetensors file"),
    ({"template": False}, "the tokenizer has no chat template"),
])
def test_models_add_refuses_a_folder_it_cannot_serve(home, tmp_path, broken, phrase):
    folder = _model_folder(tmp_path, "mine", **broken)
    out = clean_error(cli("models", "add", str(folder), "--name", "mine", home=home))
    assert out.startswith(f"error: not added: {folder}") and phrase in out
    store = ModelStore(home, quiet=True)
    assert store.versions() == [] and store.champion() is None
    assert not (home / "models" / "base" / "mine").exists()
    assert list((home / "models").glob(".tmp-*")) == []


def test_models_add_of_a_servable_folder_registers_it(home, tmp_path):
    result = cli("models", "add", str(_model_folder(tmp_path, "mine")), "--name", "mine", home=home)
    assert result.exit_code == 0 and "champion" in result.output
    ModelStore(home, quiet=True).verify("mine")


# ---- learn --now while busy -----------------------------------------------------------------


def test_learn_now_while_another_run_holds_the_lease_exits_75_with_one_message(home):
    with Memory(home) as m:
        lease = acquire(m.db)
        try:
            result = cli("learn", "--now", home=home)
        finally:
            lease.release()
    out = clean_error(result, code=75, max_lines=1)
    assert out.count("already in progress") == 1 and "nothing was learned" in out
    with Memory(home) as m:
        assert m.runs() == []


# ---- a private home -------------------------------------------------------------------------


def _modes(root: Path) -> tuple[set[str], set[str]]:
    dirs, files = {f"{stat.S_IMODE(root.stat().st_mode):o}"}, set()
    for p in root.rglob("*"):
        (dirs if p.is_dir() else files).add(f"{stat.S_IMODE(p.stat().st_mode):o}")
    return dirs, files


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_a_new_home_is_private_whatever_the_umask_in_process(tmp_path, umask):
    from tiny import save_tiny

    save_tiny(tmp_path / "src")
    home = tmp_path / "new-home"
    old = os.umask(umask)
    try:
        with Memory(home) as m:
            m.add_skill("s", "d", [])
            assert (home / "memory.db-wal").exists() and (home / "memory.db-shm").exists()
            ModelStore(home, quiet=True).add_folder(tmp_path / "src", "tiny")
            dirs, files = _modes(home)
    finally:
        os.umask(old)
    assert dirs == {"700"} and files == {"600"}


def test_the_command_line_keeps_the_home_private_under_umask_000(tmp_path):
    from tiny import save_tiny

    save_tiny(tmp_path / "src")
    home = tmp_path / "h"
    env = {**os.environ, "SDFT_AGENT_HOME": str(home)}
    for args in (["models", "add", str(tmp_path / "src"), "--name", "tiny"], ["skills", "add", "unit_convert"],
                 ["memory", "export", str(home / "export.jsonl")]):
        proc = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, preexec_fn=lambda: os.umask(0), timeout=120)
        assert proc.returncode == 0, proc.stderr
    dirs, files = _modes(home)
    assert dirs == {"700"} and files == {"600"}


def test_an_existing_loose_home_gets_one_warning_naming_the_fix(tmp_path):
    home = tmp_path / "loose"
    home.mkdir()
    os.chmod(home, 0o755)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Memory(home).close()
        Memory(home).close()
    loose = [w for w in caught if issubclass(w.category, LooseHomeWarning)]
    assert len(loose) == 1 and f"chmod 700 {home}" in str(loose[0].message)
    assert stat.S_IMODE(home.stat().st_mode) == 0o755  # the user's folder: warned about, not changed
    other = tmp_path / "loose2"
    other.mkdir()
    os.chmod(other, 0o750)
    result = cli("memory", "stats", home=other)
    assert result.exit_code == 0 and f"warning: the home {other} is open to other users (mode 750)" in result.output


# ---- a home copied or moved -----------------------------------------------------------------


def test_report_paths_are_stored_relative_and_follow_a_moved_home(tmp_path):
    home = tmp_path / "a"
    with Memory(home) as m:
        run = m.start_run("gate", {})
        report = home / "reports" / "run-0001" / "report.md"
        report.parent.mkdir(parents=True)
        report.write_text("# report\n")
        m.add_gate_report(run, "block", {"report": str(report)}, str(report))
        raw = m.db.execute("SELECT path, summary FROM gate_reports").fetchone()
    assert raw[0] == "reports/run-0001/report.md" and json.loads(raw[1])["report"] == "reports/run-0001/report.md"
    moved = tmp_path / "b"
    shutil.move(home, moved)
    with Memory(moved) as m:
        [rec] = m.gate_reports()
    assert rec["path"] == str(moved / "reports/run-0001/report.md") and Path(rec["path"]).read_text() == "# report\n"
    assert rec["summary"]["report"] == rec["path"]


def test_no_absolute_path_into_the_home_is_left_in_the_database_after_a_run(tiny_home):
    from test_learn_run import PACK

    from learner.config import LearnConfig
    from learner.gate import GateConfig
    from learner.run import learn_now
    from skills.install import install_pack
    from skills.pack import SkillPack

    with Memory(tiny_home) as m:
        install_pack(m, SkillPack.from_dict(PACK))
    learn_now(tiny_home, LearnConfig(max_steps=1, batch_size=2, max_new_tokens=4),
              gate_config=GateConfig(probe_sets=("drift",), fetch_probes=False, max_new_tokens=8), in_process=True)
    home = str(Path(tiny_home).resolve())
    con = sqlite3.connect(Path(tiny_home) / "memory.db")
    leaks = []
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '%fts%'"):
        for row in con.execute(f"SELECT * FROM [{table}]"):
            leaks += [(table, v) for v in row if isinstance(v, str) and home in v and not v.startswith("imported from")]
    con.close()
    assert leaks == []


# ---- --version, progress bars, NO_COLOR -----------------------------------------------------


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"sdft-agent {version('sdft-agent')}"


def _env(extra) -> dict:
    """This environment without the switches an in-process command set, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    return {**env, **(extra or {})}


def _run_cli(args, env=None):
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=_env(env),
                          capture_output=True, timeout=180)


def _on_a_terminal(args, env=None) -> bytes:
    """Run with stderr on a pseudo-terminal; what it wrote there."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 0-column terminal shows no bar
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=_env(env),
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=180)
    os.close(master)
    assert proc.returncode == 0, out
    return out


BARS = (b"Loading weights", b"sha256", b"%|")


def test_progress_bars_only_on_a_terminal_and_never_with_quiet(tmp_path):
    from tiny import save_tiny

    save_tiny(tmp_path / "src")
    home = tmp_path / "h"
    env = {"SDFT_AGENT_HOME": str(home)}
    # piped: `models add` hashes every file and loads the weights (both places a bar can come
    # from); a piped `ask` loads through agent.loading, as the LangChain test below does
    piped = _run_cli(["models", "add", str(tmp_path / "src"), "--name", "tiny"], env)
    assert piped.returncode == 0 and not any(b in piped.stderr for b in BARS), piped.stderr
    # a person watching sees the bars, unless --quiet
    assert b"Loading weights" in _on_a_terminal(["ask", "hi", "--max-new-tokens", "2"], env)
    assert not any(b in _on_a_terminal(["--quiet", "ask", "hi", "--max-new-tokens", "2"], env) for b in BARS)


LANGCHAIN_USER = """
import sys
from agent.chat_model import LocalChatModel
print(LocalChatModel(home=sys.argv[1]).invoke("hi").content is not None)
"""


def test_the_langchain_model_shows_no_progress_bar_when_stderr_is_piped(tiny_home):
    proc = subprocess.run([sys.executable, "-c", LANGCHAIN_USER, str(tiny_home)], cwd=ROOT, env=_env(None),
                          capture_output=True, timeout=180)
    assert proc.returncode == 0 and proc.stdout.strip() == b"True", proc.stderr
    assert not any(b in proc.stderr for b in BARS), proc.stderr


def test_no_color_is_honoured(tmp_path):
    file = tmp_path / "file-home"
    file.write_text("x")
    coloured = _run_cli(["skills", "list", "--home", str(file)], {"FORCE_COLOR": "1"})
    plain = _run_cli(["skills", "list", "--home", str(file)], {"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert coloured.returncode == plain.returncode == 1
    assert b"\x1b[1;31merror:" in coloured.stderr
    assert b"error:" in plain.stderr and b"31m" not in plain.stderr


# ---- serve --stdin: a line that is not JSON -------------------------------------------------


def test_serve_says_a_line_is_not_json_and_keeps_serving(tiny_home):
    result = cli("serve", "--stdin", home=tiny_home, input='hello there\n[1, 2]\n{"command": "status"}\n')
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["event"] == "ready"
    assert lines[1]["error"].startswith("the line is not JSON") and "one JSON object per line" in lines[1]["error"]
    assert lines[2] == {"error": "each line must be a JSON object"}
    assert lines[3]["champion"] == "tiny"
