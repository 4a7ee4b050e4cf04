"""The training loop is DDP-ready: two CPU processes (gloo) under torchrun train two steps on
different examples and end with identical weights."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    sys.path.insert(0, {tests!r})
    from accelerate import Accelerator
    from agent.prompt import PromptFormat
    from learner.config import LearnConfig
    from learner.examples import examples_from_demonstrations
    from learner.lora import adapter_state
    from learner.train import train
    from tiny import build_tiny_model, build_tiny_tokenizer

    out = Path(sys.argv[1])
    acc = Accelerator(cpu=True)
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok)
    demos = [{{"id": i, "skill": "u", "messages": [{{"role": "user", "content": f"Convert {{i}} miles to km."}}],
              "tool_calls": [{{"name": "convert_units", "arguments": {{"value": i}}}}], "content": None}}
             for i in range(8)]
    tool = {{"name": "convert_units", "description": "Convert a value between units",
             "parameters": {{"type": "object", "properties": {{"value": {{"type": "number"}}}}, "required": ["value"]}}}}
    examples = examples_from_demonstrations(demos, PromptFormat(tok), {{"u": [tool]}})  # long shared prefix
    cfg = LearnConfig(max_steps=2, batch_size=2, grad_accum=2, max_new_tokens=8, lr=1e-2, warmup_ratio=0.0)
    result = train(model, tok, examples, cfg, accelerator=acc, progress=False)
    torch.save({{"student": adapter_state(result.model, "student"),
                 "teacher": adapter_state(result.model, "teacher")}}, out / f"rank{{acc.process_index}}.pt")
    from learner.batch import shared_prefix_len
    shared = shared_prefix_len([PromptFormat(tok).encode(e.messages, e.tools) for e in examples[:2]])
    (out / f"rank{{acc.process_index}}.json").write_text(json.dumps(
        {{"world": acc.num_processes, "backend": str(acc.state.backend), "history": result.history,
          "shared_prefix": shared}}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
         f"--master_port={_free_port()}", str(script), str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(i["world"] == 2 and i["backend"] == "gloo" for i in info)
    assert info[0]["shared_prefix"] > 100  # the two-pass (shared prefix, then rows) forward under DDP
    assert info[0]["history"] == [{**h, **{k: info[0]["history"][n][k] for k in ("step_s", "targets_s", "train_s", "tokens_per_s")}}
                                  for n, h in enumerate(info[1]["history"])]  # reduced metrics agree
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for kind in ("student", "teacher"):
        assert a[kind].keys() == b[kind].keys()
        for k in a[kind]:
            assert torch.equal(a[kind][k], b[kind][k]), (kind, k)
    # and training happened: LoRA B starts at zero
    assert any(v.abs().max() > 0 for k, v in a["student"].items() if "lora_B" in k)
