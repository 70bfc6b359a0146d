"""Qwen-Agent's function-call markers: after the assistant's text, per call
`✿FUNCTION✿: name\\n✿ARGS✿: {json}` (one per line), tool results as `✿RESULT✿: …`.
The system prompt follows Qwen-Agent's English function-call template.

One difference from Qwen-Agent's own prompting: Qwen-Agent continues the assistant turn with
`\\n✿RESULT✿: …\\n✿RETURN✿: ` and lets the model write the reply after it; dsc writes the results
as their own (observation) turn, so they stay out of the supervised assistant text, and the
reply as a plain assistant turn. The stop string `✿RESULT✿` is the same.

Qwen-Agent's own conventions (QwenLM/Qwen-Agent `qwen_agent/llm/fncall_prompts/qwen_fncall_prompt.py`,
pinned by tests/dialects/test_new_dialects.py to the excerpt in tests/data/qwen_agent/):
- `code_interpreter` takes its code as a fenced block, not JSON: `✿ARGS✿: \n```py\n…\n```` (the
  tool's description says so: "Enclose the code within triple backticks"); its `{"code": …}`
  arguments are written so and read back so;
- lenient reading (a generation) trims arguments as Qwen-Agent does: after the last `}` of a JSON
  object, after the last closing fence of a code block (a trailing comment dropped);
- `qwen_agent_parallel` is the same dialect with Qwen-Agent's parallel-call instructions
  (`en_parallel`: N calls, then N results) in the system turn."""
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
    arguments_object,
    function_of,
    joined,
    leading_pieces,
    loaded_arguments,
    split_content,
    stored_arguments,
)
from dsc.record import BadRow, ToolCall
from dsc.spec.registries import register_dialect

FN_NAME, FN_ARGS, FN_RESULT, FN_EXIT = "✿FUNCTION✿", "✿ARGS✿", "✿RESULT✿", "✿RETURN✿"
_FIRST = re.compile(rf"(?:^|\n){FN_NAME}: ")
_CALL = re.compile(rf"{FN_NAME}: (?P<name>[^\n]*)\n{FN_ARGS}: (?P<args>.*?)(?=\n{FN_NAME}: |\Z)", re.DOTALL)
_CODE = re.compile(r"```[^\n]*\n(?P<code>.*)\n```", re.DOTALL)
CODE_INTERPRETER = "code_interpreter"
JSON_FORMAT = "Format the arguments as a JSON object."
CODE_FORMAT = "Enclose the code within triple backticks (`) at the beginning and end of the code."
_RESULT = re.compile(rf"{FN_RESULT}: (.*?)(?=\n{FN_RESULT}: |\Z)", re.DOTALL)


@register_dialect
class QwenAgent(Dialect):
    name = "qwen_agent"
    shape = "…\\n✿FUNCTION✿: tool\\n✿ARGS✿: {json}   ·   ✿RESULT✿: …"
    stop = (FN_RESULT,)

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        return joined(content, [f"{FN_NAME}: {c.name}\n{FN_ARGS}: {_args_text(c, where)}" for c in calls])

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        first = _FIRST.search(text)
        if first is None:
            return Turn(text, [])
        at = first.start() + (1 if text[first.start()] == "\n" else 0)
        calls = []
        for i, m in enumerate(_CALL.finditer(text, at)):
            name = m.group("name").strip() if lenient else m.group("name")
            raw = _trimmed(m.group("args")) if lenient else m.group("args")
            calls.append(ToolCall(name, stored_arguments(_args_of(raw, name, f"{where}, call {i}"))))
        return Turn(split_content(text, at), calls)

    def turn_parts(self, turn: str) -> list[Piece]:
        out, at = leading_pieces(turn, _FIRST.search(turn))
        if at is None:
            return out
        for m in _CALL.finditer(turn, at):
            out += [("call_name", *m.span("name")), ("arguments", *m.span("args"))]
        return [p for p in out if p[2] > p[1]]

    def write_observations(self, results: Sequence[str], calls: Any = None) -> str:
        return "\n".join(f"{FN_RESULT}: {r}" for r in results)

    def parse_observations(self, text: str) -> list[str] | None:
        if not text.startswith(f"{FN_RESULT}: "):
            return None
        return _RESULT.findall(text)

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        fns = [function_of(t) for t in tools]
        return "# Tools\n\n## You have access to the following tools:\n\n" + tool_descriptions(fns) + "\n\n" \
            + self.format_instructions(",".join(f["name"] for f in fns))

    def format_instructions(self, names: str) -> str:
        """Qwen-Agent's `FN_CALL_TEMPLATE_FMT_EN` (one call at a time, zero or more times)."""
        return ("## When you need to call a tool, please insert the following command in your reply, "
                "which can be called zero or multiple times according to your needs:\n\n"
                f"{FN_NAME}: The tool to use, should be one of [{names}]\n"
                f"{FN_ARGS}: The input of the tool\n{FN_RESULT}: Tool results\n"
                f"{FN_EXIT}: Reply based on tool results. Images need to be rendered as ![](url)")


