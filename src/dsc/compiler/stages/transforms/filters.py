"""Quality filters: rows that fail one are dropped (not quarantined — the data is readable, just
not wanted) and counted per reason in the manifest. They run on the trajectory as read, before
conversion and prompt assembly.

    filters:
      - non_empty                          # some assistant turn with text or a tool call
      - finished: "finish\\[.+\\]"         # the last assistant turn matches (ReAct text or tool call)
      - max_turns: 10                      # at most this many assistant turns
      - valid_actions: [search, finish]    # every assistant turn ends in a ReAct action (true: any name)
      - no_empty_observation               # no blank observation / tool result
      - {where: {source: negative}, max_turns: 6}    # a filter for some rows only

NAT's loader applies none of these; its negative files hold empty and unfinished trajectories.
Add your own with `@FILTERS.register("name", ArgType)` on `fn(conv, arg) -> reason | None`.
"""
from __future__ import annotations

import json
import re
from typing import Any

from dsc.dialects.react import OBSERVATION, parse_any_action
from dsc.record import Conversation, Message
from dsc.spec.registries import FILTERS
from dsc.spec.steps import FilterEntry


def apply_filters(conv: Conversation, filters: list[FilterEntry]) -> str | None:
    """The reason of the first filter the row fails (`name: why`), or None when it passes."""
    for f in filters:
        if f.where is not None and not f.where.matches(conv):
            continue
        why = FILTERS.get(f.name).fn(conv, f.arg)
        if why is not None:
            return f"{f.name}: {why}"
    return None


# ---------------------------------------------------------------------------------------------
# Built-in filters
# ---------------------------------------------------------------------------------------------


def _assistant(conv: Conversation) -> list[Message]:
    return [m for m in conv.messages if m.role == "assistant"]


def _call_text(m: Message) -> str:
    """An assistant turn as text, tool calls written as ReAct actions (for patterns)."""
    parts = [m.content]
    for c in m.tool_calls or []:
        args = json.loads(c.arguments)
        arg = next(iter(args.values())) if len(args) == 1 else json.dumps(args, ensure_ascii=False)
        parts.append(f"Action: {c.name}[{arg}]")
    return "\n".join(p for p in parts if p)


@FILTERS.register("non_empty")
def non_empty(conv: Conversation, _: Any) -> str | None:
    if any(m.content.strip() or m.tool_calls for m in _assistant(conv)):
        return None
    return "no assistant turn with text or a tool call"


@FILTERS.register("finished", str)
def finished(conv: Conversation, pattern: str) -> str | None:
    turns = _assistant(conv)
    if turns and re.search(pattern, _call_text(turns[-1])):
        return None
    return f"the last assistant turn does not match {pattern!r}"


@FILTERS.register("max_turns", int)
def max_turns(conv: Conversation, n: int) -> str | None:
    k = len(_assistant(conv))
    return None if k <= n else f"{k} assistant turns, more than {n}"


@FILTERS.register("min_turns", int)
def min_turns(conv: Conversation, n: int) -> str | None:
    k = len(_assistant(conv))
    return None if k >= n else f"{k} assistant turns, fewer than {n}"


@FILTERS.register("valid_actions", bool | list[str])
def valid_actions(conv: Conversation, allowed: bool | list[str]) -> str | None:
    """Every assistant turn ends in a well-formed action (bracket or Action Input syntax) or
    carries a tool call; with a list, the action must be one of those names."""
    if allowed is False:
        return None
    names = set(allowed) if isinstance(allowed, list) else None
    for i, m in enumerate(conv.messages):
        if m.role != "assistant":
            continue
        called = [c.name for c in m.tool_calls or []]
        if not called:
            act = parse_any_action(m.content)
            if act is None:
                return f"message {i} has no well-formed action"
            called = [act.name]
        for name in called:
            if names is not None and name not in names:
                return f"message {i} calls '{name}', not one of {', '.join(sorted(names))}"
    return None


@FILTERS.register("no_empty_observation")
def no_empty_observation(conv: Conversation, _: Any) -> str | None:
    for i, m in enumerate(conv.messages):
        if m.role == "tool" and not m.content.strip():
            return f"message {i}: empty tool result"
        if m.role == "user" and m.content.startswith(OBSERVATION.rstrip()):
            if not m.content[len(OBSERVATION.rstrip()):].strip():
                return f"message {i}: empty observation"
    return None


@FILTERS.register("success")
def success(conv: Conversation, _: Any) -> str | None:
    """Keep labelled successes only (FireAct's recipe claims success-filtered data)."""
    return None if conv.meta.success is True else f"label is {conv.meta.label or 'missing'}"


__all__ = ["FILTERS", "FilterEntry", "apply_filters"]
