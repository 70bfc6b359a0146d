"""Direct answering and the agent loop (any tool-call dialect), batched over items.

Agent loop, per step, for every unfinished episode at once: build the prompt, generate until the
observation stop string or the end of turn, parse the action, run the tool, append the
observation, up to `max_steps` model turns; `finish[x]` (or a `finish` tool call, or a reply with
no tool call in a JSON dialect) ends an episode with prediction x. FireAct's loop
(`generation.py`) is the model: stop at "\\nObservation:", `type[args]` actions, at most 11 turns.

A generation is read by the parser of the dialect the model was trained in
(`dsc.dialects`, `AgentSettings.dialect`): the very grammar the build wrote the
training rows with, in its lenient reading of generated text. Parallel calls of one turn (JSON
dialects) are all run, their results given back together as the dialect groups them.

Two ways to give the observation back, matching how the training trajectories were written:
- `turn`: the model's output is an assistant message and the observation a new user (or tool)
  message; the prompt is re-rendered with the template (NAT, FireAct's chat format);
- `inline`: one long assistant turn; "\\nObservation: ...\\n" is appended to the raw text and
  generation continues (FireAct's alpaca format).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal, Protocol, Sequence

from dsc.dialects.base import Dialect, Turn, get_dialect
from dsc.dialects.react import ReactDialect
from dsc.dialects.tools import ToolDef
from dsc.record import BadRow, ToolCall
from dsc.runtime.prompting import PromptBuilder
from dsc.runtime.tools import FINISH, Tool


class Generator(Protocol):
    """Optionally also an `on_batch` attribute: a callable told how many prompts each batch of
    `generate` completed (`run_direct` sets it to report progress)."""

    def generate(self, prompts: list[str], *, stop: Sequence[str], max_new_tokens: int) -> list[str]:
        """One completion per prompt, cut before the first stop string."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text before the earliest stop string (generators may include the stop itself)."""
    cut = len(text)
    for s in stop:
        if s:
            at = text.find(s)
            if 0 <= at < cut:
                cut = at
    return text[:cut]


@dataclass
class Action:
    name: str  # the tool name as generated
    argument: str  # the tool's one argument
    call_id: str | None = None
    call: ToolCall | None = None  # the call as the dialect's parser read it


def _tool_defs(tools: dict[str, Tool]) -> dict[str, ToolDef]:
    """The eval tools as the dialects' parsers see them (one string parameter each). Not validated:
    a registered name the ReAct grammar cannot spell is simply never parsed from ReAct text."""
    return {n: ToolDef.model_construct(name=n, description=t.description,
                                       parameters=t.schema()["function"]["parameters"]) for n, t in tools.items()}


def _resolve(name: str, tools: dict[str, Tool]) -> str:
    """The tool a generated name means: as written, else lower-cased (`Search[...]` → search)."""
    return name if name in tools or name.lower() not in tools else name.lower()


def _action(call: ToolCall, tools: dict[str, Tool]) -> Action:
    name = _resolve(call.name, tools)
    args = json.loads(call.arguments)
    tool = tools.get(name)
    value = args[tool.parameter] if tool is not None and tool.parameter in args else next(iter(args.values()), "")
    return Action(name=name, argument=value if isinstance(value, str) else json.dumps(value, ensure_ascii=False),
                  call_id=call.id, call=call)


def dialect_for(actions: str, *named: str | None) -> Dialect:
    """The first dialect `named`, else the one the kind of `actions` implies (tool_calls: openai,
    else react)."""
    return get_dialect(next((n for n in named if n), None) or ("openai" if actions == "tool_calls" else "react"))


def parse_generated(text: str, dialect: Dialect, tools: dict[str, Tool]) -> tuple[Turn | None, str | None]:
    """A model's turn read by the dialect it was trained in: (turn, None), or (None, why) when
    the turn names a call the parser cannot read (bad JSON, a wrong argument type)."""
    try:
        return dialect.parse_turn(text, _tool_defs(tools), lenient=True), None
    except BadRow as e:
        return None, str(e)


def parse_react(text: str, tools: dict[str, Tool] | None = None) -> Action | None:
    """`Action: tool[argument]` read by the ReAct grammar (`dsc.dialects.react`, lenient:
    the first action line, the argument to its last ']', one missing ']' tolerated); None if none."""
    turn, _ = parse_generated(text, get_dialect("react"), tools or {})
    return _action(turn.calls[0], tools or {}) if turn is not None and turn.calls else None


