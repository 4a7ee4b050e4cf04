"""The teacher's context: the student's conversation with the demonstration put in view.

A template is a function (example, demonstration_text) → messages. The teacher's prompt is
those messages rendered by the same PromptFormat as the student's, with the same tools, and it
is never truncated. The teacher then scores the student's completion tokens after its own prompt.

- "paper": the reference code's user message, in place of the last user turn (so for a
  multi-turn prefix, the template sits in the last user turn and the tool turns after it stay):
  "\\n{question}\\n\\nThis is an example for a response to the question:\\n{demonstration}\\n\\n
  Now answer with a response of your own, including the thinking process.\\n"
- "previous_turn": the same conversation asked and answered with the demonstration as an earlier
  exchange, then asked again.

Register another with `register_template(name, fn)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.prompt import PromptFormat
    from learner.examples import Example

PAPER_TEMPLATE = (
    "\n{question}\n\nThis is an example for a response to the question:\n{demonstration}\n\n"
    "Now answer with a response of your own, including the thinking process.\n"
)

Template = Callable[["Example", str], list[dict]]


def paper(ex: Example, demonstration: str) -> list[dict]:
    msgs = [dict(m) for m in ex.messages]
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    if not users:
        raise ValueError(f"demonstration {ex.demo_id}: no user turn to put the teacher template in")
    last = users[-1]
    msgs[last]["content"] = PAPER_TEMPLATE.format(question=msgs[last].get("content") or "",
                                                  demonstration=demonstration)
    return msgs


def previous_turn(ex: Example, demonstration: str) -> list[dict]:
    system = [m for m in ex.messages[:1] if m["role"] == "system"]
    rest = ex.messages[len(system):]
    return [*system, *rest, {"role": "assistant", **ex.message}, *rest]


TEMPLATES: dict[str, Template] = {"paper": paper, "previous_turn": previous_turn}


def register_template(name: str, fn: Template) -> None:
    TEMPLATES[name] = fn


def teacher_messages(ex: Example, fmt: PromptFormat, template: str = "paper") -> list[dict]:
    """The teacher's conversation for `ex` (the demonstration shown without its end-of-turn
    token, which inside a user turn would end that turn early)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown teacher template {template!r} (known: {', '.join(TEMPLATES)})")
    return TEMPLATES[template](ex, fmt.strip_special(ex.completion_text))
