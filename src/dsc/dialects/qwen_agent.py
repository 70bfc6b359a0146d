"""Qwen-Agent's function-call markers: after the assistant's text, per call
`✿FUNCTION✿: name\\n✿ARGS✿: {json}` (one per line), tool results as `✿RESULT✿: …`.
The system prompt follows Qwen-Agent's English function-call template.

One difference from Qwen-Agent's own prompting: Qwen-Agent continues the assistant turn with
`\\n✿RESULT✿: …\\n✿RETURN✿: ` and lets the model write the reply after it; dsc writes the results
as their own (observation) turn, so they stay out of the supervised assistant text, and the
reply as a plain assistant turn. The stop string `✿RESULT✿` is the same."""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dsc.dialects.base import (
    Dialect,
    Tools,
    Turn,
    arguments_object,
    function_of,
    joined,
    loaded_arguments,
    split_content,
    stored_arguments,
)
from dsc.record import ToolCall
from dsc.spec.registries import register_dialect

FN_NAME, FN_ARGS, FN_RESULT, FN_EXIT = "✿FUNCTION✿", "✿ARGS✿", "✿RESULT✿", "✿RETURN✿"
_FIRST = re.compile(rf"(?:^|\n){FN_NAME}: ")
_CALL = re.compile(rf"{FN_NAME}: (?P<name>[^\n]*)\n{FN_ARGS}: (?P<args>.*?)(?=\n{FN_NAME}: |\Z)", re.DOTALL)
_RESULT = re.compile(rf"{FN_RESULT}: (.*?)(?=\n{FN_RESULT}: |\Z)", re.DOTALL)


@register_dialect
class QwenAgent(Dialect):
    name = "qwen_agent"
    shape = "…\\n✿FUNCTION✿: tool\\n✿ARGS✿: {json}   ·   ✿RESULT✿: …"
    stop = (FN_RESULT,)

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        return joined(content, [f"{FN_NAME}: {c.name}\n{FN_ARGS}: "
                                f"{json.dumps(loaded_arguments(c, where), ensure_ascii=False)}" for c in calls])

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        first = _FIRST.search(text)
        if first is None:
            return Turn(text, [])
        at = first.start() + (1 if text[first.start()] == "\n" else 0)
        calls = []
        for i, m in enumerate(_CALL.finditer(text, at)):
            name = m.group("name").strip() if lenient else m.group("name")
            raw = m.group("args").strip() if lenient else m.group("args")
            calls.append(ToolCall(name, stored_arguments(arguments_object(raw, name, f"{where}, call {i}"))))
        return Turn(split_content(text, at), calls)

    def write_observations(self, results: Sequence[str]) -> str:
        return "\n".join(f"{FN_RESULT}: {r}" for r in results)

    def parse_observations(self, text: str) -> list[str] | None:
        if not text.startswith(f"{FN_RESULT}: "):
            return None
        return _RESULT.findall(text)

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        fns = [function_of(t) for t in tools]
        listing = "\n\n".join(f"### {f['name']}\n\n{f['name']}: {f.get('description', '')} Parameters: "
                              f"{json.dumps(f.get('parameters') or {}, ensure_ascii=False)} "
                              "Format the arguments as a JSON object." for f in fns)
        return ("# Tools\n\n## You have access to the following tools:\n\n" + listing
                + "\n\n## When you need to call a tool, please insert the following command in your reply, "
                  "which can be called zero or multiple times according to your needs:\n\n"
                  f"{FN_NAME}: The tool to use, should be one of [{','.join(f['name'] for f in fns)}]\n"
                  f"{FN_ARGS}: The input of the tool\n{FN_RESULT}: Tool results\n"
                  f"{FN_EXIT}: Reply based on tool results. Images need to be rendered as ![](url)")
