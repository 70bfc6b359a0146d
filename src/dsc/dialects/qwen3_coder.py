"""Qwen3-Coder's XML tool calls: after the assistant's text and a blank line, per call

    <tool_call>
    <function=NAME>
    <parameter=KEY>
    VALUE
    </parameter>
    </function>
    </tool_call>

(calls one per line), tool results as Hermes writes them (`<tool_response>\\n…\\n</tool_response>`).

Sources: Qwen3-Coder's chat template (tests/data/official_templates/Qwen-Qwen3-Coder.jinja, the
`render_extra_keys` revision; the writer is checked against it through transformers), vLLM's
`qwen3coder_tool_parser.py` and SGLang's `qwen3_coder_detector.py`.

Values are text: a string as it is (it may span lines), objects and arrays as JSON, other values
as Python's `str` writes them (`True`, `None`, `1.5`), as the template does. The parser reads a
value back by the tool's JSON schema (`base.typed_value`: a `string` parameter is its text, any
other is read as JSON or a Python literal); a string that would read back as another value (`"7"`
for an untyped parameter) is written JSON-quoted so that it comes back a string. Lenient reading
(vLLM's): a missing `</parameter>`, `</function>` or `</tool_call>` is tolerated, one newline
each side of a value is removed, text after the calls is dropped; no `<tool_call>` but a
`<function=` reads from there."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dsc.dialects.base import (
    Dialect,
    Piece,
    Tools,
    Turn,
    check_free_of,
    content_pieces,
    function_of,
    loaded_arguments,
    parameter_schema,
    python_literal,
    stored_arguments,
    typed_value,
    value_text,
)
from dsc.dialects.hermes import Hermes
from dsc.record import BadRow, ToolCall
from dsc.spec.registries import register_dialect

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CLOSERS = ("</parameter>", "</function>", OPEN, CLOSE, "<parameter=", "<function=")
_STRICT_CALL = re.compile(r"<tool_call>\n<function=(?P<name>[^>\n]+)>\n(?P<params>(?:<parameter=[^>\n]+>\n.*?\n"
                          r"</parameter>\n)*?)</function>\n</tool_call>", re.DOTALL)
_STRICT_PARAM = re.compile(r"<parameter=(?P<key>[^>\n]+)>\n(?P<value>.*?)\n</parameter>\n", re.DOTALL)
_LENIENT_PARAM = re.compile(r"<parameter=(?P<key>[^>\n]*)>(?P<value>.*?)(?:</parameter>|(?=<parameter=)|\Z)",
                            re.DOTALL)


def _literal_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _one_newline_off(value: str) -> str:
    value = value.removeprefix("\n")
    return value.removesuffix("\n")


@register_dialect
class Qwen3Coder(Dialect):
    name = "qwen3_coder"
    shape = "…\\n\\n<tool_call>\\n<function=tool>\\n<parameter=k>\\nvalue\\n</parameter>\\n</function>\\n</tool_call>" \
            "   ·   <tool_response>\\n…\\n</tool_response>"
    stop = ("<tool_response>",)
    tool_names = re.compile(r"[^>\n<]+")

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        self.check_names(calls, where)
        blocks = []
        for i, c in enumerate(calls):
            params = []
            for key, value in loaded_arguments(c, where).items():
                if not key or any(ch in key for ch in "<>\n"):
                    raise BadRow(f"{where}: argument name {key!r} cannot be written in dialect '{self.name}'")
                text = value_text(value, parameter_schema(tools, c.name, key), python_literal, _literal_text)
                check_free_of(text, _CLOSERS, f"argument '{key}' of call {i}", where)
                params.append(f"<parameter={key}>\n{text}\n</parameter>\n")
            blocks.append(f"{OPEN}\n<function={c.name}>\n{''.join(params)}</function>\n{CLOSE}")
        if not blocks:
            return content
        return (f"{content}\n\n" if content else "") + "\n".join(blocks)

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        first = text.find(OPEN)
        if first < 0 and lenient:
            first = text.find("<function=")
        if first < 0:
            return Turn(text, [])
        content = text[:first]
        content = content.removesuffix("\n\n")
        calls = self._lenient(text[first:], tools, where) if lenient else self._strict(text[first:], tools, where)
        return Turn(content, calls)

    def _call(self, name: str, pairs: list[tuple[str, str]], tools: Tools) -> ToolCall:
        args = {k: typed_value(v, parameter_schema(tools, name, k), python_literal) for k, v in pairs}
        return ToolCall(name, stored_arguments(args))

    def _strict(self, text: str, tools: Tools, where: str) -> list[ToolCall]:
        calls, at = [], 0
        while True:
            m = _STRICT_CALL.match(text, at)
            if m is None:
                raise BadRow(f"{where}, call {len(calls)}: not a <tool_call> block as Qwen3-Coder writes it")
            pairs = [(p["key"], p["value"]) for p in _STRICT_PARAM.finditer(m["params"])]
            calls.append(self._call(m["name"], pairs, tools))
            at = m.end()
            if at == len(text):
                return calls
            if not text.startswith(f"\n{OPEN}", at):
                raise BadRow(f"{where}: text after the tool calls")
            at += 1

    def _lenient(self, text: str, tools: Tools, where: str) -> list[ToolCall]:
        calls = []
        blocks = text.split(OPEN) if text.startswith(OPEN) else ["", text]
        for i, block in enumerate(blocks[1:]):
            block = block.split(CLOSE, 1)[0]
            fn = block.find("<function=")
            if fn < 0:
                raise BadRow(f"{where}, call {i}: <tool_call> without <function=NAME>")
            head_end = block.find(">", fn)
            if head_end < 0:
                raise BadRow(f"{where}, call {i}: <function= without its closing '>'")
            name = block[fn + len("<function="):head_end].strip()
            body = block[head_end + 1:].split("</function>", 1)[0]
            pairs = [(m["key"], _one_newline_off(m["value"])) for m in _LENIENT_PARAM.finditer(body)]
            calls.append(self._call(name, pairs, tools))
        return calls

    def turn_parts(self, turn: str) -> list[Piece]:
        """`arguments`: a call's `<parameter=…>` blocks, from the first to the last `</parameter>`."""
        first = turn.find(OPEN)
        if first < 0:
            return content_pieces(turn, 0, len(turn), False)
        out = content_pieces(turn, 0, len(turn[:first].removesuffix("\n\n")), True)
        for m in _STRICT_CALL.finditer(turn, first):
            out.append(("call_name", *m.span("name")))
            if m["params"]:
                out.append(("arguments", m.start("params"), m.end("params") - 1))  # less the last newline
        return out

    def write_observations(self, results: Sequence[str], calls: Any = None) -> str:
        return Hermes().write_observations(results)

    def parse_observations(self, text: str) -> list[str] | None:
        return Hermes().parse_observations(text)

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        """The `# Tools` block Qwen3-Coder's template writes after the system text."""
        return "# Tools\n\nYou have access to the following tools:\n\n<tools>" + "".join(
            _function_xml(function_of(t)) for t in tools) + "\n</tools>" + _FORMAT


