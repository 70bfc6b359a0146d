"""Format conversions, as a list of steps applied in order (each optionally to some rows):

    convert:
      - {step: react_to_tool_calls, tools: data/tools.json}          # lossless ReAct text → tool calls
      - {step: react_to_chat, where: {source: agentinstruct}, tools: [...], remove: ["(?s)Use the following format:.*"]}

Built-in steps:

- `react_to_tool_calls` / `tool_calls_to_react`: ReAct text ↔ structured tool calls, exact
  inverses of each other on well-formed data (the grammar: `dsc.dialects.react`).
- `to_dialect`: structured tool calls and tool messages → a tool-call dialect's text (Hermes,
  Qwen-Agent, ReAct, …; `dsc.dialects`), the tools listed in the system turn.
- `react_to_chat`: Agent-FLAN's alignment to natural chat — thoughts become plain assistant text,
  actions tool calls, observations tool messages, the final-answer action (`finish`) a plain
  answer, and the rigid format instructions (`remove` patterns) leave the system prompt and the
  first user turn. One way only.
- `cot_to_react`: FireAct's cast of a chain-of-thought answer (`Thought: …\\nAnswer: X`) into one
  ReAct step `Thought: …\\nAction: finish[X]` plus the final observation; `meta.method` = cot.
- `tag`: set `task` / `method` / `capability` on rows whose messages match a pattern (e.g.
  FireAct's Reflexion rows: `{step: tag, pattern: "let me do a reflection", set: {method: reflexion}}`).

Add your own with `@CONVERTERS.register("name", OptionsModel)` on `fn(conv, options, prepared) -> conv`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer, model_validator

from dsc.compiler.stages.transforms.common import add_step, render_text, template_context
from dsc.core.canonical import compact_json
from dsc.core.sandbox import JinjaText
from dsc.core.strict import Strict
from dsc.dialects.base import system_with
from dsc.dialects.react import OBSERVATION, Syntax, format_action, parse_action, thought_text
from dsc.dialects.tools import ToolDef, ToolsField, format_arguments, load_tools, parse_arguments, tool_from_spec
from dsc.record import BadRow, Conversation, Message, ToolCall
from dsc.spec.registries import CONVERTERS
from dsc.spec.steps import ConvertStep, prepare_entries


def _regexes(v: list[str]) -> list[str]:
    for p in v:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"{p!r} is not a valid regular expression: {e}") from None
    return v




# ---------------------------------------------------------------------------------------------
# Tools, resolved once
# ---------------------------------------------------------------------------------------------


@dataclass
class Toolbox:
    tools: dict[str, ToolDef] = field(default_factory=dict)
    infer: bool = False  # unknown tool names get one string parameter `input`

    def get(self, name: str, where: str) -> ToolDef:
        tool = self.tools.get(name)
        if tool is not None:
            return tool
        if self.infer:
            return ToolDef(name=name)
        raise BadRow(f"{where}: unknown tool '{name}' (declared: {', '.join(sorted(self.tools)) or 'none'})")

    def offered(self, exclude: str | None = None) -> list[dict[str, Any]] | None:
        specs = [t.openai() for n, t in self.tools.items() if n != exclude]
        return specs or None


def _toolbox(options: Any, base_dir: Path) -> Toolbox:
    tools = load_tools(options.tools, base_dir)
    return Toolbox({t.name: t for t in tools}, infer=not tools or options.unknown_tools == "infer")


class ReactOptions(Strict):
    tools: ToolsField = Field(None, description="declared tools (list or a JSON/YAML file); none: inferred")
    syntax: Syntax = "bracket"
    unknown_tools: Literal["error", "infer"] = "error"
    observation_prefix: str = OBSERVATION
    offer_tools: bool = Field(True, description="set the row's `tools` to the declared tools (when it has none)")


class ToReactOptions(Strict):
    tools: ToolsField = None
    syntax: Syntax = "bracket"
    unknown_tools: Literal["error", "infer"] = "infer"
    observation_prefix: str = OBSERVATION
    observation_role: Literal["user", "tool"] = "user"
    drop_tools: bool = Field(False, description="remove the row's `tools` (ReAct text lists them in the prompt)")


@CONVERTERS.register("react_to_tool_calls", ReactOptions, prepare=_toolbox)
def react_to_tool_calls(conv: Conversation, opts: ReactOptions, box: Toolbox) -> Conversation:
    """ReAct text → assistant tool calls + tool messages (lossless)."""
    out: list[Message] = []
    pending: ToolCall | None = None
    n = 0
    for i, m in enumerate(conv.messages):
        if m.role == "assistant" and not m.tool_calls:
            act = parse_action(m.content, opts.syntax)
            if act is not None:
                tool = box.get(act.name, f"message {i}")
                args = parse_arguments(tool, act.arg, opts.syntax, f"message {i}")
                n += 1
                pending = ToolCall(act.name, compact_json(args), id=f"call_{n}")
                out.append(Message("assistant", act.pre, tool_calls=[pending], loss=m.loss, capability=m.capability))
                continue
        if pending is not None and m.role in ("user", "tool") and m.content.startswith(opts.observation_prefix):
            out.append(Message("tool", m.content[len(opts.observation_prefix):], name=pending.name,
                               tool_call_id=pending.id, loss=m.loss))
            pending = None
            continue
        pending = None
        out.append(m)
    conv.messages = out
    if opts.offer_tools and conv.tools is None:
        conv.tools = box.offered()
    add_step(conv, "convert:react_to_tool_calls")
    return conv


@CONVERTERS.register("tool_calls_to_react", ToReactOptions, prepare=_toolbox)
def tool_calls_to_react(conv: Conversation, opts: ToReactOptions, box: Toolbox) -> Conversation:
    """Assistant tool calls + tool messages → ReAct text (the inverse of react_to_tool_calls)."""
    import json

    out: list[Message] = []
    for i, m in enumerate(conv.messages):
        if m.role == "assistant" and m.tool_calls:
            if len(m.tool_calls) != 1:
                raise BadRow(f"message {i}: {len(m.tool_calls)} tool calls in one turn; ReAct has one action per turn")
            call = m.tool_calls[0]
            tool = box.tools.get(call.name)
            text = format_action(m.content, call.name, format_arguments(tool, json.loads(call.arguments), opts.syntax),
                                 opts.syntax)
            out.append(Message("assistant", text, loss=m.loss, capability=m.capability))
        elif m.role == "tool":
            out.append(Message(opts.observation_role, opts.observation_prefix + m.content, loss=m.loss))
        else:
            out.append(m)
    conv.messages = out
    if opts.drop_tools:
        conv.tools = None
    add_step(conv, "convert:tool_calls_to_react")
    return conv


class ChatOptions(Strict):
    tools: ToolsField = None
    syntax: Syntax = "bracket"
    unknown_tools: Literal["error", "infer"] = "error"
    observation_prefix: str = OBSERVATION
    final: str | None = Field("finish", description="the action that gives the final answer (becomes plain text)")
    answer: JinjaText = Field("{% if thought %}{{ thought }}\n\n{% endif %}{{ answer }}",
                        description="Jinja text of the final answer, over `thought` and `answer`")
    remove: list[str] = Field(default_factory=list,
                              description="regexes of format instructions removed from the system prompt "
                                          "and the first user turn")

    @field_validator("remove")
    @classmethod
    def _valid(cls, v: list[str]) -> list[str]:
        return _regexes(v)


def _final_answer(arg: str, syntax: Syntax, tool: ToolDef | None) -> str:
    """The final-answer action's argument as text: its one parameter's value when it has one
    (`Action Input: {"answer": "..."}` → the answer), else the argument as written."""
    import json

    if syntax == "action_input" or (tool is not None and len(tool.params()) > 1):
        try:
            args = json.loads(arg)
        except json.JSONDecodeError:
            return arg.strip()
        if isinstance(args, dict) and len(args) == 1:
            value = next(iter(args.values()))
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return arg.strip()


@CONVERTERS.register("react_to_chat", ChatOptions, prepare=_toolbox)
def react_to_chat(conv: Conversation, opts: ChatOptions, box: Toolbox) -> Conversation:
    """Agent-FLAN alignment: ReAct text → natural chat with tool calls."""
    msgs = [Message(m.role, m.content, m.tool_calls, m.name, m.tool_call_id, m.loss, m.capability)
            for m in conv.messages]
    first_user = next((i for i, m in enumerate(msgs) if m.role == "user"), None)
    for i, m in enumerate(msgs):
        if m.role == "system" or i == first_user:
            for pattern in opts.remove:
                m.content = re.sub(pattern, "", m.content, flags=re.MULTILINE)
            m.content = m.content.strip()
    out: list[Message] = []
    pending: ToolCall | None = None
    finished = False
    n = 0
    for i, m in enumerate(msgs):
        if m.role == "system" and not m.content:
            continue  # it held only the format instructions
        if m.role == "assistant" and not m.tool_calls:
            act = parse_action(m.content, opts.syntax)
            if act is None:
                out.append(Message("assistant", thought_text(m.content), loss=m.loss, capability=m.capability))
                pending = None
                continue
            thought = thought_text(act.pre)
            if act.name == opts.final:
                answer = _final_answer(act.arg, opts.syntax, box.tools.get(act.name))
                text = render_text(opts.answer, {"thought": thought, "answer": answer}, "react_to_chat answer")
                out.append(Message("assistant", text, loss=m.loss, capability=m.capability))
                pending, finished = None, True
                continue
            tool = box.get(act.name, f"message {i}")
            args = parse_arguments(tool, act.arg, opts.syntax, f"message {i}")
            n += 1
            pending = ToolCall(act.name, compact_json(args), id=f"call_{n}")
            out.append(Message("assistant", thought, tool_calls=[pending], loss=m.loss, capability=m.capability))
            finished = False
            continue
        if m.role in ("user", "tool") and m.content.startswith(opts.observation_prefix.rstrip()):
            if finished:
                finished = False
                continue  # the environment's "Episode finished" after the final answer
            if pending is not None:
                text = m.content[len(opts.observation_prefix.rstrip()):].strip()
                out.append(Message("tool", text, name=pending.name, tool_call_id=pending.id, loss=m.loss))
                pending = None
                continue
        pending, finished = None, False
        out.append(m)
    conv.messages = out
    conv.tools = box.offered(exclude=opts.final)
    add_step(conv, "convert:react_to_chat")
    return conv


class CotOptions(Strict):
    answer: str = Field(r"^Answer: *(.*?)\s*\Z", description="regex of the answer line; group 1 is the answer")
    action: str = "finish"
    observation: JinjaText | None = Field("Observation: Episode finished, reward = {{ reward }}",
                                    description="Jinja text of the observation appended after the cast step")
    method: str | None = "cot"

    @field_validator("answer")
    @classmethod
    def _valid(cls, v: str) -> str:
        return _regexes([v])[0]


@CONVERTERS.register("cot_to_react", CotOptions)
def cot_to_react(conv: Conversation, opts: CotOptions, _: Any = None) -> Conversation:
    """FireAct's cast: `Thought: …\\nAnswer: X` → `Thought: …\\nAction: finish[X]` + the final observation."""
    last = max((i for i, m in enumerate(conv.messages) if m.role == "assistant"), default=None)
    if last is None:
        raise BadRow("cot_to_react: the row has no assistant turn")
    m = conv.messages[last]
    found = re.search(opts.answer, m.content, flags=re.MULTILINE | re.DOTALL)
    if found is None:
        raise BadRow(f"cot_to_react: no answer line matching {opts.answer!r} in the last assistant turn")
    m.content = m.content[:found.start()] + f"Action: {opts.action}[{found.group(1)}]"
    if opts.observation is not None:
        text = render_text(opts.observation, template_context(conv), "cot_to_react observation")
        conv.messages.insert(last + 1, Message("user", text, loss=False))
    if opts.method is not None:
        conv.meta.method = opts.method
    add_step(conv, "convert:cot_to_react")
    return conv


