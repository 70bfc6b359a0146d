"""`sharegpt`: `{"conversations": [{"from": ..., "value": ...}], "system": ..., "tools": ...}`.

`from` ∈ human/user, gpt/assistant, system, `function_call` (an assistant turn that calls a
tool; its value is JSON `{"name", "arguments"}`, or a list of them), observation/function/tool
(the tool's result → a `tool` message). `tools` may be a JSON string (LLaMA-Factory's
convention) or a list; a top-level `system` string becomes the first message. A per-message
`loss` is honoured when present.
"""
from __future__ import annotations

from typing import Any

from dsc.compiler.stages.read.formats.common import (
    SHAREGPT_ROLES,
    Normalised,
    messages_of,
    optional_str,
    parse_tools,
    without,
)
from dsc.record import BadRow, Message, get_path
from dsc.spec.registries import register_format


@register_format(
    "sharegpt",
    fields={"messages": "conversations", "role": "from", "content": "value", "loss": "loss",
            "tools": "tools", "system": "system"},
)
def sharegpt(row: dict[str, Any], fields: dict[str, str]) -> Normalised:
    """ShareGPT from/value turns, with LLaMA-Factory function_call/observation turns."""
    messages = messages_of(row, fields, SHAREGPT_ROLES)
    system = optional_str(row, fields["system"])
    if system is not None:
        if messages[0].role == "system":
            raise BadRow(f"two system prompts: field '{fields['system']}' and a system turn in "
                         f"'{fields['messages']}'")
        messages.insert(0, Message("system", system))
    tools = parse_tools(get_path(row, fields["tools"]), fields["tools"])
    return Normalised(messages, tools, without(row, [fields["messages"], fields["tools"], fields["system"]]))
