"""Checking tool calls against OpenAI-format tool schemas (docs/ARCHITECTURE.md, "Data model": ToolSchema, ToolCall).

Lives in `memory` because memory validates demonstrations before storing them and every other
package may import memory; the agent's parser and the skill loader use the same rules.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError


class ToolSchemaError(ValueError):
    """A tool schema that is not a usable OpenAI function schema."""


def tool_name(tool: dict) -> str:
    """Accept both {"name", …} and {"type": "function", "function": {…}} spellings."""
    return (tool.get("function") or tool)["name"]


def function_schema(tool: dict) -> dict:
    """The inner {"name", "description", "parameters"} dict of either spelling."""
    return tool.get("function") or tool


def check_tool_schema(tool: Any, where: str = "tool") -> dict:
    """Validate one tool schema; return it in the flat {"name","description","parameters"} form."""
    if not isinstance(tool, dict):
        raise ToolSchemaError(f"{where}: expected an object, got {type(tool).__name__}")
    fn = function_schema(tool)
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ToolSchemaError(f"{where}.name: a non-empty string is required")
    params = fn.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(params, dict) or params.get("type") != "object":
        raise ToolSchemaError(
            f"{where}.parameters: must be a JSON Schema with \"type\": \"object\" "
            f"(got {params.get('type') if isinstance(params, dict) else type(params).__name__!r}); "
            "BFCL's \"dict\" must be normalised to \"object\""
        )
    try:
        Draft202012Validator.check_schema(params)
    except SchemaError as exc:
        raise ToolSchemaError(f"{where}.parameters: not a valid JSON Schema: {exc.message}") from None
    props = params.get("properties", {})
    for req in params.get("required", []):
        if req not in props:
            raise ToolSchemaError(f"{where}.parameters.required: {req!r} is not among the properties")
    return {"name": name, "description": fn.get("description", ""), "parameters": params}


def argument_errors(tool: dict, arguments: Any) -> list[str]:
    """Every reason `arguments` is not a valid call of `tool`; empty when it is valid.

    Stricter than plain JSON Schema in one way, as BFCL's checker is: an argument that the schema
    does not declare is an error even when the schema does not say additionalProperties=false.
    """
    params = function_schema(tool).get("parameters", {"type": "object", "properties": {}})
    if not isinstance(arguments, dict):
        return [f"arguments: expected an object, got {type(arguments).__name__}"]
    errors: list[str] = []
    props = params.get("properties", {})
    for name in params.get("required", []):
        if name not in arguments:
            errors.append(f"arguments.{name}: required argument is missing")
    for name in arguments:
        if name not in props:
            errors.append(f"arguments.{name}: not a parameter of {tool_name(tool)!r} (known: {', '.join(sorted(props)) or 'none'})")
    validator = Draft202012Validator({**params, "required": []})
    for err in sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path)):
        if err.validator == "additionalProperties" and not err.absolute_path:
            continue  # already reported above, one line per argument
        path = ".".join(str(p) for p in err.absolute_path)
        errors.append(f"arguments.{path or '(root)'}: {err.message}")
    return errors