class DialectOptions(Strict):
    dialect: str = Field(description="the tool-call dialect the calls are written in (dsc.dialects)")
    tools: ToolsField = Field(None, description="declared tools (list or a JSON/YAML file); none: the row's own")
    unknown_tools: Literal["error", "infer"] = "infer"
    tools_in_system: bool = Field(True, description="list the row's tools in the system turn in the dialect's "
                                                     "words (and drop the `tools` column the template would render)")
    observation_role: Literal["user", "tool"] = "user"
    # Harmony only (left out of the dump when unset, so other specs' manifests keep their bytes):
    analysis: Literal["official", "keep", "drop"] | None = Field(
        None, description="harmony: which turns keep their reasoning (official: as gpt-oss's template — only a "
                          "tool-call turn with no later answer, and the last answer; keep: all; drop: none)")
    reasoning_effort: Literal["low", "medium", "high"] | None = Field(
        None, description="harmony: `Reasoning: X` in the system turn (a row's `reasoning_effort` field overrides)")

    @field_validator("dialect")
    @classmethod
    def _known(cls, v: str) -> str:
        from dsc.dialects.base import get_dialect

        get_dialect(v)
        return v

    @model_validator(mode="after")
    def _harmony_options(self) -> "DialectOptions":
        if (self.analysis is not None or self.reasoning_effort is not None) and self.dialect != "harmony":
            raise ValueError("`analysis` and `reasoning_effort` are options of the harmony dialect")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_dialect_options(self, handler: Any) -> dict[str, Any]:
        d = handler(self)
        for key in ("analysis", "reasoning_effort"):
            if d.get(key) is None:
                d.pop(key, None)
        return d

    def dialect_options(self, conv: Conversation) -> dict[str, Any]:
        """What the dialect's `prepare_conversation` reads (a row's `reasoning_effort` first)."""
        effort = conv.meta.extra.get("reasoning_effort")
        return {"analysis": self.analysis,
                "reasoning_effort": effort if effort in ("low", "medium", "high") else self.reasoning_effort}


