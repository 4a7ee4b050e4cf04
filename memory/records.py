"""The typed records everything passes around, and the ONE place their rules live
(docs/ARCHITECTURE.md, "Data model").

    Message, ToolCall          a conversation in the project's message vocabulary
    ToolSchema, Skill          a tool in the flat OpenAI function form; a skill and its tools
    Demonstration              a prompt and the assistant turn to learn after it
    ExpectedCall, EvalCase     a held-out case and its BFCL-style possible answers
    Episode                    one conversation the agent had, naming the turn it would teach
    SkillPack                  the file a user hands the agent

Records are validated once, at the edge (the store, the pack loader, the importers, the prompt
format, the HTTP server), with `Record.parse`, which raises memory.validate.ValidationError with
one line per problem. Rules that need to know a skill's tools (is this call one of them? do its
arguments fit?) read them from the validation context: `Demonstration.parse(d, "demonstration",
skill="weather", tools={name: schema})`; without tools those checks are skipped.

Longer than our usual module on purpose: every rule about what the project accepts is here and
nowhere else, so there is one place to read them and one set of error messages.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticError
from pydantic_core import PydanticCustomError
from typing_extensions import Self

from memory.toolschema import ToolSchemaError, argument_errors, check_tool_schema, function_schema
from memory.validate import (
    MAX_DEMO_BYTES,
    MAX_EPISODE_BYTES,
    MAX_MESSAGES,
    MAX_TEXT_CHARS,
    MAX_TOOL_CALLS,
    OUTCOMES,
    ROLES,
    RULE,
    SOURCES,
    ValidationError,
    dumps,
    lines,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Role = Literal["system", "user", "assistant", "tool"]
Outcome = Literal["success", "failure", "unknown"]
Source = Literal["live", "taught", "imported"]
assert ROLES == Role.__args__ and OUTCOMES == Outcome.__args__ and SOURCES == Source.__args__  # type: ignore[attr-defined]


def problem(*found: tuple[str, str], up: int = 0) -> PydanticCustomError:
    """Our own rule's findings as one pydantic error: (path below the field, message) pairs;
    `up` moves the path to the record holding the field (for a rule about the whole record)."""
    return PydanticCustomError(RULE, "; ".join(m for _, m in found), {"problems": list(found), "up": up})


def _text(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_TEXT_CHARS:
        raise problem(("", f"{len(value)} characters, the limit is {MAX_TEXT_CHARS}; shorten it"))
    return value


def _context(info: ValidationInfo) -> dict:
    return info.context if isinstance(info.context, dict) else {}


def _some(kind: str):
    """A before-check: anything but a list is refused in our words (pydantic's would say less)."""
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise problem(("", f"expected a list of {kind}, got {type(value).__name__}"))
        return value
    return check


class Record(BaseModel):
    """Strict (no "3" → 3), closed (an unknown field is an error) and JSON-shaped."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @classmethod
    def parse(cls, data: Any, where: str = "", **context: Any) -> Self:
        """Validate `data`; raise ValidationError listing every problem, each under `where`."""
        try:
            return cls.model_validate(data, context=context)
        except PydanticError as exc:
            raise ValidationError(lines(exc, where, cls, root=cls._root())) from None

    @classmethod
    def _root(cls) -> str:
        return cls.__name__.lower()

    def dump(self) -> dict:
        """Back to plain JSON data, with only the fields that were given."""
        return self.model_dump(mode="json", exclude_unset=True)


# ---------------------------------------------------------------- conversations


class ToolCall(Record):
    name: str
    arguments: dict[str, Any]
    id: str | None = None  # per conversation; demonstrations drop it

    @field_validator("name")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():
            raise problem(("", "a non-empty string is required"))
        return v

    @field_validator("arguments", mode="before")
    @classmethod
    def _object(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            hint = " (decode it with json.loads first)" if isinstance(v, str) else ""
            raise problem(("", f"expected a JSON object, got {type(v).__name__}{hint}"))
        return v

    def plain(self) -> dict:
        """What a demonstration teaches: name and arguments."""
        return {"name": self.name, "arguments": self.arguments}


def _calls(value: Any) -> Any:
    value = [] if value is None else _some("tool calls")(value)
    if len(value) > MAX_TOOL_CALLS:
        raise problem(("", f"{len(value)} tool calls, the limit is {MAX_TOOL_CALLS}"))
    return value


ToolCalls = Annotated[list[ToolCall], BeforeValidator(_calls)]


class Message(Record):
    role: Role
    content: str | None = None
    tool_calls: list[ToolCall] | None = None  # assistant only
    name: str | None = None  # tool only (the tool that answered)
    tool_call_id: str | None = None

    @field_validator("content", "name", "tool_call_id")
    @classmethod
    def _limit(cls, v: str | None) -> str | None:
        return _text(v)

    @model_validator(mode="after")
    def _turn(self) -> Self:
        found = []
        if self.tool_calls is not None and self.role != "assistant":
            found.append((".tool_calls", "only assistant messages call tools"))
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            found.append((".content", "a string is required (only an assistant turn that calls tools may have none)"))
        if found:
            raise problem(*found)
        return self


def role_errors(messages: list[dict]) -> list[str]:
    """Who may speak where: a known role, and a system message only first. The prompt format
    checks just this much on every render; records check it with everything else."""
    errors = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            got = role if isinstance(m, dict) else type(m).__name__
            errors.append(f"[{i}].role: must be one of {', '.join(ROLES)} (got {got!r})")
        elif role == "system" and i != 0:
            errors.append(f"[{i}].role: a system message may only come first")
    return errors


def _conversation(value: Any) -> Any:
    value = _some("messages")(value)
    if not value:
        raise problem(("", "at least one message is required"))
    if len(value) > MAX_MESSAGES:
        raise problem(("", f"{len(value)} messages, the limit is {MAX_MESSAGES}"))
    return value


def _system_first(messages: list[Message]) -> list[Message]:
    late = [i for i, m in enumerate(messages) if m.role == "system" and i]
    if late:
        raise problem(*((f"[{i}].role", "a system message may only come first") for i in late))
    return messages


Conversation = Annotated[list[Message], BeforeValidator(_conversation)]


def prompt_end(messages: list[Message], hint: str) -> None:
    """A prompt ends where the assistant speaks next: after a user or tool turn."""
    last = messages[-1].role
    if last not in ("user", "tool"):
        raise problem((f"[{len(messages) - 1}].role", hint.format(got=repr(last))))


# ---------------------------------------------------------------- skills


class ToolSchema(Record):
    """One tool, flat OpenAI function form; {"type": "function", "function": {...}} is accepted."""

    name: str
    description: str = ""
    parameters: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _schema(cls, data: Any) -> Any:
        try:
            return check_tool_schema(data, "")
        except ToolSchemaError as exc:
            rel, _, msg = str(exc).partition(": ")
            raise problem((rel, msg)) from None


def _tools(value: Any) -> Any:
    return _some("tool schemas")(value)


class Skill(Record):
    name: str
    description: str
    tools: Annotated[list[ToolSchema], BeforeValidator(_tools)]

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, v: Any) -> Any:
        if not isinstance(v, str) or not NAME_RE.match(v):
            raise problem(("", f"must match {NAME_RE.pattern} (got {v!r})"))
        return v

    @field_validator("description", mode="before")
    @classmethod
    def _description(cls, v: Any) -> Any:
        if not isinstance(v, str):
            raise problem(("", "a string is required"))
        return v

    @field_validator("tools")
    @classmethod
    def _unique(cls, tools: list[ToolSchema]) -> list[ToolSchema]:
        seen: set[str] = set()
        found = []
        for i, t in enumerate(tools):
            if t.name in seen:
                found.append((f"[{i}].name", f"the tool name {t.name!r} appears more than once"))
            seen.add(t.name)
        if found:
            raise problem(*found)
        return tools

    def flat_tools(self) -> list[dict]:
        return [t.model_dump() for t in self.tools]


def _not_a_tool(name: Any, ctx: dict) -> str:
    tools = ctx["tools"]
    return f"{name!r} is not a tool of skill {ctx.get('skill')!r} (its tools: {', '.join(sorted(tools)) or 'none'})"


# ---------------------------------------------------------------- demonstrations


class Demonstration(Record):
    """A prompt and the assistant turn to learn after it (its calls, its text, or both)."""

    messages: Conversation
    tool_calls: ToolCalls = []
    content: str | None = Field(default=None, validate_default=True)

    @field_validator("messages")
    @classmethod
    def _prompt(cls, messages: list[Message]) -> list[Message]:
        _system_first(messages)
        prompt_end(messages, "the messages end just before the assistant turn to learn, so the last "
                             "one must be 'user' or 'tool' (got {got}); move that assistant turn into "
                             "tool_calls/content")
        return messages

    @field_validator("tool_calls")
    @classmethod
    def _of_the_skill(cls, calls: list[ToolCall], info: ValidationInfo) -> list[ToolCall]:
        ctx = _context(info)
        if ctx.get("tools") is None:
            return calls
        found = []
        for i, call in enumerate(calls):
            if call.name in ctx.get("broken", ()):
                continue  # its schema is the error to fix first
            tool = ctx["tools"].get(call.name)
            if tool is None:
                found.append((f"[{i}].name", _not_a_tool(call.name, ctx)))
                continue
            for e in argument_errors(tool, call.arguments):
                rel, _, msg = e.partition(": ")
                found.append((f"[{i}].{rel}", msg))
        if found:
            raise problem(*found)
        return calls

    @field_validator("content")
    @classmethod
    def _turn(cls, content: str | None, info: ValidationInfo) -> str | None:
        content = _text(content) or None
        if content is None and info.data.get("tool_calls") == []:
            raise problem(("", "the assistant turn to learn is empty; give tool_calls or content"), up=1)
        return content

    @model_validator(mode="after")
    def _size(self) -> Self:
        size = len(dumps(self.learned(), "demonstration").encode())
        if size > MAX_DEMO_BYTES:
            raise problem(("", f"{size} bytes as JSON, the limit is {MAX_DEMO_BYTES}; shorten the conversation"))
        return self

    def learned(self) -> list:
        """(messages, calls, content): what identifies the demonstration (its fingerprint)."""
        return [[m.dump() for m in self.messages], [c.plain() for c in self.tool_calls], self.content]


class StoredDemonstration(Demonstration):
    """A demonstration as the memory keeps it: where it came from, how often it was seen."""

    source: Source = "imported"
    provenance: dict[str, Any] = {}
    episode_id: int | None = None
    duplicates: int = Field(default=0, ge=0)
    created_at: str | None = None

    @field_validator("provenance", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @classmethod
    def _root(cls) -> str:
        return "demonstration"


# ---------------------------------------------------------------- eval cases


class ExpectedCall(Record):
    """One call of a possible answer: argument -> acceptable values ("" = may be left out)."""

    name: str
    arguments: dict[str, Any]


def _expected(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise problem(("", "a non-empty list of calls is required"))
    return value


class EvalCase(Record):
    messages: Conversation
    expected: Annotated[list[ExpectedCall], BeforeValidator(_expected)]

    @field_validator("messages")
    @classmethod
    def _prompt(cls, messages: list[Message]) -> list[Message]:
        _system_first(messages)
        prompt_end(messages, "must be 'user' or 'tool', the turn the assistant answers (got {got})")
        return messages

    @field_validator("expected")
    @classmethod
    def _answers(cls, expected: list[ExpectedCall], info: ValidationInfo) -> list[ExpectedCall]:
        ctx = _context(info)
        if ctx.get("tools") is None:
            return expected
        found = []
        for i, call in enumerate(expected):
            if call.name in ctx.get("broken", ()):
                continue
            tool = ctx["tools"].get(call.name)
            if tool is None:
                found.append((f"[{i}].name", _not_a_tool(call.name, ctx)))
                continue
            found += [(f"[{i}].{rel}", msg) for rel, msg in expected_problems(tool, call.arguments)]
        if found:
            raise problem(*found)
        return expected


class StoredEvalCase(EvalCase):
    created_at: str | None = None

    @classmethod
    def _root(cls) -> str:
        return "eval_case"


def expected_problems(tool: dict, options: dict) -> list[tuple[str, str]]:
    """Each argument: a parameter of the tool with a non-empty list of values valid for it;
    "" (may be omitted) only for an optional one; every required argument has values."""
    params = function_schema(tool).get("parameters", {})
    props, required = params.get("properties", {}), params.get("required", [])
    found = [(f"arguments.{r}", "required argument has no acceptable values") for r in required if r not in options]
    for arg, allowed in options.items():
        at = f"arguments.{arg}"
        if arg not in props:
            found.append((at, f"not a parameter of {tool['name']!r} (known: {', '.join(sorted(props)) or 'none'})"))
        elif not isinstance(allowed, list) or not allowed:
            found.append((at, "must be a non-empty list of acceptable values (BFCL convention), "
                              f"got {type(allowed).__name__}"))
        else:
            found += _option_problems(allowed, props[arg], at, optional=arg not in required)
    return found


def _option_problems(allowed: list, schema: dict, at: str, optional: bool) -> list[tuple[str, str]]:
    found = []
    if "" in allowed and not optional:
        found.append((at, '"" (may be omitted) is not allowed for a required argument'))
    if all(v == "" for v in allowed):
        found.append((at, 'lists only ""; leave the argument out of expected instead'))
    validator = Draft202012Validator(schema)
    for n, value in enumerate(allowed):
        if value == "":
            continue
        literal = first_literal(value, f"{at}[{n}]", found)
        if literal is BAD:
            continue
        for err in validator.iter_errors(literal):
            sub = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in err.absolute_path)
            found.append((f"{at}[{n}]{sub}", err.message))
    return found


BAD = object()


def first_literal(value: Any, at: str, found: list) -> Any:
    """A possible-answer value turned into one concrete value (nested objects: first choices)."""
    if isinstance(value, list):
        items = [first_literal(v, f"{at}[{n}]", found) for n, v in enumerate(value)]
        return BAD if any(x is BAD for x in items) else items
    if isinstance(value, dict):
        out = {}
        for key, allowed in value.items():
            if not isinstance(allowed, list) or not allowed:
                found.append((f"{at}.{key}", "nested objects list acceptable values per key (a non-empty list)"))
                return BAD
            if "" in allowed:
                continue  # may be omitted: the concrete value leaves it out
            lit = first_literal(allowed[0], f"{at}.{key}", found)
            if lit is BAD:
                return BAD
            out[key] = lit
        return out
    return value


# ---------------------------------------------------------------- episodes


class Episode(Record):
    """One conversation, as recorded. `learned_turn` is the index in `messages` of the assistant
    turn a demonstration of this episode learns; None when that turn is not in `messages` (the
    episode's own tool_calls, else its answer, follow the whole conversation)."""

    messages: Conversation
    tool_calls: ToolCalls = []
    answer: str | None = None
    outcome: Outcome = "unknown"
    source: Source = "live"
    model_version: str | None = None
    skill: str | None = None
    meta: dict[str, Any] = {}
    learned_turn: int | None = None

    @field_validator("messages")
    @classmethod
    def _system(cls, messages: list[Message]) -> list[Message]:
        return _system_first(messages)

    @field_validator("meta", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @model_validator(mode="after")
    def _check(self) -> Self:
        t = self.learned_turn
        if t is not None and not (0 <= t < len(self.messages) and self.messages[t].role == "assistant"):
            raise problem((".learned_turn", f"{t} is not the index of an assistant message"))
        size = sum(len(dumps(x, "episode")) for x in ([m.dump() for m in self.messages],
                                                     [c.plain() for c in self.tool_calls], self.meta))
        size += len(self.answer or "")
        if size > MAX_EPISODE_BYTES:
            raise problem(("", f"about {size} bytes as JSON, the limit is {MAX_EPISODE_BYTES}"))
        return self

    def with_learned_turn(self) -> Episode:
        """The learned turn named by default_learned_turn when the caller named none."""
        if self.learned_turn is None:
            self.learned_turn = default_learned_turn([m.dump() for m in self.messages])
        return self

    def demonstration(self) -> dict:
        """The demonstration this episode teaches: messages, tool_calls, content."""
        return demonstration_of([m.dump() for m in self.messages], [c.plain() for c in self.tool_calls],
                                self.answer, self.learned_turn)


def demonstration_of(messages: list[dict], tool_calls: list[dict], answer: str | None,
                     learned_turn: int | None) -> dict:
    """What an episode (stored or not) teaches: the messages before its learned turn and that
    turn's calls and text; with none in `messages`, the episode's own calls, else its answer."""
    if learned_turn is None:
        calls = [{"name": c["name"], "arguments": c["arguments"]} for c in tool_calls]
        return {"messages": messages, "tool_calls": calls, "content": None if calls else answer}
    turn = messages[learned_turn]
    return {"messages": messages[:learned_turn],
            "tool_calls": [{"name": c["name"], "arguments": c["arguments"]} for c in turn.get("tool_calls") or []],
            "content": turn.get("content") or None}


def default_learned_turn(messages: list[dict]) -> int | None:
    """The first assistant turn that calls tools, else a final assistant turn, else None. The
    agent names its learned turn itself; this is the rule for callers that do not (imports,
    older rows)."""
    calling = [i for i, m in enumerate(messages) if m.get("role") == "assistant" and m.get("tool_calls")]
    if calling:
        return calling[0]
    return len(messages) - 1 if messages and messages[-1].get("role") == "assistant" else None


# ---------------------------------------------------------------- skill packs


class SkillPack(Skill):
    """The file a user hands the agent: a skill, demonstrations to learn, held-out cases."""

    demonstrations: Annotated[list[Demonstration], BeforeValidator(_some("demonstrations"))]
    eval: Annotated[list[EvalCase], BeforeValidator(_some("eval cases"))]

    @model_validator(mode="before")
    @classmethod
    def _tools_in_context(cls, data: Any, info: ValidationInfo) -> Any:
        """The pack's valid tools (and the names of the broken ones, whose calls are not
        checked: the schema error is the one to fix) for its demonstrations and cases."""
        if not isinstance(data, dict):
            raise problem(("", f"expected an object, got {type(data).__name__}"))
        ctx = _context(info)
        ctx.update(skill=str(data.get("name")), tools={}, broken=set())
        tools = data.get("tools")
        for tool in tools if isinstance(tools, list) else []:
            try:
                flat = check_tool_schema(tool)
            except ToolSchemaError:
                fn = function_schema(tool) if isinstance(tool, dict) else {}
                if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                    ctx["broken"].add(fn["name"])
                continue
            ctx["tools"].setdefault(flat["name"], flat)
        return data

    @field_validator("tools", mode="before")
    @classmethod
    def _some_tools(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise problem(("", "a non-empty list is required"))
        return v

    @field_validator("eval")
    @classmethod
    def _held_out(cls, cases: list[EvalCase], info: ValidationInfo) -> list[EvalCase]:
        """A held-out case that is also a demonstration measures memory, not skill."""
        seen: dict[str, int] = {}
        for i, demo in enumerate(info.data.get("demonstrations") or []):
            seen.setdefault(_said(demo.messages), i)
        found = [(f"[{i}].messages", f"same conversation as demonstrations[{seen[_said(c.messages)]}] "
                                     "(held-out cases must not be demonstrations)")
                 for i, c in enumerate(cases) if _said(c.messages) in seen]
        if found:
            raise problem(*found)
        return cases

    @classmethod
    def parse(cls, data: Any, where: str = "", **context: Any) -> Self:
        return super().parse(data, where, **{"tools": {}, "broken": set(), **context})

    @classmethod
    def _root(cls) -> str:
        return "pack"


def _said(messages: list[Message]) -> str:
    """A conversation up to case and spacing."""
    return dumps([(m.role, " ".join((m.content or "").split()).casefold()) for m in messages], "messages")
