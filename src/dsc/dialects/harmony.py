"""gpt-oss's Harmony format: an assistant turn is a run of messages on channels — `analysis` (the
reasoning), `commentary` (tool calls, addressed `to=functions.NAME`), `final` (the answer) — each
`<|channel|>…<|message|>…` ended by `<|end|>`, a call by `<|call|>`, the answer by `<|return|>`;
a tool result is a message from `functions.NAME` to the assistant.

Sources: the chat template of openai/gpt-oss-20b (tests/data/official_templates/openai-gpt-oss-20b.jinja;
the writer is checked against it through transformers), openai/harmony `docs/format.md` and
`src/encoding.rs` (the reference renderer and header parser), vLLM's `openai_tool_parser.py` and
SGLang's `gpt_oss_detector.py`.

The text of a turn is what the model writes after the generation prompt `<|start|>assistant`, as
the template writes it: `<|channel|>analysis<|message|>…<|end|>` when there is reasoning, then
per call `<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>{json}<|call|>`
(the first message without its `<|start|>assistant`), or the answer
`<|start|>assistant<|channel|>final<|message|>…<|return|>`. One call per turn: the model stops at
`<|call|>` and the template writes a message's first call only. Results: per call
`<|start|>functions.NAME to=assistant<|channel|>commentary<|message|>{result as a JSON string}<|end|>`.

Reasoning: dsc's records carry it in the content — a tool-call turn's text is its reasoning (as the
template renders a tool call's `content`), an answer's reasoning is a `<think>…</think>` block
opening it. The template drops the reasoning of earlier turns except a tool-call turn with no
later final answer; `to_dialect`'s `analysis:` says what to keep (`official`, the default: as the
template; `keep`; `drop`). `reasoning_effort` (spec, or a row's `reasoning_effort` field) goes to the
system turn as `Reasoning: low|medium|high`.

The parser reads all three headers of a call Harmony knows: the template's
`assistant to=functions.X<|channel|>commentary json`, the renderer's `… <|constrain|>json` and the
model's own `<|channel|>commentary to=functions.X <|constrain|>json`. Lenient reading: a missing
final `<|call|>`/`<|return|>` (cut at a stop string), `<|end|>` for `<|return|>`, a JSON object
followed by text, and anything after a message the model addressed to itself from a tool."""
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
    check_free_of,
    function_of,
    leading_json,
    loaded_arguments,
    stored_arguments,
    system_with,
)
from dsc.record import BadRow, Message, ToolCall
from dsc.spec.registries import register_dialect

START, END, MESSAGE, CHANNEL, CALL, RETURN, CONSTRAIN = (
    "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|call|>", "<|return|>", "<|constrain|>")
TOKENS = (START, END, MESSAGE, CHANNEL, CALL, RETURN, CONSTRAIN)
NEXT = START + "assistant"  # what opens each message of a turn after its first
ANALYSIS_MODES = ("official", "keep", "drop")
_MESSAGE = re.compile(r"(?P<header>(?:(?!<\|message\|>|<\|start\|>).)*)<\|message\|>"
                      r"(?P<body>(?:(?!<\|end\|>|<\|call\|>|<\|return\|>|<\|start\|>).)*)"
                      r"(?P<end><\|end\|>|<\|call\|>|<\|return\|>)?", re.DOTALL)
_CHANNEL = re.compile(r"<\|channel\|>(?P<channel>[^\s<]+)")
_RECIPIENT = re.compile(r"(?:^|\s)to=(?P<to>[^\s<]+)")
_CALL_NAME = re.compile(r"(?:^|\s)to=(?:functions\.)?(?P<name>[^\s<]+)")
_THINK = re.compile(r"<think>(?P<think>.*?)</think>", re.DOTALL)
_RESULT = re.compile(r"<\|start\|>functions\.(?P<name>[^\s<]+) to=assistant<\|channel\|>commentary<\|message\|>"
                     r"(?P<body>.*?)<\|end\|>", re.DOTALL)


def split_thinking(content: str) -> tuple[str, str]:
    """(reasoning, answer) of an answer's content: a `<think>…</think>` block opening it, else none."""
    m = _THINK.match(content)
    return (m["think"], content[m.end():]) if m else ("", content)


def _call_header(name: str) -> str:
    return f" to=functions.{name}{CHANNEL}commentary json"


