"""Hermes / Qwen2.5 tool calls: `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>` after the
assistant's text (one block per call, one per line, as Qwen2.5's official template writes them),
tool results as `<tool_response>\\n…\\n</tool_response>` (consecutive results in one turn)."""
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
    call_from_json,
    call_json,
    content_pieces,
    function_of,
    joined,
    json_call_pieces,
    split_content,
)
from dsc.spec.registries import register_dialect

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)
_BLOCK_LENIENT = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)  # a cut-short close
_RESPONSE = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)

TOOLS_PROMPT = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                "You are provided with function signatures within <tools></tools> XML tags:\n<tools>{tools}\n</tools>"
                "\n\nFor each function call, return a json object with function name and arguments within "
                "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, "
                "\"arguments\": <args-json-object>}}\n</tool_call>")


def tagged_calls(text: str, where: str, *, lenient: bool) -> Turn | None:
    """The `<tool_call>` blocks of a turn; None when it has none."""
    first = text.find(OPEN)
    if first < 0:
        return None
    blocks = (_BLOCK_LENIENT if lenient else _BLOCK).findall(text, first)
    calls = [call_from_json(b, f"{where}, call {i}") for i, b in enumerate(blocks)]
    return Turn(split_content(text, first), calls)


def tagged_pieces(turn: str) -> list[Piece]:
    """`Dialect.turn_parts` of a turn with `<tool_call>` blocks (Hermes, Qwen2.5's template)."""
    first = turn.find(OPEN)
    if first < 0:
        return content_pieces(turn, 0, len(turn), False)
    out = content_pieces(turn, 0, len(split_content(turn, first)), True)
    for m in _BLOCK.finditer(turn, first):
        out += json_call_pieces(turn, m.start(1), m.end(1))
    return out


@register_dialect
class Hermes(Dialect):
    name = "hermes"
    shape = "…\\n<tool_call>\\n{\"name\": …, \"arguments\": {…}}\\n</tool_call>   ·   <tool_response>\\n…\\n</tool_response>"
    stop = ("<tool_response>",)

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        return joined(content, [f"{OPEN}\n{call_json(c, where)}\n{CLOSE}" for c in calls])

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        return tagged_calls(text, where, lenient=lenient) or Turn(text, [])

    def turn_parts(self, turn: str) -> list[Piece]:
        return tagged_pieces(turn)

    def write_observations(self, results: Sequence[str], calls: Any = None) -> str:
        return "\n".join(f"<tool_response>\n{r}\n</tool_response>" for r in results)

    def parse_observations(self, text: str) -> list[str] | None:
        if not text.startswith("<tool_response>"):
            return None
        return _RESPONSE.findall(text)

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        specs = [t if "function" in t else {"type": "function", "function": function_of(t)} for t in tools]
        return TOOLS_PROMPT.format(tools="".join("\n" + json.dumps(t, ensure_ascii=False) for t in specs))
