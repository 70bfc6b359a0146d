"""Kimi-K2 tool calls: after the assistant's text, `<|tool_calls_section_begin|>`, per call
`<|tool_call_begin|>functions.NAME:IDX<|tool_call_argument_begin|>{json}<|tool_call_end|>`, then
`<|tool_calls_section_end|>`; each tool result as `## Return of functions.NAME:IDX\\n…`.

Source: MoonshotAI/Kimi-K2 `docs/tool_call_guidance.md` ("The format of the tool ID is
`functions.{func_name}:{idx}`"), vLLM's `kimi_k2_tool_parser.py`, SGLang's `kimik2_detector.py`.
Kimi's chat template writes a call's id as it is given, and IDX counts the calls of the whole
conversation (SGLang: "a conversation-level counter"), so `to_dialect` numbers the calls of a
row 0, 1, 2, … across its turns (`prepare_conversation`) and the results name the same ids.
The parser takes the name from the id (`functions.` and `:IDX` removed; names may hold `.`)."""
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
    stored_arguments,
)
from dsc.record import BadRow, Message, ToolCall
from dsc.spec.registries import register_dialect

SECTION = Section(begin="<|tool_calls_section_begin|>", end="<|tool_calls_section_end|>",
                  call_begin="<|tool_call_begin|>", sep="<|tool_call_argument_begin|>", call_end="<|tool_call_end|>")
RETURN = "## Return of "
_ID = re.compile(r"(?:functions\.)?(?P<name>.+):(?P<index>\d+)")
_RESULT = re.compile(rf"(?:^|\n){RETURN}(?:functions\.)?[^\s:]+:\d+\n")


def call_id(name: str, index: int) -> str:
    return f"functions.{name}:{index}"


def _id_of(call: ToolCall, index: int) -> str:
    """The call's own id when it is already Kimi's `functions.NAME:IDX`, else the one `index` makes."""
    m = _ID.fullmatch(call.id or "")
    return call.id if m is not None and call.id.startswith("functions.") and m["name"] == call.name \
        else call_id(call.name, index)  # type: ignore[return-value]


def _name_in_id(head: str) -> tuple[int, int]:
    m = _ID.fullmatch(head)
    return m.span("name") if m else (0, len(head))


@register_dialect
class KimiK2(Dialect):
    name = "kimi_k2"
    shape = "…<|tool_calls_section_begin|><|tool_call_begin|>functions.tool:0<|tool_call_argument_begin|>{json}" \
            "<|tool_call_end|><|tool_calls_section_end|>   ·   ## Return of functions.tool:0\\n…"
    stop = (RETURN, "<|im_end|>")

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        return SECTION.write(content, [_id_of(c, i) for i, c in enumerate(calls)], calls, where)

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        read = SECTION.read(text, where, lenient=lenient)
        if read is None:
            return Turn(text, [])
        content, heads = read
        calls = []
        for i, (head, args) in enumerate(heads):
            m = _ID.fullmatch(head)
            if m is None:
                raise BadRow(f"{where}, call {i}: {head!r} is not a call id functions.NAME:IDX")
            name = m["name"]
            calls.append(ToolCall(name, stored_arguments(arguments_object(args, name, f"{where}, call {i}")), id=head))
        return Turn(content, calls)

    def turn_parts(self, turn: str) -> list[Piece]:
        return SECTION.pieces(turn, _name_in_id)

    def prepare_conversation(self, messages: list[Message], options: Mapping[str, Any]) -> list[Message]:
        """Ids `functions.NAME:IDX`, IDX counting the row's calls; tool messages follow their call's id."""
        renamed: dict[str, str] = {}
        out, n = [], 0
        for m in messages:
            if m.role == "assistant" and m.tool_calls:
                calls = []
                for c in m.tool_calls:
                    new = call_id(c.name, n)
                    if c.id is not None:
                        renamed[c.id] = new
                    calls.append(ToolCall(c.name, c.arguments, id=new))
                    n += 1
                m = Message(m.role, m.content, calls, m.name, m.tool_call_id, m.loss, m.capability)
            elif m.role == "tool" and m.tool_call_id in renamed:
                m = Message(m.role, m.content, m.tool_calls, m.name, renamed[m.tool_call_id], m.loss, m.capability)
            out.append(m)
        return out

    def write_observations(self, results: Sequence[str], calls: Sequence[ToolCall] | None = None) -> str:
        if calls is None or len(calls) != len(results):
            raise ValueError("kimi_k2: each result names the call it answers (`calls`)")
        return "\n".join(f"{RETURN}{_id_of(c, i)}\n{r}" for i, (c, r) in enumerate(zip(calls, results)))

    def parse_observations(self, text: str) -> list[str] | None:
        if not text.startswith(RETURN):
            return None
        return _RESULT.split(text)[1:]

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        specs = [t if "function" in t else {"type": "function", "function": dict(t)} for t in tools]
        return "# Tools\n" + json.dumps(specs, ensure_ascii=False)