@register_dialect
class Harmony(Dialect):
    name = "harmony"
    shape = "<|channel|>analysis<|message|>…<|end|><|start|>assistant to=functions.tool<|channel|>commentary json" \
            "<|message|>{json}<|call|>   ·   <|start|>functions.tool to=assistant<|channel|>commentary<|message|>…<|end|>"
    stop = (CALL, RETURN)
    # One call per generation: the model stops at `<|call|>` (and the template writes `tool_calls[0]`
    # only), so a row with parallel calls is quarantined rather than silently cut.
    parallel = False
    writes_answers = True  # an answer is a `final` message

    def write_turn(self, content: str, calls: Any, tools: Tools, where: str = "turn") -> str:
        check_free_of(content, TOKENS, "the text", where)
        messages: list[str] = []
        if calls:
            self.check_parallel(calls, where)
            reasoning, rest = split_thinking(content)
            analysis = reasoning if reasoning and not rest.strip() else content
            if analysis:
                messages.append(f"{CHANNEL}analysis{MESSAGE}{analysis}{END}")
            for c in calls:
                check_free_of(c.name, TOKENS + (" ",), "a tool name", where)
                args = json.dumps(loaded_arguments(c, where), ensure_ascii=False)
                check_free_of(args, TOKENS, f"the arguments of '{c.name}'", where)
                messages.append(f"{_call_header(c.name)}{MESSAGE}{args}{CALL}")
        else:
            reasoning, answer = split_thinking(content)
            if reasoning:
                messages.append(f"{CHANNEL}analysis{MESSAGE}{reasoning}{END}")
            messages.append(f"{CHANNEL}final{MESSAGE}{answer}{RETURN}")
        return NEXT.join(messages)

    def parse_turn(self, text: str, tools: Tools, where: str = "turn", *, lenient: bool = False) -> Turn:
        if MESSAGE not in text:
            return Turn(text, [])
        analysis: list[str] = []
        final: str | None = None
        calls: list[ToolCall] = []
        at = 0
        while at < len(text):
            if at and text.startswith(START, at):
                at += len(START)
            elif at:
                if lenient:
                    break  # text after the last message
                raise BadRow(f"{where}: text between Harmony messages")
            m = _MESSAGE.match(text, at)
            if m is None:
                if lenient:
                    break
                raise BadRow(f"{where}: not a Harmony message: {text[at:at + 40]!r}")
            header, body, end = m["header"], m["body"], m["end"]
            at = m.end()
            if header.startswith("functions."):  # a tool's message: the model wrote a result itself
                if lenient:
                    break
                raise BadRow(f"{where}: a tool result inside an assistant turn")
            channel = _CHANNEL.search(header)
            recipient = _RECIPIENT.search(header.replace(CONSTRAIN, " " + CONSTRAIN))
            if not lenient:
                self._check_strict(header, end, recipient is not None, where)
            if recipient is not None:
                name = recipient["to"].removeprefix("functions.")
                raw = leading_json(body) if lenient else body
                calls.append(ToolCall(name, stored_arguments(arguments_object(raw, name, f"{where}, call {len(calls)}"))))
            elif channel is not None and channel["channel"] == "final":
                final = body
            else:  # analysis, or a commentary preamble: the turn's reasoning text
                analysis.append(body)
            if end is None:
                break  # cut at a stop string
        return Turn(self._content(analysis, final, bool(calls), lenient), calls)

    def turn_parts(self, turn: str) -> list[Piece]:
        """`thought`: the bodies of `analysis` (and commentary preamble) messages; per call the name
        after `to=functions.` and the JSON body; `answer`: the `final` message's body."""
        out: list[Piece] = []
        for m in _MESSAGE.finditer(turn):
            header = m["header"]
            if header.startswith(("functions.", START)):
                continue
            channel = _CHANNEL.search(header)
            to = _CALL_NAME.search(header)
            if to is not None:
                out += [("call_name", m.start("header") + to.start("name"), m.start("header") + to.end("name")),
                        ("arguments", *m.span("body"))]
            elif channel is not None and channel["channel"] == "final":
                out.append(("answer", *m.span("body")))
            else:
                out.append(("thought", *m.span("body")))
        return [p for p in out if p[2] > p[1]]

    @staticmethod
    def _content(analysis: list[str], final: str | None, has_calls: bool, lenient: bool) -> str:
        reasoning = "\n".join(analysis)
        if has_calls or final is None:
            return "" if lenient and not has_calls else reasoning
        if lenient:
            return final  # the answer alone (what an agent loop scores)
        return f"<think>{reasoning}</think>{final}" if reasoning else final

    @staticmethod
    def _check_strict(header: str, end: str | None, is_call: bool, where: str) -> None:
        """Exactly the headers and endings `write_turn` writes."""
        if is_call:
            ok = end == CALL and re.fullmatch(r"(?:assistant)? to=functions\.[^\s<]+<\|channel\|>commentary json", header)
        else:
            ok = (header.removeprefix("assistant"), end) in (
                (f"{CHANNEL}analysis", END), (f"{CHANNEL}final", RETURN))
        if not ok:
            raise BadRow(f"{where}: a Harmony message {header!r} … {end!r} as the template does not write it")

    def prepare_conversation(self, messages: list[Message], options: Mapping[str, Any]) -> list[Message]:
        """Drop reasoning as `analysis` says (see the module doc); `Reasoning: X` into the system turn."""
        mode = options.get("analysis") or "official"
        if mode not in ANALYSIS_MODES:
            raise ValueError(f"harmony: analysis must be one of {', '.join(ANALYSIS_MODES)}, got {mode!r}")
        out = []
        last = len(messages) - 1
        for i, m in enumerate(messages):
            if m.role == "assistant" and mode != "keep":
                later_final = any(x.role == "assistant" and not x.tool_calls for x in messages[i + 1:])
                if m.tool_calls and (mode == "drop" or later_final):
                    m = _with_content(m, "")
                elif not m.tool_calls and (mode == "drop" or i != last):
                    m = _with_content(m, split_thinking(m.content)[1])
            out.append(m)
        effort = options.get("reasoning_effort")
        if effort:
            out = system_with(out, f"Reasoning: {effort}")
        return out

    def write_observations(self, results: Sequence[str], calls: Sequence[ToolCall] | None = None) -> str:
        if calls is None or len(calls) != len(results):
            raise ValueError("harmony: each result names the tool it comes from (`calls`)")
        return "".join(f"{START}functions.{c.name} to=assistant{CHANNEL}commentary{MESSAGE}"
                       f"{json.dumps(r, ensure_ascii=False)}{END}" for c, r in zip(calls, results))

    def parse_observations(self, text: str) -> list[str] | None:
        if not text.startswith(f"{START}functions."):
            return None
        out = []
        for m in _RESULT.finditer(text):
            try:
                value = json.loads(m["body"])
            except json.JSONDecodeError:
                value = m["body"]
            out.append(value if isinstance(value, str) else m["body"])
        return out

    def tools_prompt(self, tools: Sequence[Mapping[str, Any]]) -> str:
        """The `# Tools` part of the template's developer message: a TypeScript-like namespace."""
        return "# Tools\n\n" + tool_namespace([function_of(t) for t in tools])


