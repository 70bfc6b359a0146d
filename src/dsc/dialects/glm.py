"""GLM-4.5 / GLM-4.6 tool calls: after the assistant's text, per call (one per line)

    <tool_call>NAME
    <arg_key>KEY</arg_key>
    <arg_value>VALUE</arg_value>
    </tool_call>

(a newline after the name even with no arguments), tool results as
`<tool_response>\\n…\\n</tool_response>` (GLM's template opens their turn with `<|observation|>`,
the token the model stops at after its calls).

Sources: GLM-4.5/4.6's chat template as rendered by llama.cpp's copy (the published file was not
reachable, so no template is vendored), vLLM's `glm4_moe_tool_parser.py` (`glm45`) and SGLang's
`glm4_moe_detector.py`. Values as the template writes them: a string as it is, any other value as
JSON (`true`, `null`, `{"a": 1}`); read back by the tool's JSON schema (`base.typed_value`; vLLM:
a `string` parameter is its text, others JSON), a string that would read back as another value
written JSON-quoted. Lenient reading: a missing `</tool_call>` (or `</arg_value>`) at the end is
tolerated, text after the calls is dropped."""
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
    function_of,
    joined,
    json_literal,
    leading_pieces,
    loaded_arguments,
    parameter_schema,
    split_content,
    stored_arguments,
    typed_value,
    value_text,
)
from dsc.dialects.hermes import Hermes
from dsc.record import BadRow, ToolCall
from dsc.spec.registries import register_dialect

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_MARKERS = ("<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", OPEN, CLOSE)
_FIRST = re.compile(r"(?:^|\n)<tool_call>")
_STRICT_CALL = re.compile(r"<tool_call>(?P<name>[^\n<]+)\n(?P<args>(?:<arg_key>.*?</arg_key>\n<arg_value>.*?"
                          r"</arg_value>\n)*?)</tool_call>", re.DOTALL)
_ARG = re.compile(r"<arg_key>(?P<key>.*?)</arg_key>\s*<arg_value>(?P<value>.*?)(?:</arg_value>|\Z)", re.DOTALL)

TOOLS_PROMPT = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>"
                "\n\nFor each function call, output the function name and arguments within the following XML format:\n"
                "<tool_call>{{function-name}}\n<arg_key>{{arg-key-1}}</arg_key>\n<arg_value>{{arg-value-1}}</arg_value>\n"
                "<arg_key>{{arg-key-2}}</arg_key>\n<arg_value>{{arg-value-2}}</arg_value>\n...\n</tool_call>")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


@register_dialect
class Glm45(Dialect):
    name = "glm45"
    shape = "…\\n<tool_call>tool\\n<arg_key>k</arg_key>\\n<arg_value>v</arg_value>\\n</tool_call>" \
            "   ·   <tool_response>\\n…\\n</tool_response>"
    stop = ("<|observation|>", "<tool_response>")
    tool_names = re.compile(r"[^\n<]+")

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        self.check_names(calls, where)
        blocks = []
        for i, c in enumerate(calls):
            args = ""
            for key, value in loaded_arguments(c, where).items():
                text = value_text(value, parameter_schema(tools, c.name, key), json_literal, _json_text)
                check_free_of(key, _MARKERS, f"argument name {key!r} of call {i}", where)
                check_free_of(text, _MARKERS, f"argument '{key}' of call {i}", where)
                args += f"<arg_key>{key}</arg_key>\n<arg_value>{text}</arg_value>\n"
            blocks.append(f"{OPEN}{c.name}\n{args}{CLOSE}")
        return joined(content, blocks)

    def turn_parts(self, turn: str) -> list[Piece]:
        """`arguments`: a call's `<arg_key>`/`<arg_value>` lines, less the last newline."""
        out, at = leading_pieces(turn, _FIRST.search(turn))
        if at is None:
            return out
        for m in _STRICT_CALL.finditer(turn, at):
            out.append(("call_name", *m.span("name")))
            if m["args"]:
                out.append(("arguments", m.start("args"), m.end("args") - 1))
        return out

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        first = _FIRST.search(text)
        if first is None:
            return Turn(text, [])
        at = first.start() + (1 if text[first.start()] == "\n" else 0)
        rest = text[at:]
        calls = []
        if lenient:
            for i, block in enumerate(rest.split(OPEN)[1:]):
                block = block.split(CLOSE, 1)[0]
                name, newline, body = block.partition("\n")
                if not newline:  # GLM writes a newline after every name: the name may be cut short
                    raise BadRow(f"{where}, call {i}: <tool_call> cut short before the end of its tool name")
                if not name.strip():
                    raise BadRow(f"{where}, call {i}: <tool_call> without a tool name")
                calls.append(self._call(name.strip(), [(m["key"], m["value"]) for m in _ARG.finditer(body)], tools))
        else:
            pos = 0
            while True:
                m = _STRICT_CALL.match(rest, pos)
                if m is None:
                    raise BadRow(f"{where}, call {len(calls)}: not a <tool_call> block as GLM writes it")
                calls.append(self._call(m["name"], [(a["key"], a["value"]) for a in _ARG.finditer(m["args"])], tools))
                pos = m.end()
                if pos == len(rest):
                    break
                if not rest.startswith(f"\n{OPEN}", pos):
                    raise BadRow(f"{where}: text after the tool calls")
                pos += 1
        return Turn(split_content(text, at), calls)

    def _call(self, name: str, pairs: list[tuple[str, str]], tools: Tools) -> ToolCall:
        args = {k: typed_value(v, parameter_schema(tools, name, k), json_literal) for k, v in pairs}
        return ToolCall(name, stored_arguments(args))

    def write_observations(self, results: Sequence[str], calls: Any = None) -> str:
        return Hermes().write_observations(results)

    def parse_observations(self, text: str) -> list[str] | None:
        return Hermes().parse_observations(text)

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        specs = [t if "function" in t else {"type": "function", "function": function_of(t)} for t in tools]
        return TOOLS_PROMPT.format(tools="\n".join(json.dumps(t, ensure_ascii=False) for t in specs))
