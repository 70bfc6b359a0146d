"""Rule-generated negatives (Agent-FLAN's idea): new rows made from existing ones, teaching the
model when *not* to call a tool. The source row stays; the new row gets id `<id>~<rule>` and the
rule's id in its provenance (`rule:<name>`), so a `where: {rule: ...}` or a mix bucket can
select them.

    negatives:
      - rule: irrelevant_tools      # ordinary chat offered random tools; the answer is unchanged
        where: {source: chat}
        pool: data/agent-flan/tool_pool.json
        k: 2
      - rule: no_tools              # a tool-needing query with the tools removed, answered in text
        where: {source: toolbench}
        response: "I'm sorry, but I don't have a tool to {{ query | lower }} Without one I cannot do it."
        rate: 0.5

A rule applies to a matching row with probability `rate` (a seeded hash of the row id, so the
same rows are picked whatever else is in the build); use a mix bucket with `count` on
`where: {rule: ...}` for an exact number. Rows made by rules carry no tool call.

Add your own with `@NEGATIVE_RULES.register("name", OptionsModel, prepare=...)` on
`fn(conv, options, prepared, seed) -> Conversation | None`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from dsc.compiler.stages.transforms.common import copy_conv, rank_key, render_text, template_context, unit_hash
from dsc.core.sandbox import JinjaText
from dsc.core.strict import Strict
from dsc.dialects.tools import ToolDef, ToolsField, load_tools
from dsc.record import Conversation, Message
from dsc.spec.registries import NEGATIVE_RULES
from dsc.spec.sections import RULE_STEP
from dsc.spec.steps import NegativeRule, prepare_entries


class RateOption(Strict):
    rate: float = Field(1.0, ge=0.0, le=1.0, description="share of matching rows the rule makes a negative from")


class IrrelevantToolsOptions(RateOption):
    pool: ToolsField = Field(description="the tools to offer (list or a JSON/YAML file)")
    k: int = Field(2, ge=1, description="how many tools each row is offered")


class NoToolsOptions(RateOption):
    response: JinjaText = Field(min_length=1, description="Jinja text of the answer; sees `query`, `tools` and the row")
    keep_system: bool = Field(False, description="keep system messages (they usually describe the tools)")


def _pool(options: IrrelevantToolsOptions, base_dir: Path) -> list[ToolDef]:
    tools = load_tools(options.pool, base_dir)
    if len(tools) < options.k:
        raise ValueError(f"the tool pool has {len(tools)} tools, fewer than k={options.k}")
    return tools


def _has_tool_use(conv: Conversation) -> bool:
    from dsc.dialects.react import parse_any_action

    for m in conv.messages:
        if m.role == "tool" or m.tool_calls:
            return True
        if m.role == "assistant" and parse_any_action(m.content):
            return True
    return False


def _derived(conv: Conversation, rule: str) -> Conversation:
    new = copy_conv(conv)
    new.id = f"{conv.id}~{rule}"
    new.meta.provenance.steps.append(f"{RULE_STEP}{rule}")
    return new


@NEGATIVE_RULES.register("irrelevant_tools", IrrelevantToolsOptions, prepare=_pool)
def irrelevant_tools(conv: Conversation, opts: IrrelevantToolsOptions, pool: list[ToolDef], seed: int) -> Conversation | None:
    """Plain chat offered `k` tools from the pool (seeded per row); the answer stays, no tool call."""
    if _has_tool_use(conv) or conv.tools or not any(m.role == "assistant" for m in conv.messages):
        return None
    chosen = sorted(pool, key=lambda t: rank_key(seed, "irrelevant_tools", f"{conv.id}\x1f{t.name}"))[: opts.k]
    new = _derived(conv, "irrelevant_tools")
    new.tools = [t.openai() for t in chosen]
    return new


@NEGATIVE_RULES.register("no_tools", NoToolsOptions)
def no_tools(conv: Conversation, opts: NoToolsOptions, _: Any, seed: int) -> Conversation | None:
    """A tool-using row cut at its first tool call, tools removed, answered by `response`."""
    from dsc.dialects.react import parse_any_action

    cut = None
    for i, m in enumerate(conv.messages):
        if m.role == "assistant" and (m.tool_calls or parse_any_action(m.content)):
            cut = i
            break
    if cut is None:
        return None
    head = [m for m in conv.messages[:cut] if opts.keep_system or m.role != "system"]
    users = [m for m in head if m.role == "user"]
    if not users:
        return None
    names = [t.get("function", t).get("name") for t in conv.tools or []]
    ctx = {**template_context(conv), "query": users[-1].content, "tools": names}
    new = _derived(conv, "no_tools")
    new.messages = [Message(m.role, m.content, loss=m.loss) for m in head]
    new.messages.append(Message("assistant", render_text(opts.response, ctx, "no_tools response")))
    new.tools = None
    return new


prepare_rules = prepare_entries  # what each rule needs, read once (ValueError naming a bad file)


def apply_rules(conv: Conversation, rules: list[NegativeRule], prepared: list[Any], seed: int) -> list[Conversation]:
    """The negatives the rules make from this row (the row itself is not included)."""
    out = []
    for r, p in zip(rules, prepared):
        if not r.applies_to(conv):
            continue
        rate = getattr(r.options, "rate", 1.0)
        if rate < 1.0 and unit_hash(seed, "rule", r.name, conv.id) >= rate:
            continue
        new = r.definition.fn(conv, r.options, p, seed)
        if new is not None:
            out.append(new)
    return out
