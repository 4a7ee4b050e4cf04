"""What the HTTP server costs on top of raw generation, and what concurrency does to it.

    SDFT_AGENT_HOME=/work/homes/server flock /tmp/sdft-heavy.lock \
        .venv/bin/python benchmarks/http_serving.py                 # the champion of that home

The same prompts (held-out questions of the bundled skills, the skill's tools offered,
tool_choice auto, greedy, constrained decoding) go through
- raw: agent.decode.complete on the ids the server would send, one request at a time (batch 1),
  and all of a level's requests as one batch (what batching could give a server);
- http: the real server (uvicorn on a loopback port, the official openai client) at 1, 4 and 8
  concurrent clients, every request recorded as an episode.
Per arm: p50/p95 latency per request and requests/s. Overhead at 1 client = median http latency /
median raw latency - 1, paired by prompt (the replies are checked identical to raw first). After
the run every response id must resolve to exactly one episode holding its own question.
Writes benchmarks/results/http_serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
from rich.console import Console
from rich.table import Table

from agent.decode import Request, complete
from agent.loading import load
from agent.prompt import PromptFormat
from agent.server import Engine, create_app, running
from memory.models import ModelStore
from memory.store import Memory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "http_serving.json"
SKILLS = ("date_math", "unit_convert")


def prompts(n: int) -> list[tuple[str, list[dict]]]:
    """(question, tool schemas) pairs, alternating skills."""
    packs = [json.loads((ROOT / "skills" / "packs" / f"{s}.json").read_text()) for s in SKILLS]
    out = []
    for i in range(n):
        pack = packs[i % len(packs)]
        case = pack["eval"][(i // len(packs)) % len(pack["eval"])]
        out.append((case["messages"][-1]["content"], pack["tools"]))
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--clients", default="1,4,8")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    home = Path(os.environ.get("SDFT_AGENT_HOME") or ModelStore(quiet=True).home)
    champion = ModelStore(home, quiet=True).resolve().version
    work = [(q, tools) for q, tools in prompts(args.requests)]
    console = Console()

    model, tok = load(champion, home=home)
    fmt = PromptFormat(tok)

    def raw_requests(batch):
        return [Request(prompt=fmt.encode([{"role": "user", "content": q}], tools), tools=tools,
                        tool_choice="auto", max_new_tokens=args.max_tokens) for q, tools in batch]

    # Raw generation runs on one worker thread, as the server's does: on a busy small machine
    # torch in the main thread was measured many times slower than in a worker thread.
    worker = ThreadPoolExecutor(1)

    def raw(batch, size):
        t = time.perf_counter()
        done = complete(model, fmt, raw_requests(batch), batch_size=size)
        return time.perf_counter() - t, done

    worker.submit(raw, work[:1], 1).result()  # warm up (grammar compile, allocator)
    raw_lat, raw_out = [], []
    t0 = time.perf_counter()
    for item in work:
        seconds, (c,) = worker.submit(raw, [item], 1).result()
        raw_lat.append(seconds)
        raw_out.append(fmt.parse(c.text, item[1]))
    raw_wall = time.perf_counter() - t0
    rows = [{"arm": "raw", "clients": 1, "p50_s": statistics.median(raw_lat), "p95_s": pct(raw_lat, 0.95),
             "req_per_s": len(work) / raw_wall}]
    for c in levels[1:]:
        t = time.perf_counter()
        for k in range(0, len(work), c):
            worker.submit(raw, work[k:k + c], c).result()
        wall = time.perf_counter() - t
        rows.append({"arm": f"raw batch {c}", "clients": c, "p50_s": wall / (len(work) / c),
                     "p95_s": None, "req_per_s": len(work) / wall})
    worker.shutdown()

    with tempfile.TemporaryDirectory() as tmp:
        # The server's memory is a scratch copy: the benchmark's episodes must not become
        # anyone's demonstrations. The model store is the real one (read only here).
        mem_home = Path(tmp) / "home"
        mem_home.mkdir()
        (mem_home / "models").symlink_to(home / "models")
        store = ModelStore(mem_home, quiet=True)
        src = ModelStore(home, quiet=True)
        for table in ("model_versions", "aliases"):
            for row in src.db[table].rows:
                store.db[table].insert(row, replace=True)
        memory = Memory(mem_home)
        for s in SKILLS:
            pack = json.loads((ROOT / "skills" / "packs" / f"{s}.json").read_text())
            memory.add_skill(pack["name"], pack["description"], pack["tools"])
        engine = Engine(mem_home, max_new_tokens=args.max_tokens)
        app = create_app(memory, engine, api_key="")
        sent: dict[str, str] = {}
        with running(app) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="-", max_retries=0, timeout=600)

            def one(item):
                q, tools = item
                t = time.perf_counter()
                r = client.chat.completions.create(
                    model="sdft-agent", messages=[{"role": "user", "content": q}],
                    tools=[{"type": "function", "function": f} for f in tools], tool_choice="auto",
                    max_tokens=args.max_tokens)
                return time.perf_counter() - t, q, r

            one(work[0])  # warm up: loads the champion into the server
            replies = {}
            for c in levels:
                t = time.perf_counter()
                with ThreadPoolExecutor(c) as pool:
                    done = list(pool.map(one, work))
                wall = time.perf_counter() - t
                lat = [d[0] for d in done]
                for _, q, r in done:
                    sent[r.id] = q
                replies[c] = done
                rows.append({"arm": "http", "clients": c, "p50_s": statistics.median(lat),
                             "p95_s": pct(lat, 0.95), "req_per_s": len(work) / wall})
        engine.close()
        same = 0
        for (_, _q, r), parsed in zip(replies[levels[0]], raw_out, strict=True):
            msg = r.choices[0].message
            calls = [(tc.function.name, json.loads(tc.function.arguments)) for tc in msg.tool_calls or []]
            same += calls == [(c["name"], c["arguments"]) for c in parsed.calls]
        lost, wrong = 0, 0
        with memory.snapshot() as db:
            for rid, q in sent.items():
                found = db.execute("SELECT messages FROM episodes WHERE json_extract(meta, '$.response_id') = ?",
                                   [rid]).fetchall()
                if len(found) != 1:
                    lost += 1
                elif json.loads(found[0][0])[0]["content"] != q:
                    wrong += 1
        memory.close()

    http1 = next(r for r in rows if r["arm"] == "http" and r["clients"] == 1)
    overhead = http1["p50_s"] / rows[0]["p50_s"] - 1
    table = Table(title=f"HTTP serving vs raw generation ({champion}, {len(work)} requests per level, "
                        f"{args.max_tokens} new tokens max)")
    for col in ("arm", "clients", "p50 latency (s)", "p95 latency (s)", "requests/s"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["arm"], str(r["clients"]), f"{r['p50_s']:.2f}",
                      "-" if r["p95_s"] is None else f"{r['p95_s']:.2f}", f"{r['req_per_s']:.2f}")
    console.print(table)
    console.print(f"server overhead at 1 client (p50 vs raw p50): {overhead:+.1%}; replies identical to raw: "
                  f"{same}/{len(work)}; episodes lost: {lost}, misattributed: {wrong} of {len(sent)}")
    RESULTS.write_text(json.dumps({
        "model": champion, "requests_per_level": len(work), "max_new_tokens": args.max_tokens,
        "rows": rows, "overhead_1_client": overhead, "identical_to_raw": same, "episodes": len(sent),
        "episodes_lost": lost, "episodes_misattributed": wrong,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
