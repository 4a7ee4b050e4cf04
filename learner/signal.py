"""How much can the teacher teach? Two numbers per example, measured before any training.

- gold gap: teacher minus student mean log-probability per token of the demonstration itself
  (how much better the demonstration-conditioned teacher knows the answer);
- on-policy KL: forward KL(teacher‖student) per token on the student's own sampled completion,
  the signal on-policy SDFT actually trains on. A large gold gap with a tiny on-policy KL means
  the teacher knows the answer but the student's samples never go where the teacher disagrees.

Also reported: at the first completion token of tool-call demonstrations, how often the
teacher's argmax is the gold token vs. the student's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agent.prompt import PromptFormat
from learner.examples import Example, encode_example


def _completion_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log-softmax over the vocabulary at each completion position: [len(completion), V]."""
    ids = torch.tensor([prompt + completion], device=model.device)
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return F.log_softmax(logits, dim=-1)


def _tool_name_position(tokenizer, ex: Example, gold: list[int]) -> int | None:
    """Index of the completion token where the first call's tool name starts."""
    if not ex.is_tool_call:
        return None
    name = ex.message["tool_calls"][0]["name"]
    start = ex.completion_text.find(f'"name": "{name}')
    if start < 0:
        return None
    start += len('"name": "')
    for k in range(len(gold)):
        if len(tokenizer.decode(gold[: k + 1])) > start:
            return k
    return None


@torch.inference_mode()
def teacher_signal(model, tokenizer, examples: list[Example], template: str = "paper", *,
                   max_new_tokens: int = 64, seed: int = 0) -> dict:
    fmt = PromptFormat(tokenizer)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    gaps, kls, teacher_lp, student_lp = [], [], [], []
    first_teacher, first_student, first_n = 0, 0, 0
    for ex in examples:
        enc = encode_example(ex, fmt, template)
        gold = enc.completion_ids
        s = _completion_logprobs(model, enc.prompt_ids, gold)
        t = _completion_logprobs(model, enc.teacher_prompt_ids, gold)
        target = torch.tensor(gold, device=s.device)
        s_lp = s.gather(1, target[:, None]).mean().item()
        t_lp = t.gather(1, target[:, None]).mean().item()
        gaps.append(t_lp - s_lp)
        teacher_lp.append(t_lp)
        student_lp.append(s_lp)
        k = _tool_name_position(tokenizer, ex, gold)
        if k is not None:  # the decision: the first token of the tool's name
            first_n += 1
            first_teacher += int(t[k].argmax().item() == gold[k])
            first_student += int(s[k].argmax().item() == gold[k])
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        prompt = torch.tensor([enc.prompt_ids], device=model.device)
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                             temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                             eos_token_id=fmt.end_of_turn_id, pad_token_id=tokenizer.pad_token_id)
        sample = out[0, prompt.shape[1]:].tolist()
        if not sample:
            continue
        s = _completion_logprobs(model, enc.prompt_ids, sample)
        t = _completion_logprobs(model, enc.teacher_prompt_ids, sample)
        kls.append((t.exp() * (t - s)).sum(-1).mean().item())
    n = len(examples)
    return {
        "template": template,
        "n": n,
        "gold_logp_student": sum(student_lp) / n,
        "gold_logp_teacher": sum(teacher_lp) / n,
        "gold_gap": sum(gaps) / n,
        "onpolicy_forward_kl": sum(kls) / max(len(kls), 1),
        "tool_name_argmax_teacher": f"{first_teacher}/{first_n}",
        "tool_name_argmax_student": f"{first_student}/{first_n}",
    }