def _with_content(m: Message, content: str) -> Message:
    return Message(m.role, content, m.tool_calls, m.name, m.tool_call_id, m.loss, m.capability)


# ---------------------------------------------------------------------------------------------
# The tool namespace as the gpt-oss template renders it (render_tool_namespace,
# render_typescript_type): the common JSON-schema shapes; others are `any`, as there.
# ---------------------------------------------------------------------------------------------

_SCALAR = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean"}


def ts_type(spec: Mapping[str, Any]) -> str:
    t = spec.get("type")
    if t == "array":
        items = spec.get("items")
        if not items:
            return "any[]" + (" | null" if spec.get("nullable") else "")
        inner = _SCALAR.get(items.get("type")) if isinstance(items, Mapping) else None
        if inner is None:
            rendered = ts_type(items)
            inner = "any" if rendered == "object | object" or len(rendered) > 50 else rendered
        return inner + "[]" + (" | null" if spec.get("nullable") else "")
    if isinstance(t, list) and t:
        return " | ".join(t) if len(t) > 1 else t[0]
    if t == "string":
        if spec.get("enum"):
            return '"' + '" | "'.join(spec["enum"]) + '"'
        return "string" + (" | null" if spec.get("nullable") else "")
    if t in _SCALAR:
        return _SCALAR[t]
    if t == "object":
        props = spec.get("properties")
        if not props:
            return "object"
        required = spec.get("required") or []
        parts = [f"{k}{'' if k in required else '?'}: {ts_type(v)}" for k, v in props.items()]
        return "{\n" + ", ".join(parts) + "}"
    return "any"


def tool_namespace(fns: Sequence[Mapping[str, Any]]) -> str:
    out = "## functions\n\nnamespace functions {\n\n"
    for fn in fns:
        out += f"// {fn.get('description', '')}\ntype {fn['name']} = "
        params = fn.get("parameters") or {}
        props = params.get("properties")
        if not props:
            out += "() => any;\n\n"
            continue
        out += "(_: {\n"
        required = params.get("required") or []
        for name, spec in props.items():
            if spec.get("description"):
                out += f"// {spec['description']}\n"
            out += f"{name}{'' if name in required else '?'}: {ts_type(spec)}"
            if "default" in spec:
                default = spec["default"] if spec.get("enum") else json.dumps(spec["default"], ensure_ascii=False)
                out += f", // default: {default}"
            out += ",\n"
        out += "}) => any;\n\n"
    return out + "} // namespace functions"
