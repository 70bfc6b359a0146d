"""ReAct text ↔ structured tool calls: declared tools and argument parsing (arguments are
checked against the tool's JSON Schema by `dsc.core.toolschema`). The action syntax itself
(how `Action: tool[arg]` and `Action Input:` are written and read) is the grammar in
`dsc.dialects.react`, shared with the `react` format and the agent loop.

The text before `Action:` is kept verbatim as the message content, and an observation turn
`Observation: X` becomes a tool message with content `X`, so converting back gives the same
text (the round trip is the identity on well-formed data: one action at the end of each
assistant turn, arguments spelled as `format_arguments` writes them). Turns that do not match
(no action, an observation not preceded by an action) are left as they are, which also keeps
the round trip exact.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from dsc.core import toolschema
from dsc.core.errors import one_line
from dsc.core.strict import Strict
from dsc.dialects.react import (
    DEFAULT_PARAMETERS,
    TOOL_NAME_RE,
    Syntax,
    arguments_from_text,
    arguments_text,
)
from dsc.record import BadRow

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
        try:
            toolschema.validator(p)
        except toolschema.InvalidSchema as e:
            raise ValueError(f"tool '{self.name}': `parameters` is {e}") from None
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
    problem = toolschema.problem(args, tool.parameters)
    if problem is not None:
        raise BadRow(f"{where}: arguments of '{tool.name}' do not match its schema: {problem}")
    return args


def format_arguments(tool: ToolDef | None, args: dict[str, Any], syntax: Syntax) -> str:
    """The inverse of `parse_arguments` (one parameter → its value as text; else JSON)."""
    return arguments_text(tool, args, syntax)

