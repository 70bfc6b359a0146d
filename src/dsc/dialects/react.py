"""The ReAct grammar: one definition of how `Thought / Action / Observation` text is written and
read, shared by the `react` source format, the convert steps and the eval agent loop (so a model
trained on what the converters write is evaluated by the same parser).

Two action syntaxes:

- `bracket` (FireAct, NAT): `Thought: …\\nAction: search[query]` — the text in brackets is the
  argument. A tool with one declared parameter takes the whole text as that parameter
  (converted to the parameter's type); a tool with several takes a JSON object.
- `action_input` (ToolBench, AgentInstruct, LangChain): `Thought: …\\nAction: name\\nAction Input: {json}`.

A tool name starts with a letter or `_` and goes on with letters, digits, `_`, `.` and `-`
(`web.search`, `get-weather`, `lookup_2`).

`parse_action(text, syntax)` reads what `format_action` writes: an action at the end of the
turn, the text before `Action: ` kept verbatim. `lenient=True` is the agent loop's reading of
a model's generation (FireAct's own parser): the first action line (a step number as in
`Action 2:` accepted), the argument running to the last `]` of that line (a generation cut short
before its `]` tolerated), text after the action ignored, a bare `finish[x]` last line accepted;
a turn that is exactly what `format_action` writes is read as the strict parser reads it, so
arguments that span lines come back whole.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dsc.dialects.base import (
    Dialect,
    ToolLike,
    Tools,
    Turn,
    arguments_object,
    function_of,
    loaded_arguments,
    schema_types,
    stored_arguments,
)
from dsc.record import BadRow, ToolCall
from dsc.spec.registries import register_dialect

Syntax = Literal["bracket", "action_input"]

TOOL_NAME = r"[A-Za-z_][\w.-]*"
TOOL_NAME_RE = re.compile(rf"^{TOOL_NAME}$")
# A step of a ReAct text starts a line: `Thought:`, `Action 2:`, `Observation:` (numbers optional).
STEP = re.compile(r"^(Thought|Action|Observation)(?: \d+)?:", re.MULTILINE)
OBSERVATION = "Observation: "
ACTION_INPUT = "Action Input: "
THOUGHT_PREFIX = re.compile(r"^\s*Thought(?: \d+)?:\s*")

_BRACKET = re.compile(rf"^(?P<pre>.*?)Action: (?P<name>{TOOL_NAME})\[(?P<arg>.*)\]$", re.DOTALL)
_ACTION_INPUT = re.compile(rf"^(?P<pre>.*?)Action: (?P<name>{TOOL_NAME})\n{ACTION_INPUT}(?P<arg>.*)$", re.DOTALL)
# Lenient (generated text): the first action label, spacing and a step number tolerated.
_ACTION_LABEL = re.compile(r"Action[ \t]*\d*[ \t]*:[ \t]*")
_LENIENT_CALL = re.compile(rf"(?P<name>{TOOL_NAME})[ \t]*\[(?P<rest>.*)$", re.DOTALL)
_LENIENT_INPUT = re.compile(rf"(?P<name>{TOOL_NAME})[ \t]*\n[ \t]*Action[ \t]+Input[ \t]*:[ \t]*(?P<arg>.*)$",
                            re.DOTALL)


@dataclass(frozen=True, slots=True)
class Action:
    pre: str  # the text before "Action: " (the thought), verbatim
    name: str
    arg: str  # the argument text, verbatim


# ---------------------------------------------------------------------------------------------
# ReAct parts
# ---------------------------------------------------------------------------------------------

# A step label starts a line: `Thought:`, `Thought 2:`, `Action:`, `Action Input:`, `Observation 1:`,
# `Final Answer:` (the parts `loss: {weights: [{part: ...}]}` selects, dsc.chat.weights).
_LABEL = re.compile(r"^[ \t]*(?P<label>Thought|Action Input|Action|Observation|Final Answer)(?: \d+)?:",
                    re.MULTILINE)
_LABEL_PART = {"Thought": "thought", "Action": "action", "Action Input": "action_input",
               "Observation": "observation", "Final Answer": "final_answer"}
# `Action: name[argument]` (FireAct, NAT): the argument in brackets is the action's input.
_BRACKET_ARGUMENT = re.compile(rf"Action(?: \d+)?:[ \t]*(?P<name>{TOOL_NAME})\[(?P<arg>.*)\]", re.DOTALL)
# The named pieces every dialect has (`call_name`, `arguments`, `answer`), in ReAct's labels.
_ACTION_HEAD = re.compile(rf"Action(?: \d+)?:[ \t]*(?P<name>{TOOL_NAME})")
_AFTER_LABEL = re.compile(r"(?:Action Input|Final Answer)(?: \d+)?:[ \t]*")


def react_parts(text: str, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """The ReAct parts of text[start:end] as (part, a, b) character ranges, in order.

    A part runs from its label (the label included) to the next label or to `end`, so text after
    the last step (an end-of-turn token) goes with the last part; text before the first label is
    no part. In `Action: name[argument]` the argument between the brackets is `action_input` and
    the rest `action`; in the `Action: name` / `Action Input: {json}` syntax each line is its own
    part."""
    end = len(text) if end is None else end
    region = text[start:end]  # searched on its own: a span may start mid-line (`[/INST] Thought: ...`)
    labels = [(start + m.start("label"), _LABEL_PART[m.group("label")]) for m in _LABEL.finditer(region)]
    out: list[tuple[str, int, int]] = []
    for (a, part), nxt in zip(labels, [*(s for s, _ in labels[1:]), end]):
        m = _BRACKET_ARGUMENT.match(text, a, nxt) if part == "action" else None
        if m is not None:
            out += [("action", a, m.start("arg")), ("action_input", m.start("arg"), m.end("arg")),
                    ("action", m.end("arg"), nxt)]
        else:
            out.append((part, a, nxt))
    return [p for p in out if p[2] > p[1]]


def react_turn_parts(text: str, start: int = 0, end: int | None = None) -> list[tuple[str, int, int]]:
    """`react_parts` and, in the same grammar, the pieces every dialect names (`Dialect.turn_parts`):
    `call_name` (the action's tool name), `arguments` (the text between the brackets; the JSON
    value after `Action Input:`, or that line's text less trailing whitespace), `answer` (the text
    after `Final Answer:`, to the part's end). `thought` is ReAct's own (its label included)."""
    out: list[tuple[str, int, int]] = []
    for part, a, b in react_parts(text, start, end):
        out.append((part, a, b))
        if part == "action":
            m = _ACTION_HEAD.match(text, a, b)
            if m is not None:
                out.append(("call_name", *m.span("name")))
        elif part == "action_input" and not text.startswith("Action Input", a):
            out.append(("arguments", a, b))  # the argument between the brackets
        elif part in ("action_input", "final_answer"):
            label = _AFTER_LABEL.match(text, a, b)
            if label is None:
                continue
            at = label.end()
            if part == "final_answer":
                out.append(("answer", at, b))
                continue
            stop = _json_end(text, at, b)
            out.append(("arguments", at, stop if stop is not None else at + len(text[at:b].rstrip())))
    return [p for p in out if p[2] > p[1]]


def _json_end(text: str, at: int, end: int) -> int | None:
    try:
        _, stop = json.JSONDecoder().raw_decode(text, at)
    except json.JSONDecodeError:
        return None
    return stop if stop <= end else None



def parse_action(text: str, syntax: Syntax, *, lenient: bool = False) -> Action | None:
    """The action of one assistant turn; None when it has none (see the module doc)."""
    if lenient:
        return _parse_generated(text, syntax)
    m = (_BRACKET if syntax == "bracket" else _ACTION_INPUT).match(text)
    return Action(m.group("pre"), m.group("name"), m.group("arg")) if m else None


def parse_any_action(text: str) -> Action | None:
    """The action of a turn in either syntax (bracket first)."""
    return parse_action(text, "bracket") or parse_action(text, "action_input")


def format_action(pre: str, name: str, arg: str, syntax: Syntax) -> str:
    if not TOOL_NAME_RE.match(name):
        raise BadRow(f"tool name {name!r} cannot be written as a ReAct action (letters, digits, '_', '.', '-')")
    if syntax == "bracket":
        return f"{pre}Action: {name}[{arg}]"
    return f"{pre}Action: {name}\n{ACTION_INPUT}{arg}"


def _parse_generated(text: str, syntax: Syntax) -> Action | None:
    strict = parse_action(text.rstrip(), syntax)
    if strict is not None:  # exactly what the writer writes (arguments may span lines)
        return strict
    label = _ACTION_LABEL.search(text)
    if label is None:
        if syntax != "bracket" or not text.strip():
            return None
        pre, rest = "", text.strip().splitlines()[-1].strip()  # a bare `finish[x]` answer
    else:
        pre, rest = text[: label.start()], text[label.end():]
    if syntax == "action_input":
        m = _LENIENT_INPUT.match(rest)
        return Action(pre, m.group("name"), _leading_json(m.group("arg"))) if m else None
    m = _LENIENT_CALL.match(rest.split("\n", 1)[0])
    if m is None:
        return None
    line = m.group("rest")
    close = line.rfind("]")  # FireAct: the argument runs to the last "]" on the line
    return Action(pre, m.group("name"), (line[:close] if close >= 0 else line).strip())


def _leading_json(arg: str) -> str:
    """The JSON value an `Action Input:` starts with (text the model wrote after it dropped)."""
    arg = arg.strip()
    try:
        _, end = json.JSONDecoder().raw_decode(arg)
    except json.JSONDecodeError:
        return arg
    return arg[:end]


def thought_text(pre: str) -> str:
    """The thought of a ReAct step as plain text (its `Thought:` label and edges removed)."""
    return THOUGHT_PREFIX.sub("", pre).strip()


# ---------------------------------------------------------------------------------------------
# Arguments: action text ↔ a tool's arguments
# ---------------------------------------------------------------------------------------------

DEFAULT_PARAMETERS: dict[str, Any] = {
    "type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}


def _properties(tool: ToolLike | None) -> dict[str, Any]:
    params = tool.parameters if tool is not None else DEFAULT_PARAMETERS
    return dict(params.get("properties", {}))


def _coerce(text: str, schema: Mapping[str, Any], where: str) -> Any:
    types = schema_types(schema)
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


def arguments_from_text(tool: ToolLike | None, name: str, arg: str, syntax: Syntax, where: str) -> dict[str, Any]:
    """The argument text of an action → the tool's arguments (not checked against its schema).

    `tool` None: a tool with one string parameter `input` (tools not declared)."""
    props = _properties(tool)
    params = list(props)
    if syntax == "action_input" or len(params) > 1:
        return arguments_object(arg, name, where)
    if not params:
        if arg.strip():
            raise BadRow(f"{where}: tool '{name}' takes no arguments, got {arg!r}")
        return {}
    p = params[0]
    return {p: _coerce(arg, props[p], f"{where}: '{name}' argument '{p}'")}


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def arguments_text(tool: ToolLike | None, args: dict[str, Any], syntax: Syntax) -> str:
    """The inverse of `arguments_from_text` (one parameter → its value as text; else JSON).

    `tool` None: the arguments' own keys stand for the parameters."""
    params = tool.params() if tool is not None else list(args)
    if syntax == "bracket" and len(params) <= 1 and set(args) <= set(params):
        if not args:
            return ""
        return _scalar_text(args[params[0]])
    return json.dumps(args, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# The two ReAct dialects
# ---------------------------------------------------------------------------------------------


def react_tools_prompt(tools: Any, syntax: Syntax, *, ensure_ascii: bool = False,
                       repeats: str = "Thought/Action/Observation", ending: str = "") -> str:
    """Tools and the format, as ToolBench/AgentInstruct system prompts list them (Agent-FLAN's
    variant: ASCII-escaped inputs, its own repeat line and a closing instruction)."""
    fns = [function_of(t) for t in tools]
    listing = "\n".join(f"- {f['name']}: {f.get('description', '')} Input: "
                        f"{json.dumps((f.get('parameters') or {}).get('properties', {}), ensure_ascii=ensure_ascii)}"
                        for f in fns)
    names = ", ".join(f["name"] for f in fns)
    if syntax == "bracket":
        action = f"Action: the tool to use, one of {names}, with its input in brackets: tool[input]\n"
    else:
        action = (f"Action: the tool to use, one of {names}\n"
                  "Action Input: the input to the tool, as a JSON object\n")
    return (f"Tools:\n{listing}\n\nUse the following format:\nThought: think about what to do\n{action}"
            f"Observation: the result of the tool\n... ({repeats} can repeat){ending}")


class ReactDialect(Dialect):
    """ReAct text: the thought verbatim, then one action (`syntax`), observations as their own turns.

    The text before the action is kept verbatim (ReAct rows read by `react_to_tool_calls` keep
    their `Thought: …\\n`); a text that does not end in a newline (a chat turn's) gets one, so
    the action starts its own line."""

    name = "react"
    shape = "Thought: …\\nAction: tool[arg]   ·   Observation: …"
    syntax: Syntax = "bracket"
    stop = ("\nObservation:",)
    parallel = False
    reply_is_answer = False  # the answer is an action: finish[x]
    parts_over_text = True  # ReAct's labels mark the parts anywhere in the supervised text
    observation_prefix = OBSERVATION

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        if not calls:
            return content
        self.check_parallel(calls, where)
        call = calls[0]
        args = loaded_arguments(call, where)
        if content and not content.endswith("\n"):  # a chat turn's text: the action on its own line
            content += "\n"
        return format_action(content, call.name, arguments_text(tools.get(call.name), args, self.syntax), self.syntax)

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        act = parse_action(text, self.syntax, lenient=lenient)
        if act is None:
            return Turn(text, [])
        args = arguments_from_text(tools.get(act.name), act.name, act.arg, self.syntax, where)
        return Turn(act.pre, [ToolCall(act.name, stored_arguments(args))])

    def turn_parts(self, turn: str) -> list[tuple[str, int, int]]:
        return react_turn_parts(turn)

    def write_observations(self, results: Any, calls: Any = None) -> str:
        return "\n".join(self.observation_prefix + r for r in results)

    def parse_observations(self, text: str) -> list[str] | None:
        if not text.startswith(self.observation_prefix):
            return None
        return [text[len(self.observation_prefix):]]

    def tools_prompt(self, tools: Any) -> str:
        return react_tools_prompt(tools, self.syntax)


@register_dialect
class ReactBracket(ReactDialect):
    pass


@register_dialect
class ReactJson(ReactDialect):
    """ReAct with a JSON input (LangChain, ToolBench): `Action: name\\nAction Input: {json}`."""

    name = "react_json"
    shape = "Thought: …\\nAction: tool\\nAction Input: {json}   ·   Observation: …"
    syntax = "action_input"
    reply_is_answer = False  # the answer is an action: `Action: finish` + `Action Input: {"answer": …}`
