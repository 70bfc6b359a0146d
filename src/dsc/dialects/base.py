"""What a tool-call dialect is, and the registry of dialects.

A dialect is one way of writing tool calls into an assistant turn's text and tool results into
the observation turns: ReAct's `Action: search[q]`, Hermes' `<tool_call>{json}</tool_call>`, …
Each is one module with a writer and a parser, both directions between the canonical record's
calls (`ToolCall`: name + arguments JSON) and the dialect's text. The convert step `to_dialect`
writes; the eval agent loop parses a model's generation with the same dialect (its name is in
the artifact's manifest), so a model trained in a dialect is evaluated by that dialect's parser.
"""
from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping, Sequence
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


def schema_types(schema: Mapping[str, Any]) -> list[str]:
    """The JSON-schema `type` of a parameter as a list (none declared: [])."""
    t = schema.get("type")
    return [t] if isinstance(t, str) else list(t or [])


def parameter_schema(tools: Tools, name: str, key: str) -> Mapping[str, Any]:
    """The declared schema of tool `name`'s parameter `key` ({} when the tool or key is not declared)."""
    tool = tools.get(name)
    props = (tool.parameters.get("properties") or {}) if tool is not None else {}
    schema = props.get(key) if isinstance(props, Mapping) else None
    return schema if isinstance(schema, Mapping) else {}


# Dialects that write each argument as text (Qwen3-Coder's `<parameter=k>`, GLM's `<arg_value>`)
# read a value back by its declared type: a parameter typed only `string` is its text; any other
# (or none) is read as a literal, the text itself when it is none. `literal` raises ValueError.
ReadLiteral = Callable[[str], Any]


