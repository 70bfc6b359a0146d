"""ReAct text ↔ structured tool calls: declared tools, argument parsing and a small JSON-schema
check. The action syntax itself (how `Action: tool[arg]` and `Action Input:` are written and read)
is the grammar in `dsc.compiler.dialects.react`, shared with the `react` format and the agent loop.

The text before `Action:` is kept verbatim as the message content, and an observation turn
`Observation: X` becomes a tool message with content `X`, so converting back gives the same
text (the round trip is the identity on well-formed data: one action at the end of each
assistant turn, arguments spelled as `format_arguments` writes them). Turns that do not match
(no action, an observation not preceded by an action) are left as they are, which also keeps
the round trip exact.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from dsc.compiler.dialects.react import (  # noqa: F401  (the grammar, re-exported for the converters)
    DEFAULT_PARAMETERS,
    OBSERVATION,
    TOOL_NAME_RE,
    Action,
    Syntax,
    arguments_from_text,
    arguments_text,
    format_action,
    parse_action,
    schema_types,
    thought_text,
)
from dsc.compiler.record import BadRow, canonical_json

from .common import Strict, one_line

# ---------------------------------------------------------------------------------------------
# Declared tools
# ---------------------------------------------------------------------------------------------


class ToolDef(Strict):
    """A tool as OpenAI function specs write it (flat): name, description, JSON-schema parameters."""

    name: str = Field(pattern=TOOL_NAME_RE.pattern)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_PARAMETERS))

    @model_validator(mode="after")
    def _object_schema(self) -> "ToolDef":
        p = self.parameters
        if p.get("type", "object") != "object" or not isinstance(p.get("properties", {}), Mapping):
            raise ValueError(f"tool '{self.name}': `parameters` must be a JSON schema of type object "
                             "with `properties`")
        return self

    def openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    def params(self) -> list[str]:
        return list(self.parameters.get("properties", {}))


def tool_from_spec(obj: Any, where: str) -> ToolDef:
    """A flat or OpenAI-shaped (`{type: function, function: {...}}`) tool spec."""
    if isinstance(obj, Mapping) and isinstance(obj.get("function"), Mapping):
        obj = obj["function"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: a tool is an object with `name` and `parameters`")
    try:
        return ToolDef.model_validate({k: obj[k] for k in ("name", "description", "parameters") if k in obj})
    except ValidationError as e:
        raise ValueError(f"{where}: {one_line(e)}") from None


def load_tools(value: list[Any] | str | None, base_dir: Path) -> list[ToolDef]:
    """Tools given inline (a list) or as a JSON/YAML file holding a list (relative to the spec)."""
    if value is None:
        return []
    items: Any = value
    where = "tools"
    if isinstance(value, str):
        p = Path(base_dir) / value
        where = value
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"tools file '{value}' does not exist (relative to {base_dir})") from None
        if p.suffix.lower() in (".yaml", ".yml"):
            from ruamel.yaml import YAML

            items = YAML(typ="safe").load(text)
        else:
            try:
                items = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"tools file '{value}' is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of tool specs")
    tools = [tool_from_spec(t, f"{where}[{i}]") for i, t in enumerate(items)]
    names = [t.name for t in tools]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{where}: tool names repeat: {', '.join(dupes)}")
    return tools


ToolsField = list[dict[str, Any]] | str | None


# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------


def parse_arguments(tool: ToolDef, arg: str, syntax: Syntax, where: str) -> dict[str, Any]:
    """The argument text of an action → the tool's arguments, checked against its schema."""
    args = arguments_from_text(tool, tool.name, arg, syntax, where)
    problems = validate_schema(args, tool.parameters)
    if problems:
        raise BadRow(f"{where}: arguments of '{tool.name}' do not match its schema: {problems[0]}")
    return args


def format_arguments(tool: ToolDef | None, args: dict[str, Any], syntax: Syntax) -> str:
    """The inverse of `parse_arguments` (one parameter → its value as text; else JSON)."""
    return arguments_text(tool, args, syntax)


def arguments_json(args: dict[str, Any]) -> str:
    return canonical_json(args)


# ---------------------------------------------------------------------------------------------
# A small JSON-schema check (the keywords tool specs use)
# ---------------------------------------------------------------------------------------------

_TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def validate_schema(value: Any, schema: Mapping[str, Any], path: str = "") -> list[str]:
    """Problems of `value` against `schema` (type, enum, const, properties, required,
    additionalProperties, items, minimum/maximum, minLength/maxLength, pattern, min/maxItems).
    Other keywords are not checked."""
    where = path or "arguments"
    out: list[str] = []
    types = schema_types(schema)
    if types and not any(_TYPE_CHECKS.get(t, lambda v: True)(value) for t in types):
        return [f"{where} should be {' or '.join(types)}, got {json.dumps(value, ensure_ascii=False)[:60]}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where} should be one of {schema['enum']}, got {value!r}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{where} should be {schema['const']!r}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in value:
                out.append(f"{where}: missing required '{req}'")
        for k, v in value.items():
            sub = f"{path}.{k}" if path else k
            if k in props:
                out.extend(validate_schema(v, props[k], sub))
            elif schema.get("additionalProperties") is False:
                out.append(f"{where}: unexpected '{k}'")
            elif isinstance(schema.get("additionalProperties"), Mapping):
                out.extend(validate_schema(v, schema["additionalProperties"], sub))
    if isinstance(value, list):
        if "items" in schema and isinstance(schema["items"], Mapping):
            for i, v in enumerate(value):
                out.extend(validate_schema(v, schema["items"], f"{where}[{i}]"))
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{where}: more than {schema['maxItems']} items")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{where}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: does not match {schema['pattern']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{where}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{where}: above {schema['maximum']}")
    return out
