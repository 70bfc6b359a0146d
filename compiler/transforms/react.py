"""ReAct text ↔ structured tool calls: the action syntax, declared tools and argument parsing
(arguments are checked against the tool's JSON Schema by `dsc.compiler.toolschema`).

Two action syntaxes are read and written:

- `bracket` (FireAct, NAT): `Thought: …\\nAction: search[query]` — the text in brackets is the
  argument. A tool with one declared parameter takes the whole text as that parameter
  (converted to the parameter's type); a tool with several takes a JSON object.
- `action_input` (ToolBench, AgentInstruct): `Thought: …\\nAction: name\\nAction Input: {json}`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from dsc.compiler import toolschema
from dsc.compiler.record import BadRow, compact_json

from .common import Strict, one_line

Syntax = Literal["bracket", "action_input"]

_BRACKET = re.compile(r"^(?P<pre>.*?)Action: (?P<name>[A-Za-z_][\w.-]*)\[(?P<arg>.*)\]$", re.DOTALL)
_ACTION_INPUT = re.compile(r"^(?P<pre>.*?)Action: (?P<name>[A-Za-z_][\w.-]*)\nAction Input: (?P<arg>.*)$", re.DOTALL)
OBSERVATION = "Observation: "


@dataclass(frozen=True, slots=True)
class Action:
    pre: str  # the text before "Action: " (the thought), verbatim
    name: str
    arg: str  # the argument text, verbatim


def parse_action(text: str, syntax: Syntax) -> Action | None:
    m = (_BRACKET if syntax == "bracket" else _ACTION_INPUT).match(text)
    return Action(m.group("pre"), m.group("name"), m.group("arg")) if m else None


def format_action(pre: str, name: str, arg: str, syntax: Syntax) -> str:
    if syntax == "bracket":
        return f"{pre}Action: {name}[{arg}]"
    return f"{pre}Action: {name}\nAction Input: {arg}"


THOUGHT_PREFIX = re.compile(r"^\s*Thought(?: \d+)?:\s*")


def thought_text(pre: str) -> str:
    """The thought of a ReAct step as plain text (its `Thought:` label and edges removed)."""
    return THOUGHT_PREFIX.sub("", pre).strip()


# ---------------------------------------------------------------------------------------------
# Declared tools
# ---------------------------------------------------------------------------------------------

DEFAULT_PARAMETERS: dict[str, Any] = {
    "type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}


class ToolDef(Strict):
    """A tool as OpenAI function specs write it (flat): name, description, JSON-schema parameters."""

    name: str = Field(pattern=r"^[A-Za-z_][\w.-]*$")
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


def _types(schema: Mapping[str, Any]) -> list[str]:
    t = schema.get("type")
    return [t] if isinstance(t, str) else list(t or [])


def _coerce(text: str, schema: Mapping[str, Any], where: str) -> Any:
    types = _types(schema)
    if not types or "string" in types:
        return text
    if "integer" in types and re.fullmatch(r"-?\d+", text.strip()):
        return int(text)
    if "number" in types:
        try:
            x = float(text)
        except ValueError:
            pass
        else:
            return int(x) if re.fullmatch(r"-?\d+", text.strip()) else x
    if "boolean" in types and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    if "null" in types and text.strip() in ("", "null"):
        return None
    if "object" in types or "array" in types:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    raise BadRow(f"{where}: {text!r} is not a valid {' or '.join(types)}")


def parse_arguments(tool: ToolDef, arg: str, syntax: Syntax, where: str) -> dict[str, Any]:
    """The argument text of an action → the tool's arguments, checked against its schema."""
    params = tool.params()
    if syntax == "action_input" or len(params) > 1:
        try:
            args = json.loads(arg) if arg.strip() else {}
        except json.JSONDecodeError as e:
            raise BadRow(f"{where}: arguments of '{tool.name}' are not valid JSON: {e.msg}") from None
        if not isinstance(args, dict):
            raise BadRow(f"{where}: arguments of '{tool.name}' must be a JSON object")
    elif not params:
        if arg.strip():
            raise BadRow(f"{where}: tool '{tool.name}' takes no arguments, got {arg!r}")
        args = {}
    else:
        p = params[0]
        args = {p: _coerce(arg, tool.parameters["properties"][p], f"{where}: '{tool.name}' argument '{p}'")}
    problem = toolschema.problem(args, tool.parameters)
    if problem is not None:
        raise BadRow(f"{where}: arguments of '{tool.name}' do not match its schema: {problem}")
    return args


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def format_arguments(tool: ToolDef | None, args: dict[str, Any], syntax: Syntax) -> str:
    """The inverse of `parse_arguments` (one parameter → its value as text; else JSON)."""
    params = tool.params() if tool is not None else list(args)
    if syntax == "bracket" and len(params) <= 1 and set(args) <= set(params):
        if not args:
            return ""
        return _scalar_text(args[params[0]])
    return json.dumps(args, ensure_ascii=False)


def arguments_json(args: dict[str, Any]) -> str:
    return compact_json(args)