@CONVERTERS.register("to_dialect", DialectOptions, prepare=_toolbox)
def to_dialect(conv: Conversation, opts: DialectOptions, box: Toolbox) -> Conversation:
    """Tool calls + tool messages → the dialect's text (assistant turns and observation turns)."""
    from dsc.dialects.base import get_dialect

    dialect = get_dialect(opts.dialect)
    offered = conv.tools if conv.tools is not None else box.offered()
    if not dialect.text:  # the canonical calls: the template writes them
        add_step(conv, f"convert:to_dialect:{dialect.name}")
        return conv
    try:
        messages = dialect.prepare_conversation(conv.messages, opts.dialect_options(conv))
    except ValueError as e:
        raise BadRow(f"to_dialect: {e}") from None
    tools: dict[str, ToolDef] = dict(box.tools)
    for j, spec in enumerate(offered or []):
        try:
            tool = tool_from_spec(spec, f"tools[{j}]")
        except ValueError as e:
            raise BadRow(f"to_dialect: {e}") from None
        tools.setdefault(tool.name, tool)
    out: list[Message] = []
    results: list[Message] = []
    asked: list[ToolCall] = []  # the calls of the last assistant turn, which the results answer

    def flush() -> None:
        if results:
            text = dialect.write_observations([r.content for r in results], answered(results, asked))
            out.append(Message(opts.observation_role, text, loss=results[0].loss))
            results.clear()

    for i, m in enumerate(messages):
        if m.role == "tool":
            results.append(m)
            continue
        flush()
        if m.role == "assistant" and (m.tool_calls or dialect.writes_answers):
            calls = m.tool_calls or []
            dialect.check_parallel(calls, f"message {i}")
            for call in calls:
                if call.name not in tools:
                    box.get(call.name, f"message {i}")  # unknown tools: an error unless inferred
            dialect.check_names(calls, f"message {i}")
            asked = list(calls) or asked
            text = dialect.write_turn(m.content, calls, tools, f"message {i}")
            out.append(Message("assistant", text, loss=m.loss, capability=m.capability))
        else:
            out.append(m)
    flush()
    if opts.tools_in_system and offered:
        out = system_with(out, dialect.tools_prompt(offered))
        conv.tools = None
    conv.messages = out
    add_step(conv, f"convert:to_dialect:{dialect.name}")
    return conv


