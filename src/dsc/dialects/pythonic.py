"""Pythonic tool calls (Llama-3.2 / Llama-4 style): the calls as one Python list of keyword calls,
`[get_weather(city='Paris'), get_time(tz='CET')]`, after the assistant's text on its own line;
tool results one `{"output": …}` JSON per line (the `ipython` turn of vLLM's Llama templates).

Sources: meta-llama/llama-models `models/llama3_2/text_prompt_format.md` and
`models/llama4/prompt_format.md` (the call list, keyword arguments only), vLLM's
`pythonic_tool_parser.py` / `llama4_pythonic_tool_parser.py` and SGLang's `pythonic_detector.py`
(parsed with `ast`). The published writers disagree on quoting (Meta's encoder writes strings
double-quoted without escaping, vLLM's templates unquoted or all-quoted), so dsc writes real
Python literals (`repr`: escaped strings, `True`/`None`, lists, dicts), which every parser reads.

Arguments are read with `ast` only (`ast.parse` + `ast.literal_eval` of each value; nothing is
evaluated): positional arguments or non-literal values are a BadRow. Tool and argument names are
Python identifiers (an argument named `from` cannot be written). Lenient reading: the first call list anywhere in the text (SGLang), Llama-4's
`<|python_start|>`/`<|python_end|>` around it dropped, a list cut short before its `]` closed,
text after it dropped."""
from __future__ import annotations

import ast
import json
import keyword
import re
from collections.abc import Mapping, Sequence
from typing import Any

from dsc.dialects.base import (
    Dialect,
    Piece,
    Tools,
    Turn,
    content_pieces,
    function_of,
    joined,
    loaded_arguments,
    split_content,
    stored_arguments,
)
from dsc.record import BadRow, ToolCall
from dsc.spec.registries import register_dialect

_START = re.compile(r"\[\s*[A-Za-z_]\w*\s*\(")
_PYTHON_TAGS = ("<|python_start|>", "<|python_end|>")


