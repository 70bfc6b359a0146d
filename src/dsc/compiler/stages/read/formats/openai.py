"""`openai`: OpenAI chat fine-tuning rows, `{"messages": [...], "tools": [...]}`.

Messages carry `role` (system/developer, user, assistant, tool, legacy `function`),
`content` (a string, null on an assistant turn that only calls tools, or a list of text
parts), `tool_calls` (`{id, type, function: {name, arguments}}`, arguments as a JSON string
or an object), legacy `function_call`, `name`, `tool_call_id`, and optionally a per-message
`loss` (bool) or OpenAI's `weight` (0/1). The legacy top-level `functions` list is read as
tools when `tools` is absent. FireAct's `gpt_format` files are this format.
"""
from __future__ import annotations

from typing import Any

from dsc.compiler.stages.read.formats.common import OPENAI_ROLES, Normalised, messages_of, parse_tools, without
from dsc.record import MISSING, get_path
from dsc.spec.registries import register_format

LEGACY_FUNCTIONS = "functions"


@register_format(
    "openai",
    fields={"messages": "messages", "tools": "tools", "role": "role", "content": "content", "loss": "loss"},
)
def openai(row: dict[str, Any], fields: dict[str, str]) -> Normalised:
    """OpenAI chat messages with tool calls (FireAct gpt_format)."""
    messages = messages_of(row, fields, OPENAI_ROLES, weight_key="weight")
    tools_path = fields["tools"]
    if get_path(row, tools_path) is MISSING and LEGACY_FUNCTIONS in row:
        tools_path = LEGACY_FUNCTIONS
    tools = parse_tools(get_path(row, tools_path), tools_path)
    return Normalised(messages, tools, without(row, [fields["messages"], tools_path]))
