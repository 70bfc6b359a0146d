"""What a tool-call dialect is, and the registry of dialects.

A dialect is one way of writing tool calls into an assistant turn's text and tool results into
the observation turns: ReAct's `Action: search[q]`, Hermes' `<tool_call>{json}</tool_call>`, …
Each is one module with a writer and a parser, both directions between the canonical record's
calls (`ToolCall`: name + arguments JSON) and the dialect's text. The convert step `to_dialect`
writes; the eval agent loop parses a model's generation with the same dialect (its name is in
the artifact's manifest), so a model trained in a dialect is evaluated by that dialect's parser.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from dsc.core.canonical import compact_json
from dsc.record import BadRow, Message, ToolCall
from dsc.spec.registries import DIALECTS


@dataclass(frozen=True, slots=True)
class Turn:
    """An assistant turn read back: its text besides the calls, and the calls in order."""

    content: str
    calls: list[ToolCall]


def stored_arguments(args: dict[str, Any]) -> str:
    """Arguments as the canonical record stores them (one spelling, decided in one place)."""
    return compact_json(args)


def arguments_object(text: str, name: str, where: str) -> dict[str, Any]:
    """Arguments written as JSON text → the object (an empty text: no arguments); BadRow otherwise."""
    try:
        args = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise BadRow(f"{where}: arguments of '{name}' are not valid JSON: {e.msg}") from None
    if not isinstance(args, dict):
        raise BadRow(f"{where}: arguments of '{name}' must be a JSON object")
    return args


def loaded_arguments(call: ToolCall, where: str) -> dict[str, Any]:
    return arguments_object(call.arguments, call.name, where)


class ToolLike(Protocol):
    """What a dialect needs of a declared tool (`dsc.dialects.tools.ToolDef` is one)."""

    name: str
    parameters: dict[str, Any]

    def params(self) -> list[str]: ...


Tools = Mapping[str, ToolLike]


def call_json(call: ToolCall, where: str) -> str:
    """`{"name": …, "arguments": {…}}` as JSON dialects write a call (Hermes, Qwen2.5's template)."""
    return json.dumps({"name": call.name, "arguments": loaded_arguments(call, where)}, ensure_ascii=False)


def call_from_json(text: str, where: str) -> ToolCall:
    """A JSON call `{"name", "arguments" | "parameters"}`; arguments an object or a JSON string of one."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRow(f"{where}: tool call is not valid JSON: {e.msg}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        raise BadRow(f"{where}: a tool call is a JSON object with a string 'name'")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args = arguments_object(args, obj["name"], where)
    if not isinstance(args, dict):
        raise BadRow(f"{where}: arguments of '{obj['name']}' must be a JSON object")
    return ToolCall(obj["name"], stored_arguments(args), id=obj.get("id") if isinstance(obj.get("id"), str) else None)


def split_content(text: str, at: int) -> str:
    """The text before a dialect's first call marker at `at`, less the one newline the writer put there."""
    content = text[:at]
    return content[:-1] if content.endswith("\n") else content


def joined(content: str, blocks: Sequence[str]) -> str:
    """Content, then each call block, one per line (no leading newline when there is no content)."""
    return "\n".join(([content] if content else []) + list(blocks))


class Dialect:
    """One tool-call dialect. Subclasses set the class attributes and the four text functions."""

    name: ClassVar[str]
    shape: ClassVar[str]  # the text shape, for docs
    stop: ClassVar[tuple[str, ...]] = ()  # stop strings at inference (the model must not write results)
    parallel: ClassVar[bool] = True  # several calls in one turn
    # A turn with no call is the final answer (JSON dialects); else an invalid step (ReAct: `finish[x]`).
    reply_is_answer: ClassVar[bool] = True
    text: ClassVar[bool] = True  # False: the calls stay structured (the template writes them)

    def write_turn(self, content: str, calls: Sequence[ToolCall], tools: Tools, where: str = "turn") -> str:
        raise NotImplementedError

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        """`lenient`: a model's generation (see each dialect); else exactly what `write_turn` writes."""
        raise NotImplementedError

    def write_observations(self, results: Sequence[str]) -> str:
        raise NotImplementedError

    def parse_observations(self, text: str) -> list[str] | None:
        """The results an observation turn holds; None when the text is not one."""
        raise NotImplementedError

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        """The system-prompt text that offers `tools` (OpenAI tool specs) in this dialect."""
        raise NotImplementedError

    def check_parallel(self, calls: Sequence[ToolCall], where: str) -> None:
        if len(calls) > 1 and not self.parallel:
            raise BadRow(f"{where}: {len(calls)} tool calls in one turn; dialect '{self.name}' "
                         "has one call per turn")

    def inference(self) -> dict[str, Any]:
        """What the manifest records for inference (with the spec's system prompt added)."""
        return {"name": self.name, "parser": f"{type(self).__module__}.{type(self).__qualname__}.parse_turn",
                "stop": list(self.stop), "reply_is_answer": self.reply_is_answer}


def function_of(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """The function part of an OpenAI tool spec (`{type: function, function: {...}}` or flat)."""
    fn = spec.get("function")
    return fn if isinstance(fn, Mapping) else spec


def get_dialect(name: str) -> Dialect:
    """The registered dialect `name` (ValueError with a did-you-mean otherwise)."""
    return DIALECTS.get(name).dialect


def system_with(messages: list[Any], text: str) -> list[Any]:
    """`text` closing the system turn (after a blank line), or a new first system turn: where a
    dialect's tool listing goes, in training rows (`Message`s) and eval prompts (dicts) alike."""
    out = list(messages)
    as_dicts = not out or isinstance(out[0], dict)
    if out and _role(out[0]) == "system":
        head = out[0]
        content = _content(head)
        joined = f"{content}\n\n{text}" if content else text
        out[0] = ({**head, "content": joined} if isinstance(head, dict)
                  else Message("system", joined, loss=head.loss, capability=head.capability))
    else:
        out.insert(0, {"role": "system", "content": text} if as_dicts else Message("system", text, loss=False))
    return out


def _role(m: Any) -> str:
    return m["role"] if isinstance(m, dict) else m.role


def _content(m: Any) -> str:
    return (m["content"] if isinstance(m, dict) else m.content) or ""