def _literal(value: Any, where: str) -> str:
    """A JSON value as a Python literal (`repr` of the value; dict keys are JSON strings)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v, where) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_literal(v, where)}" for k, v in value.items()) + "}"
    raise BadRow(f"{where}: {value!r} is not a JSON value")


def _calls(node: ast.expr, where: str) -> list[ToolCall]:
    if not isinstance(node, ast.List):
        raise BadRow(f"{where}: pythonic tool calls are a list of calls")
    calls = []
    for i, call in enumerate(node.elts):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
            raise BadRow(f"{where}, call {i}: not a call of a tool by name")
        if call.args or any(k.arg is None for k in call.keywords):
            raise BadRow(f"{where}, call {i}: '{call.func.id}' takes keyword arguments only")
        args = {}
        for k in call.keywords:
            try:
                args[k.arg] = ast.literal_eval(k.value)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                raise BadRow(f"{where}, call {i}: argument '{k.arg}' of '{call.func.id}' is not a literal") from None
        try:
            calls.append(ToolCall(call.func.id, stored_arguments(args)))
        except (TypeError, ValueError):  # a tuple, a set, bytes: not JSON
            raise BadRow(f"{where}, call {i}: arguments of '{call.func.id}' are not JSON values") from None
    return calls


def _expression(text: str) -> ast.expr | None:
    try:
        return ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


class _Positions:
    """An ast position (line from 1, UTF-8 byte column) of a text parsed from `turn[at:]` → an index of `turn`."""

    def __init__(self, turn: str, at: int):
        self.turn, self.lines = turn, [at]
        for i, ch in enumerate(turn[at:], at):
            if ch == "\n":
                self.lines.append(i + 1)

    def of(self, line: int | None, col: int | None) -> int:
        start = self.lines[(line or 1) - 1]
        end = self.turn.find("\n", start)
        return start + len(self.turn[start:end if end >= 0 else len(self.turn)].encode()[:col or 0].decode())


@register_dialect
class Pythonic(Dialect):
    name = "pythonic"
    shape = "…\\n[tool(k='v'), other(n=1)]   ·   {\"output\": …} per line"
    stop = ("<|eom_id|>", "<|eom|>")
    tool_names = re.compile(r"[A-Za-z_]\w*")

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        if not calls:
            return content
        self.check_names(calls, where)
        written = []
        for c in calls:
            args = loaded_arguments(c, where)
            bad = [k for k in args if not k.isidentifier() or keyword.iskeyword(k)]
            if bad:
                raise BadRow(f"{where}: argument name {bad[0]!r} cannot be written in dialect '{self.name}'")
            written.append(f"{c.name}(" + ", ".join(f"{k}={_literal(v, where)}" for k, v in args.items()) + ")")
        return joined(content, ["[" + ", ".join(written) + "]"])

    def turn_parts(self, turn: str) -> list[Piece]:
        """`call_name`: a call's function name; `arguments`: its keyword arguments, first to last."""
        for m in _START.finditer(turn):
            at = m.start()
            if at and turn[at - 1] != "\n":
                continue
            node = _expression(turn[at:])
            if node is None or not isinstance(node, ast.List) or not node.elts:
                continue
            node = ast.parse(turn[at:].rstrip(), mode="eval").body  # positions in turn[at:]
            where = _Positions(turn, at)
            out = content_pieces(turn, 0, len(split_content(turn, at)), True)
            for call in node.elts:
                if isinstance(call, ast.Call):
                    out.append(("call_name", where.of(call.func.lineno, call.func.col_offset),
                                where.of(call.func.end_lineno, call.func.end_col_offset)))
                    if call.keywords:
                        first, last = call.keywords[0], call.keywords[-1]
                        out.append(("arguments", where.of(first.lineno, first.col_offset),
                                    where.of(last.end_lineno, last.end_col_offset)))
            return out
        return content_pieces(turn, 0, len(turn), False)

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        if lenient:
            return self._generated(text, where)
        # the calls are the last line(s): the first line start from which the rest is one call list
        for m in _START.finditer(text):
            at = m.start()
            if at and text[at - 1] != "\n":
                continue
            node = _expression(text[at:])
            if node is not None and isinstance(node, ast.List) and node.elts:
                return Turn(split_content(text, at), _calls(node, where))
        return Turn(text, [])

    def _generated(self, text: str, where: str) -> Turn:
        body = text
        for tag in _PYTHON_TAGS:
            body = body.replace(tag, "")
        first = _START.search(body)
        if first is None:
            return Turn(text, [])
        rest = body[first.start():]
        # the shortest prefix ending in "]" that is one call list; else the text cut short
        for end in (i + 1 for i, ch in enumerate(rest) if ch == "]"):
            node = _expression(rest[:end])
            if isinstance(node, ast.List):
                return Turn(split_content(body, first.start()), _calls(node, where))
        node = _expression(rest + "]")  # every call complete, the list's `]` cut off
        if isinstance(node, ast.List):
            return Turn(split_content(body, first.start()), _calls(node, where))
        raise BadRow(f"{where}: the tool-call list cannot be read as Python")

    def write_observations(self, results: Sequence[str], calls: Any = None) -> str:
        return "\n".join(json.dumps({"output": r}, ensure_ascii=False) for r in results)

    def parse_observations(self, text: str) -> list[str] | None:
        if not text.startswith('{"output": '):
            return None
        try:
            return [json.loads(line)["output"] for line in text.split("\n")]
        except (json.JSONDecodeError, KeyError, TypeError):
            return None

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        """Llama-3.2's zero-shot function-calling system prompt (llama-models' prompt format doc)."""
        specs = [dict(function_of(t)) for t in tools]
        return ("You are an expert in composing functions. You are given a question and a set of possible functions.\n"
                "Based on the question, you will need to make one or more function/tool calls to achieve the "
                "purpose.\nIf none of the function can be used, point it out. If the given question lacks the "
                "parameters required by the function,\nalso point it out. You should only return the function call "
                "in tools call sections.\n\nIf you decide to invoke any of the function(s), you MUST put it in the "
                "format of [func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
                "You SHOULD NOT include any other text in the response.\n\nHere is a list of functions in JSON format "
                "that you can invoke.\n\n" + json.dumps(specs, indent=4, ensure_ascii=False))
