"""Greedy generations of one model, memoised for the length of one evaluation.

Several suites read the same answers: open-answer health and drift against the champion both
need the model's greedy answers to the everyday prompts. Generating once per (prompt, budget)
and handing the same tokens to each keeps the gate's cost to one decode per prompt.
"""

from __future__ import annotations

from agent.prompt import PromptFormat
from skills.generation import generate_batch


class Generations:
    """`ids(prompts, budget)`: generate_batch for the prompts not seen yet, in one batched call."""

    def __init__(self, model, fmt: PromptFormat, batch_size: int = 8):
        self.model, self.fmt, self.batch_size = model, fmt, batch_size
        self._seen: dict[tuple[tuple[int, ...], int], list[int]] = {}

    def ids(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        keys = [(tuple(p), max_new_tokens) for p in prompts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._seen))
        if todo:
            out = generate_batch(self.model, self.fmt, [list(k[0]) for k in todo],
                                 max_new_tokens=max_new_tokens, batch_size=self.batch_size)
            self._seen.update(zip(todo, out, strict=True))
        return [self._seen[k] for k in keys]

    def texts(self, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
        return [self.fmt.tokenizer.decode(i, skip_special_tokens=True) for i in self.ids(prompts, max_new_tokens)]


def greedy_texts(model, fmt: PromptFormat, prompts: list[list[int]], max_new_tokens: int,
                 batch_size: int, generations: Generations | None = None) -> list[str]:
    gen = generations if generations is not None and generations.model is model else Generations(model, fmt, batch_size)
    return gen.texts(prompts, max_new_tokens)