def parse_tool_call(text: str, tools: dict[str, Tool]) -> Action | None:
    """A JSON tool call ({"name", "arguments"}), inside <tool_call> tags or bare; None if none."""
    turn, _ = parse_generated(text, get_dialect("openai"), tools)
    return _action(turn.calls[0], tools) if turn is not None and turn.calls else None


@dataclass
class Step:
    output: str  # what the model generated this turn (stop string removed)
    action: str | None = None
    argument: str | None = None
    observation: str | None = None
    calls: list[dict[str, Any]] | None = None  # parallel calls: each {action, argument, observation}


@dataclass
class Episode:
    id: str
    question: str
    answer: Any
    messages: list[dict[str, Any]]  # the conversation so far (turn mode)
    prompt: str = ""  # the first prompt, as rendered
    transcript: str = ""  # inline mode: the model's turn so far, observations included
    steps: list[Step] = field(default_factory=list)
    prediction: str = ""
    finished: bool = False

    def trajectory(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.steps]


@dataclass
class AgentSettings:
    max_steps: int = 11
    max_new_tokens: int = 256
    observation: Literal["turn", "inline"] = "turn"
    observation_role: Literal["user", "tool"] = "user"
    observation_prefix: str = "Observation: "
    actions: Literal["react", "tool_calls"] = "react"
    stop: tuple[str, ...] = ("\nObservation:",)
    dialect: str | None = None  # the tool-call dialect (`dsc.dialects`); None: from `actions`

    def get_dialect(self) -> Dialect:
        return dialect_for(self.actions, self.dialect)
    step_prefix: str = ""  # text that opens every model turn (FireAct seeds each step with "Thought:")


def start_episodes(items: list[dict[str, Any]], builder: PromptBuilder,
                   tool_schemas: list[dict[str, Any]] | None = None) -> list[Episode]:
    """items: {"id", "question", "answer", "fields"} → episodes with their first prompt rendered."""
    episodes = []
    for it in items:
        messages = builder.conversation(it["question"], it.get("fields"))
        episodes.append(Episode(id=it["id"], question=it["question"], answer=it["answer"], messages=messages,
                                prompt=builder.render(messages, tool_schemas)))
    return episodes


def run_direct(episodes: list[Episode], generator: Generator, *, stop: Sequence[str], max_new_tokens: int,
               extract: re.Pattern[str] | None = None, on_done: Callable[[int], None] | None = None) -> None:
    """One generation per episode; the prediction is the output (or the `extract` regex's group 1).

    `on_done(n)`: n more episodes are generated (per batch when the generator has an `on_batch`
    hook, else all at the end)."""
    per_batch = on_done is not None and hasattr(generator, "on_batch")
    if per_batch:
        generator.on_batch = on_done  # type: ignore[attr-defined]
    try:
        outputs = generator.generate([ep.prompt for ep in episodes], stop=stop, max_new_tokens=max_new_tokens)
    finally:
        if per_batch:
            generator.on_batch = None  # type: ignore[attr-defined]
    if on_done is not None and not per_batch:
        on_done(len(episodes))
    for ep, out in zip(episodes, outputs):
        out = cut_at_stop(out, stop)
        ep.steps.append(Step(output=out))
        ep.prediction = extract_prediction(out, extract)
        ep.finished = True


