"""DeepSeek-V3.1 tool calls: after the assistant's text,
`<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{json}<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>`
(the markers use the fullwidth `｜` U+FF5C and `▁` U+2581, as DeepSeek's tokenizer spells them),
tool results as `<｜tool▁output▁begin｜>…<｜tool▁output▁end｜>`, consecutive results run together.

Sources: DeepSeek-V3.1's chat template as observed (the model card's tool-call format; the
template writes the arguments string as given and puts no separator between the text, the
section and the calls), vLLM's `deepseekv31_tool_parser.py` and SGLang's `deepseekv31_detector.py`
(content = the text before the section; calls read by `<｜tool▁call▁begin｜>…<｜tool▁call▁end｜>`,
the section's end not required). The template does not list tools; the tools prompt follows the
model card's `## Tools` block."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dsc.dialects.base import (
    Dialect,
    Piece,
    Section,
    Tools,
    Turn,
    arguments_object,
    function_of,
    stored_arguments,
)
from dsc.record import ToolCall
from dsc.spec.registries import register_dialect

SECTION = Section(begin="<｜tool▁calls▁begin｜>", end="<｜tool▁calls▁end｜>", call_begin="<｜tool▁call▁begin｜>",
                  sep="<｜tool▁sep｜>", call_end="<｜tool▁call▁end｜>")
OUTPUT_BEGIN, OUTPUT_END = "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>"
END_OF_SENTENCE = "<｜end▁of▁sentence｜>"
_OUTPUT = re.compile(f"{re.escape(OUTPUT_BEGIN)}(.*?){re.escape(OUTPUT_END)}", re.DOTALL)


@register_dialect
class DeepSeekV31(Dialect):
    name = "deepseek_v31"
    shape = "…<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool<｜tool▁sep｜>{json}<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>" \
            "   ·   <｜tool▁output▁begin｜>…<｜tool▁output▁end｜>"
    stop = (OUTPUT_BEGIN, END_OF_SENTENCE)

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        return SECTION.write(content, [c.name for c in calls], calls, where)

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        read = SECTION.read(text, where, lenient=lenient)
        if read is None:
            return Turn(text, [])
        content, calls = read
        return Turn(content, [ToolCall(name, stored_arguments(arguments_object(args, name, f"{where}, call {i}")))
                              for i, (name, args) in enumerate(calls)])

    def turn_parts(self, turn: str) -> list[Piece]:
        return SECTION.pieces(turn, lambda head: (0, len(head)))

    def write_observations(self, results: Sequence[str], calls: Any = None) -> str:
        return "".join(f"{OUTPUT_BEGIN}{r}{OUTPUT_END}" for r in results)

    def parse_observations(self, text: str) -> list[str] | None:
        if not text.startswith(OUTPUT_BEGIN):
            return None
        return _OUTPUT.findall(text)

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        listing = "\n\n".join(f"### {f['name']}\nDescription: {f.get('description', '')}\n\nParameters: "
                              f"{json.dumps(f.get('parameters') or {}, ensure_ascii=False)}"
                              for f in map(function_of, tools))
        return ("## Tools\nYou have access to the following tools:\n\n" + listing
                + "\n\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
                  f"{SECTION.begin}{SECTION.call_begin}tool_call_name{SECTION.sep}tool_call_arguments"
                  f"{SECTION.call_end}{{{{additional_tool_calls}}}}{SECTION.end}\n\n"
                  "Where:\n\n- `tool_call_name` must be an exact match to one of the available tools\n"
                  "- `tool_call_arguments` must be valid JSON that strictly follows the tool's Parameters Schema\n"
                  "- For multiple tool calls, chain them directly without separators or spaces")
