"""Capabilities: tag each assistant turn with the capability it exercises, then rebalance the
output by per-capability ratios (Agent-FLAN: reasoning, retrieval, understanding, instruction
following are learned at different speeds).

    capabilities:
      rules:                                   # per assistant turn, the first rule that matches
        - {capability: retrieval, tool_call: true}
        - {capability: understanding, after: tool}
        - {capability: reasoning, pattern: "^Thought:"}
        - {capability: instruction_following, where: {source: chat}}
      default: null                            # turns no rule matches (null: untagged)
      rates: {reasoning: 1.0, retrieval: 0.5, understanding: 0.75}    # or `proportions: {...}`
      measure: rows                            # or tokens (supervised tokens; needs `tokenize`) / chars
      decompose: true                          # one example per capability (Agent-FLAN)

Rule conditions (all given must hold): `where` (the row), `tool_call` (true/false, or a list of
tool names; ReAct text actions count), `pattern` (regex on the turn's text), `after` (the role
of the message before the turn: user, tool, system, assistant or start), `position` (first,
last, or only among the row's assistant turns).

A row's capability (what ratios count) is its source's `tags.capability` when set, else the
capability of most of its tagged turns (ties: the earlier rule). With `decompose`, a row with
turns of k capabilities becomes k examples `<id>@<capability>`, each supervising only that
capability's turns (the others get `loss: false`; use `loss: assistant` or `per-message`).

Ratios: `rates` keep a share of each capability (1.0 all, 0.5 half, 2.0 every row twice —
copies get ids `<id>#2`); `proportions` set each capability's share of the tagged output (they
sum to 1; the output is as large as the scarcest capability allows). Both are measured in rows,
supervised tokens or supervised characters; the manifest reports the realised ratios, which match
the requested ones to within one row. Rows with no capability are not rebalanced.
"""
from __future__ import annotations

import re
from collections import Counter

from dsc.compiler.stages.transforms.common import add_step, copy_conv
from dsc.dialects.react import parse_any_action
from dsc.record import Conversation, Message
from dsc.spec.sections import CapabilitiesSpec, CapabilityRule


def _turn_calls(m: Message) -> list[str]:
    if m.tool_calls:
        return [c.name for c in m.tool_calls]
    act = parse_any_action(m.content)
    return [act.name] if act is not None else []


def _rule_matches(rule: CapabilityRule, conv: Conversation, i: int, k: int, n_assistant: int) -> bool:
    m = conv.messages[i]
    if rule.tool_call is not None:
        calls = _turn_calls(m)
        if isinstance(rule.tool_call, bool):
            if bool(calls) != rule.tool_call:
                return False
        elif not set(calls) & set(rule.tool_call):
            return False
    if rule.pattern is not None and not re.search(rule.pattern, m.content, flags=re.MULTILINE):
        return False
    if rule.after is not None:
        before = conv.messages[i - 1].role if i > 0 else "start"
        if before != rule.after:
            return False
    if rule.position is not None:
        ok = {"first": k == 0, "last": k == n_assistant - 1, "only": n_assistant == 1}[rule.position]
        if not ok:
            return False
    return True


def tag_turns(conv: Conversation, spec: CapabilitiesSpec) -> Conversation:
    """Set Message.capability on assistant turns and meta.capability on the row (in place)."""
    rules = [r for r in spec.rules if r.where is None or r.where.matches(conv)]
    idx = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
    counts: Counter[str] = Counter()
    for k, i in enumerate(idx):
        cap = next((r.capability for r in rules if _rule_matches(r, conv, i, k, len(idx))), spec.default)
        if conv.messages[i].loss is False:
            cap = None  # an unsupervised turn (an assembled acknowledgement) teaches nothing
        conv.messages[i].capability = cap
        if cap is not None:
            counts[cap] += 1
    if conv.meta.capability is None and counts:
        order = spec.produced()
        conv.meta.capability = max(counts, key=lambda c: (counts[c], -order.index(c)))
    add_step(conv, "capabilities")
    return conv


def decompose(conv: Conversation, spec: CapabilitiesSpec) -> list[Conversation]:
    """One example per capability present, supervising only that capability's turns."""
    present = [c for c in spec.produced() if any(m.capability == c for m in conv.messages)]
    if not present:
        return [conv]
    out = []
    for cap in present:
        new = copy_conv(conv)
        new.id = f"{conv.id}@{cap}"
        new.meta.capability = cap
        for m in new.messages:
            if m.role == "assistant" and m.loss is not False:
                m.loss = True if m.capability == cap else False
        add_step(new, f"decompose:{cap}")
        out.append(new)
    return out


def supervised_chars(conv: Conversation) -> int:
    """Characters of the supervised assistant turns (content and tool-call arguments)."""
    n = 0
    for m in conv.messages:
        if m.role == "assistant" and m.loss is not False:
            n += len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls or [])
    return n


__all__ = ["CapabilitiesSpec", "CapabilityRule", "decompose", "supervised_chars", "tag_turns"]