def extract_prediction(text: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is None:
        finish = parse_react(text)
        if finish is not None and finish.name == FINISH:  # a direct ReAct answer: finish[x]
            return finish.argument
        return text.strip()
    m = pattern.search(text)
    if not m:
        return ""
    return (m.group(1) if m.groups() else m.group(0)).strip()


def run_agent(episodes: list[Episode], generator: Generator, builder: PromptBuilder, tools: dict[str, Tool],
              settings: AgentSettings, on_done: Callable[[int], None] | None = None) -> None:
    """Run every episode to `finish` or `max_steps`, batching the model calls of each step.

    `on_done(n)`: n more episodes are over (finished, or out of steps at the end)."""
    schemas = [t.schema() for t in tools.values()] if not settings.get_dialect().text else None
    active = list(episodes)
    for _ in range(settings.max_steps):
        if not active:
            break
        prefix = settings.step_prefix
        prompts = [_prompt(ep, builder, settings, schemas) + prefix for ep in active]
        outputs = generator.generate(prompts, stop=settings.stop, max_new_tokens=settings.max_new_tokens)
        for ep, out in zip(active, outputs):
            _advance(ep, prefix + cut_at_stop(out, settings.stop), tools, settings)
        still = [ep for ep in active if not ep.finished]
        if on_done is not None and len(still) < len(active):
            on_done(len(active) - len(still))
        active = still
    if on_done is not None and active:
        on_done(len(active))


def _prompt(ep: Episode, builder: PromptBuilder, settings: AgentSettings, schemas: list[dict[str, Any]] | None) -> str:
    if settings.observation == "inline":
        return ep.prompt + ep.transcript
    return builder.render(ep.messages, schemas) if ep.steps else ep.prompt


def _advance(ep: Episode, output: str, tools: dict[str, Tool], settings: AgentSettings) -> None:
    dialect = settings.get_dialect()
    turn, unreadable = parse_generated(output, dialect, tools)
    actions: list[Action] = []
    if turn is not None and turn.calls:
        actions = [_action(c, tools) for c in (turn.calls if dialect.parallel else turn.calls[:1])]
    elif turn is not None and dialect.reply_is_answer:  # a plain reply ends a tool-calling conversation
        actions = [Action(name=FINISH, argument=turn.content.strip())]
    finish = next((a for a in actions if a.name == FINISH), None)
    first = finish or (actions[0] if actions else None)
    step = Step(output=output, action=first.name if first else None, argument=first.argument if first else None)
    ep.steps.append(step)
    if finish is not None:
        ep.prediction = finish.argument
        ep.finished = True
        return
    if unreadable is not None:
        observations = [f"Invalid action: {unreadable}"]
    elif not actions:
        observations = ["Invalid action. Use one of: " + ", ".join(f"{n}[...]" for n in tools) + "."]
    else:
        observations = [_run(a, tools) for a in actions]
    step.observation = observations[0]
    if len(actions) > 1:  # parallel calls: each with its result
        step.calls = [{"action": a.name, "argument": a.argument, "observation": o} for a, o in zip(actions, observations)]
    _append(ep, output, turn, actions, observations, settings, dialect)


def _run(action: Action, tools: dict[str, Tool]) -> str:
    if action.name not in tools:
        return f"Unknown tool '{action.name}'. Available: {', '.join(tools)}."
    return tools[action.name](action.argument)


def _observation_text(observations: list[str], settings: AgentSettings, dialect: Dialect,
                      actions: list[Action]) -> str:
    if isinstance(dialect, ReactDialect):  # the task's prefix (FireAct's "Observation: " by default)
        return "\n".join(settings.observation_prefix + o for o in observations)
    # the calls answered (dialects that name them: Harmony, Kimi); an invalid step answers none
    calls = ([a.call or ToolCall(a.name, "{}", id=a.call_id) for a in actions] if len(actions) == len(observations)
             else [ToolCall("invalid_action", "{}") for _ in observations])
    return dialect.write_observations(observations, calls)


def _append(ep: Episode, output: str, turn: Turn | None, actions: list[Action], observations: list[str],
            settings: AgentSettings, dialect: Dialect) -> None:
    if settings.observation == "inline":
        ep.transcript += output.rstrip("\n") + "\n" + _observation_text(observations, settings, dialect, actions) + "\n"
        return
    if not dialect.text and turn is not None and actions and all(a.call is not None for a in actions):
        ids = [a.call_id or f"call_{len(ep.steps)}" + (f"_{j}" if j else "") for j, a in enumerate(actions)]
        ep.messages.append({"role": "assistant", "content": turn.content.strip(), "tool_calls": [
            {"type": "function", "id": i, "function": {"name": a.name, "arguments": json.loads(a.call.arguments)}}
            for i, a in zip(ids, actions)]})
        ep.messages += [{"role": "tool", "name": a.name, "tool_call_id": i, "content": o}
                        for i, a, o in zip(ids, actions, observations)]
        return
    ep.messages.append({"role": "assistant", "content": output.strip()})
    ep.messages.append({"role": settings.observation_role,
                        "content": _observation_text(observations, settings, dialect, actions)})
