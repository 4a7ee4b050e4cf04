"""Moving the champion is a compare-and-set in one immediate transaction: of two promotions
judged against the same champion, run at the same moment in two processes, exactly one wins and
the other is told which version won."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memory.models import ChampionMoved, ModelStore

ROOT = Path(__file__).resolve().parents[1]

PROMOTER = """
    import json, os, sys, time
    from memory.models import ChampionMoved, ModelStore
    home, candidate, go = sys.argv[1:4]
    store = ModelStore(home, quiet=True)
    judged = store.champion_name()        # what the gate compared the candidate with
    print("ready", flush=True)
    while not os.path.exists(go):         # both start the move at the same moment
        time.sleep(0.001)
    try:
        store.use(candidate, reason="gate", expected=judged)
        print(json.dumps({"won": candidate}))
    except ChampionMoved as exc:
        print(json.dumps({"lost": candidate, "why": str(exc)}))
"""


def candidate(store: ModelStore, note: str) -> str:
    with store.draft("tiny", notes=note) as draft:
        (draft.path / "model.safetensors").write_bytes(note.encode())
    return draft.version


def test_two_promotions_at_once_exactly_one_wins(tiny_home, tmp_path):
    store = ModelStore(tiny_home, quiet=True)
    a, b = candidate(store, "a"), candidate(store, "b")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(PROMOTER), str(tiny_home), v, str(go)],
                              env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for v in (a, b)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    go.touch()
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    won = [r["won"] for r in results if "won" in r]
    lost = [r for r in results if "lost" in r]
    assert len(won) == 1 and len(lost) == 1, results
    winner, loser = won[0], lost[0]["lost"]
    assert store.champion_name() == winner and {winner, loser} == {a, b}
    assert lost[0]["why"] == (
        f"{loser} was not promoted: it was judged against tiny, but the champion is {winner} now "
        f"(another promotion moved it first); gate {loser} against {winner} again")
    moves = [tuple(r) for r in store.db.execute(
        "SELECT version, previous FROM alias_history ORDER BY id").fetchall()]
    assert moves == [("tiny", None), (winner, "tiny")]  # one move recorded, the loser left nothing
    assert store.rollback().version == "tiny"


def test_compare_and_set_in_one_process(tiny_home):
    store = ModelStore(tiny_home, quiet=True)
    a, b = candidate(store, "a"), candidate(store, "b")
    assert store.use(a, expected="tiny").champion
    with pytest.raises(ChampionMoved, match=f"it was judged against tiny, but the champion is {a} now"):
        store.use(b, expected="tiny")
    assert store.champion_name() == a
    assert store.use(a, expected="tiny").version == a  # already the champion: nothing to move
    assert store.use(b, expected=a).version == b