@register_dialect
class QwenAgentParallel(QwenAgent):
    name = "qwen_agent_parallel"

    def format_instructions(self, names: str) -> str:
        """Qwen-Agent's `FN_CALL_TEMPLATE_FMT_PARA_EN` (N calls, then their N results)."""
        return ("## Insert the following command in your reply when you need to call N tools in parallel:\n\n"
                f"{FN_NAME}: The name of tool 1, should be one of [{names}]\n{FN_ARGS}: The input of tool 1\n"
                f"{FN_NAME}: The name of tool 2\n{FN_ARGS}: The input of tool 2\n...\n"
                f"{FN_NAME}: The name of tool N\n{FN_ARGS}: The input of tool N\n"
                f"{FN_RESULT}: The result of tool 1\n{FN_RESULT}: The result of tool 2\n...\n"
                f"{FN_RESULT}: The result of tool N\n"
                f"{FN_EXIT}: Reply based on tool results. Images need to be rendered as ![](url)")


def tool_descriptions(fns: Sequence[Mapping[str, Any]]) -> str:
    """Each tool as Qwen-Agent's `get_function_description` writes it (English), one blank line apart."""
    return "\n\n".join(
        (f"### {f['name']}\n\n{f['name']}: {f.get('description', '')} Parameters: "
         f"{json.dumps(f.get('parameters') or {}, ensure_ascii=False)} "
         f"{CODE_FORMAT if f['name'] == CODE_INTERPRETER else JSON_FORMAT}").rstrip() for f in fns)


def _is_code(call: ToolCall, args: dict[str, Any]) -> bool:
    return call.name == CODE_INTERPRETER and list(args) == ["code"] and isinstance(args["code"], str)


def _args_text(call: ToolCall, where: str) -> str:
    """JSON arguments; code_interpreter's code as a fenced block after a newline (as Qwen-Agent writes it)."""
    args = loaded_arguments(call, where)
    if _is_code(call, args):
        return f"\n```py\n{args['code']}\n```"
    return json.dumps(args, ensure_ascii=False)


def _args_of(raw: str, name: str, where: str) -> dict[str, Any]:
    if name == CODE_INTERPRETER and raw.lstrip("\n").startswith("```"):
        m = _CODE.fullmatch(raw.lstrip("\n"))
        if m is None:
            raise BadRow(f"{where}: the code block of '{name}' is not closed")
        return {"code": m.group("code")}
    return arguments_object(raw, name, where)


def _trimmed(raw: str) -> str:
    """Qwen-Agent's `remove_trailing_comment_of_fn_args`: a generation's arguments cut after the JSON
    object's last `}` or the code block's last fence."""
    raw = raw.strip()
    if raw.startswith("{") and raw.rfind("}") > 0:
        return raw[:raw.rfind("}") + 1]
    if raw.startswith("```") and raw.rfind("\n```") > 0:
        return raw[:raw.rfind("\n```") + 4]
    return raw