def json_literal(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(text) from None


def python_literal(text: str) -> Any:
    """JSON, else a Python literal (`True`, `None`, `'x'`: what `str()` of a value writes)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ValueError(text) from None


def typed_value(text: str, schema: Mapping[str, Any], literal: ReadLiteral) -> Any:
    """An argument written as text → its value, by the parameter's declared type (see above)."""
    if schema_types(schema) == ["string"]:
        return text
    try:
        return literal(text)
    except ValueError:
        return text


def value_text(value: Any, schema: Mapping[str, Any], literal: ReadLiteral, other: Callable[[Any], str]) -> str:
    """The inverse of `typed_value`: a string as it is (as the published templates write it) unless
    it would read back as another value (`"42"` for an untyped parameter), then JSON-quoted; other
    values as `other` spells them (JSON, or Python's `str` for Qwen3-Coder)."""
    if not isinstance(value, str):
        return other(value)
    back = typed_value(value, schema, literal)
    return value if isinstance(back, str) and back == value else json.dumps(value, ensure_ascii=False)


def check_free_of(value: str, markers: Sequence[str], what: str, where: str) -> None:
    """A writer's strict check: a text holding the dialect's own delimiter cannot be read back."""
    for m in markers:
        if m in value:
            raise BadRow(f"{where}: {what} cannot be written: it holds {m!r}, which ends it in this dialect")


def leading_json(text: str) -> str:
    """The JSON value a text starts with (what a model wrote after it dropped); else the text."""
    stripped = text.strip()
    try:
        _, end = json.JSONDecoder().raw_decode(stripped)
    except json.JSONDecodeError:
        return stripped
    return stripped[:end]


def split_content(text: str, at: int) -> str:
    """The text before a dialect's first call marker at `at`, less the one newline the writer put there."""
    content = text[:at]
    return content[:-1] if content.endswith("\n") else content


# ---------------------------------------------------------------------------------------------
# The pieces of a written assistant turn, which `loss: {weights: [{part: …}]}` names (dsc.chat.weights)
# ---------------------------------------------------------------------------------------------

# Every dialect's turn has them: its reasoning (`thought`), per call the tool's name (`call_name`)
# and its arguments as written (`arguments`), and a turn's answer (`answer`).
TURN_PARTS = ("thought", "call_name", "arguments", "answer")
Piece = tuple[str, int, int]  # (part, start, end): a character range of the turn's text
_THINK_BLOCK = re.compile(r"<think>(?P<think>.*?)</think>", re.DOTALL)
_NAME_KEY = re.compile(r'\{\s*"name"\s*:\s*')
_ARGUMENTS_KEY = re.compile(r'\s*,\s*"(?:arguments|parameters)"\s*:\s*')
_DECODER = json.JSONDecoder()


def leading_pieces(turn: str, first: Any) -> tuple[list[Piece], int | None]:
    """The pieces of a turn's text before its calls, and where the calls start: `first` is the
    match of the first call (it may begin with the newline that separates the calls); None: a
    turn without calls, all of it text."""
    if first is None:
        return content_pieces(turn, 0, len(turn), False), None
    at = first.start() + (1 if turn[first.start()] == "\n" else 0)
    return content_pieces(turn, 0, len(split_content(turn, at)), True), at


def content_pieces(text: str, start: int, end: int, has_calls: bool) -> list[Piece]:
    """The text besides the calls, text[start:end]: the `thought` of a turn with calls; else a
    `<think>…</think>` block opening it is the `thought` (inside the tags) and the rest the `answer`."""
    if end <= start:
        return []
    if has_calls:
        return [("thought", start, end)]
    m = _THINK_BLOCK.match(text, start, end)
    if m is None:
        return [("answer", start, end)]
    return [p for p in (("thought", m.start("think"), m.end("think")), ("answer", m.end(), end)) if p[2] > p[1]]


def json_value_end(text: str, at: int) -> int | None:
    """Where the JSON value starting at `at` ends; None when none starts there."""
    try:
        return _DECODER.raw_decode(text, at)[1]
    except json.JSONDecodeError:
        return None


def json_call_pieces(text: str, start: int, end: int) -> list[Piece]:
    """`call_name` (inside its quotes) and `arguments` (the object) of a JSON call
    `{"name": …, "arguments": {…}}` written at text[start:end] (nothing when it is not one)."""
    m = _NAME_KEY.match(text, start, end)
    name_end = json_value_end(text, m.end()) if m else None
    if m is None or name_end is None or name_end > end or text[m.end()] != '"':
        return []
    out: list[Piece] = [("call_name", m.end() + 1, name_end - 1)]
    k = _ARGUMENTS_KEY.match(text, name_end, end)
    args_end = json_value_end(text, k.end()) if k else None
    if k is not None and args_end is not None and args_end <= end:
        out.append(("arguments", k.end(), args_end))
    return out


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
    # True: an answer (a turn without calls) is written too, not only call turns (Harmony's `final` channel).
    writes_answers: ClassVar[bool] = False
    # True: the parts `loss.weights` names are read over the whole supervised text (ReAct's labels,
    # `observation` included), not per assistant turn (`turn_parts`).
    parts_over_text: ClassVar[bool] = False
    # Tool names the dialect can write (any by default; pythonic calls: Python identifiers).
    tool_names: ClassVar[re.Pattern[str]] = re.compile(r".+", re.DOTALL)

    def write_turn(self, content: str, calls: Sequence[ToolCall], tools: Tools, where: str = "turn") -> str:
        raise NotImplementedError

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        """`lenient`: a model's generation (see each dialect); else exactly what `write_turn` writes."""
        raise NotImplementedError

    def turn_parts(self, turn: str) -> list[Piece]:
        """The pieces of a written assistant turn (what `write_turn` wrote; for a structured dialect
        the template's text of the turn), as (part, start, end) ranges of `turn`, in order: `thought`
        (the reasoning, or the text before the calls), per call `call_name` and `arguments` (as
        written, without the dialect's markup around them), `answer` (the text of a turn without
        calls). Ranges are non-empty and do not overlap; markup belongs to no piece."""
        raise NotImplementedError(f"dialect '{self.name}' does not name the parts of its turns")

    def write_observations(self, results: Sequence[str], calls: Sequence[ToolCall] | None = None) -> str:
        """The observation turn of `results`; `calls`: the calls they answer, in order (their names
        and ids, which some dialects write: Harmony's `functions.NAME`, Kimi's `## Return of ID`)."""
        raise NotImplementedError

    def parse_observations(self, text: str) -> list[str] | None:
        """The results an observation turn holds; None when the text is not one."""
        raise NotImplementedError

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        """The system-prompt text that offers `tools` (OpenAI tool specs) in this dialect."""
        raise NotImplementedError

    def prepare_conversation(self, messages: list[Message], options: Mapping[str, Any]) -> list[Message]:
        """Conversation-level decisions before the turns are written (a turn's writer sees one turn):
        Kimi's conversation-wide call counter, Harmony's dropping of earlier reasoning. `options`:
        the `to_dialect` step's dialect options. The default leaves the messages as they are."""
        return messages

    def check_names(self, calls: Sequence[ToolCall], where: str) -> None:
        for c in calls:
            if not self.tool_names.fullmatch(c.name):
                raise BadRow(f"{where}: tool name {c.name!r} cannot be written in dialect '{self.name}'")

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


# ---------------------------------------------------------------------------------------------
# Shared by the dialects that write calls between special tokens, one JSON per call, inside one
# section (DeepSeek-V3.1, Kimi-K2): content, SECTION_BEGIN, (CALL_BEGIN head SEP {json} CALL_END)*,
# SECTION_END. The head is what each names a call by (DeepSeek: the name; Kimi: an id).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    begin: str
    end: str
    call_begin: str
    sep: str
    call_end: str

    def write(self, content: str, heads: Sequence[str], calls: Sequence[ToolCall], where: str) -> str:
        if not calls:
            return content
        markers = (self.call_end, self.end, self.sep)
        body = ""
        for h, c in zip(heads, calls):
            args = json.dumps(loaded_arguments(c, where), ensure_ascii=False)
            check_free_of(h + args, markers + (self.call_begin,), f"call '{c.name}'", where)
            body += f"{self.call_begin}{h}{self.sep}{args}{self.call_end}"
        return f"{content}{self.begin}{body}{self.end}"

    def pieces(self, text: str, name_in_head: Callable[[str], tuple[int, int]]) -> list[Piece]:
        """`Dialect.turn_parts` of what `write` writes; `name_in_head`: where a head names the tool."""
        at = text.find(self.begin)
        if at < 0:
            return content_pieces(text, 0, len(text), False)
        out = content_pieces(text, 0, at, True)
        i = at + len(self.begin)
        while text.startswith(self.call_begin, i):
            head = i + len(self.call_begin)
            sep = text.find(self.sep, head)
            stop = text.find(self.call_end, sep) if sep >= 0 else -1
            if stop < 0:
                break
            a, b = name_in_head(text[head:sep])
            out += [("call_name", head + a, head + b), ("arguments", sep + len(self.sep), stop)]
            i = stop + len(self.call_end)
        return [p for p in out if p[2] > p[1]]

    def read(self, text: str, where: str, *, lenient: bool) -> tuple[str, list[tuple[str, str]]] | None:
        """(content, [(head, arguments JSON)]) of a turn; None when it has no section.

        Strict: exactly what `write` writes. Lenient (a generation): the section's end, a last
        call's end (cut at a stop string) may be missing, whitespace around heads and arguments
        and text after the section are dropped, a JSON object followed by text is cut to it."""
        at = text.find(self.begin)
        if at < 0:
            return None
        rest = text[at + len(self.begin):]
        stop = rest.find(self.end)
        if stop >= 0:
            if not lenient and stop + len(self.end) != len(rest):
                raise BadRow(f"{where}: text after {self.end}")
            rest = rest[:stop]
        elif not lenient:
            raise BadRow(f"{where}: no {self.end}")
        out: list[tuple[str, str]] = []
        while rest:
            if not rest.startswith(self.call_begin):
                if lenient and not rest.strip():
                    break
                raise BadRow(f"{where}: expected {self.call_begin} in the tool-call section")
            rest = rest[len(self.call_begin):]
            sep = rest.find(self.sep)
            if sep < 0:
                raise BadRow(f"{where}: a call without {self.sep}")
            head, rest = rest[:sep], rest[sep + len(self.sep):]
            end = rest.find(self.call_end)
            if end < 0 and not lenient:
                raise BadRow(f"{where}: a call without {self.call_end}")
            args, rest = (rest, "") if end < 0 else (rest[:end], rest[end + len(self.call_end):])
            out.append((head.strip(), leading_json(args)) if lenient else (head, args))
        return text[:at], out