def answered(results: list[Message], asked: list[ToolCall]) -> list[ToolCall]:
    """The call each tool message answers: by `tool_call_id`, else by position; a result with neither
    stands for a call of the tool it names."""
    by_id = {c.id: c for c in asked if c.id is not None}
    out = []
    for j, r in enumerate(results):
        call = by_id.get(r.tool_call_id) if r.tool_call_id is not None else None
        if call is None:
            call = asked[j] if j < len(asked) else ToolCall(r.name or "tool", "{}", id=r.tool_call_id)
        out.append(call)
    return out


class TagOptions(Strict):
    pattern: str
    role: Literal["system", "user", "assistant", "tool", "any"] = "assistant"
    set: dict[Literal["task", "method", "capability"], str] = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _valid(cls, v: str) -> str:
        return _regexes([v])[0]


@CONVERTERS.register("tag", TagOptions)
def tag(conv: Conversation, opts: TagOptions, _: Any = None) -> Conversation:
    """Set task/method/capability on rows with a message matching `pattern`."""
    rx = re.compile(opts.pattern)
    if any(rx.search(m.content) for m in conv.messages if opts.role in ("any", m.role)):
        for k, v in opts.set.items():
            setattr(conv.meta, k, v)
        add_step(conv, "convert:tag")
    return conv


