"""OpenAI `tool_calls`: the canonical record's own structured calls (the chat template writes them).

As text (what a model trained this way generates, and what `dsc eval` parses): the assistant's
text, then one JSON call `{"name": …, "arguments": {…}}` per line; `<tool_call>` tags around a
call (Qwen2.5's template) are read too, and a generation's first bare JSON object."""
from __future__ import annotations

import json
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
    joined,
    json_call_pieces,
)
from dsc.dialects.hermes import OPEN, Hermes, tagged_calls, tagged_pieces
from dsc.record import BadRow
from dsc.spec.registries import register_dialect


def _is_call(line: str) -> bool:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("name"), str)


@register_dialect
class OpenAI(Dialect):
    name = "openai"
    shape = "assistant `tool_calls` (structured; as text: one {\"name\", \"arguments\"} JSON per line)"
    text = False  # `to_dialect` keeps the calls structured

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        return joined(content, [call_json(c, where) for c in calls])

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        tagged = tagged_calls(text, where, lenient=lenient)
        if tagged is not None:
            return tagged
        lines = text.split("\n")
        n = len(lines)
        while n > 0 and _is_call(lines[n - 1]):
            n -= 1
        if n < len(lines):
            calls = [call_from_json(line, f"{where}, call {i}") for i, line in enumerate(lines[n:])]
            return Turn("\n".join(lines[:n]), calls)
        start = text.find("{") if lenient else -1
        if start >= 0:  # a generation's first JSON object, text after it dropped
            try:
                _, end = json.JSONDecoder().raw_decode(text[start:])
                if _is_call(text[start:start + end]):
                    return Turn(text[:start].rstrip("\n"), [call_from_json(text[start:start + end], where)])
            except (json.JSONDecodeError, BadRow):
                pass
        return Turn(text, [])

    def turn_parts(self, turn: str) -> list[Piece]:
        """`turn`: the template's text of the turn (its calls written by the template): `<tool_call>`
        blocks as Qwen2.5's template writes them; else JSON calls one per line at its end."""
        if OPEN in turn:
            return tagged_pieces(turn)
        lines = turn.split("\n")
        n = len(lines)
        while n > 0 and _is_call(lines[n - 1]):
            n -= 1
        if n == len(lines):
            return content_pieces(turn, 0, len(turn), False)
        pos = len("\n".join(lines[:n]))  # the end of the text before the calls
        out = content_pieces(turn, 0, pos, True)
        for j, line in enumerate(lines[n:]):
            start = pos + (1 if n or j else 0)
            out += json_call_pieces(turn, start, start + len(line))
            pos = start + len(line)
        return out

    def write_observations(self, results: Sequence[str], calls: Any = None) -> str:
        if len(results) != 1:
            raise ValueError("openai: each result is its own tool message")
        return results[0]

    def parse_observations(self, text: str) -> list[str] | None:
        return [text]

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        return Hermes().tools_prompt(tools)  # what chat templates with tools (Qwen2.5) put in the system turn