_FORMAT = ("\n\nIf you choose to call a tool ONLY reply in the following format with NO suffix:\n\n<tool_call>\n"
           "<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n"
           "<parameter=example_parameter_2>\nvalue_2\n</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\n"
           "Reminder:\n- Function calls MUST follow the specified format: the tool calling block MUST begin with an "
           "opening <tool_call> tag and end with a closing </tool_call> tag.\n- Required parameters MUST be "
           "specified\n- You may provide optional reasoning for your function call in natural language BEFORE the "
           "function call, but NOT after\n- If there is no function call available, answer the question like normal "
           "with your current knowledge and do not tell the user about function calls\n</IMPORTANT>")


def _jinja_string(value: Any) -> str:
    """Jinja's `|string` of a JSON value (Python's `str`: `True`, `['a', 'b']`)."""
    return str(value)


def _extra_keys(obj: Mapping[str, Any], handled: tuple[str, ...]) -> str:
    return "".join(f"\n<{k}>{_literal_text(v) if isinstance(v, (dict, list)) else _jinja_string(v)}</{k}>"
                   for k, v in obj.items() if k not in handled)


def _function_xml(fn: Mapping[str, Any]) -> str:
    out = f"\n<function>\n<name>{fn['name']}</name>"
    if "description" in fn:
        out += f"\n<description>{str(fn['description']).strip()}</description>"
    out += "\n<parameters>"
    params = fn.get("parameters")
    props = params.get("properties") if isinstance(params, Mapping) else None
    for name, spec in (props.items() if isinstance(props, Mapping) else ()):
        out += f"\n<parameter>\n<name>{name}</name>"
        if "type" in spec:
            out += f"\n<type>{_jinja_string(spec['type'])}</type>"
        if "description" in spec:
            out += f"\n<description>{str(spec['description']).strip()}</description>"
        out += _extra_keys(spec, ("name", "type", "description")) + "\n</parameter>"
    if isinstance(params, Mapping):
        out += _extra_keys(params, ("type", "properties"))
    return out + "\n</parameters>" + _extra_keys(fn, ("type", "name", "description", "parameters")) + "\n</function>"