def spec_dialect(steps: list[ConvertStep]) -> str | None:
    """The dialect the last `to_dialect` step writes the calls in; None when no step does."""
    for step in reversed(steps):
        if step.name == "to_dialect":
            return step.options.dialect
    return None


def dialect_inference(steps: list[ConvertStep], prepared: list[Any]) -> dict[str, Any] | None:
    """The manifest's `inference.dialect`: what the last `to_dialect` step wrote the calls in (the
    parser `dsc eval` reads a generation with, its stop strings, and the system prompt listing
    the declared tools); None when no step writes a dialect."""
    from dsc.dialects.base import get_dialect

    for step, box in reversed(list(zip(steps, prepared))):
        if step.name == "to_dialect":
            opts = step.options
            dialect = get_dialect(opts.dialect)
            offered = box.offered() if box is not None else None
            listed = opts.tools_in_system and dialect.text
            prompt = dialect.tools_prompt(offered) if listed and offered else None
            block = {**dialect.inference(), "observation_role": opts.observation_role, "tools_in_system": listed,
                     "system_prompt": prompt}
            if opts.reasoning_effort is not None:  # harmony: eval prompts state the same effort
                block["system_prompt"] = "\n\n".join(x for x in (f"Reasoning: {opts.reasoning_effort}", prompt) if x)
            return block
    return None


prepare_steps = prepare_entries  # what each step needs, read once (ValueError naming a bad file)


def apply_steps(conv: Conversation, steps: list[ConvertStep], prepared: list[Any]) -> Conversation:
    for s, p in zip(steps, prepared):
        if s.applies_to(conv):
            conv = s.definition.fn(conv, s.options, p)
    return conv
