"""The rows of a preference artifact, in the columns TRL's trainers read as they are.

DPO (`DPOTrainer`): `prompt`, `chosen`, `rejected` as message lists, tool calls in OpenAI's
shape (`{"id", "type": "function", "function": {"name", "arguments": <JSON string>}}`), and
`tools` (the JSON string of the function specs, or null; TRL parses a string); then dsc's own
`id`, `group`, `chosen_id`, `rejected_id`, `score_gap` and the texts the artifact's template
renders: `prompt_text` (with the generation prompt), `chosen_text`, `rejected_text` (what
follows the prompt text in the rendering of prompt + completion).

KTO (`KTOTrainer`): `prompt`, `completion`, `label` (bool: desirable) and `tools`; then `id`,
`group`, `source_id`, `score`, `prompt_text`, `completion_text`.

Message fields a message lacks are null in Arrow; transformers drops null keys before it renders
a chat template, as `ChatTemplate.render` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dsc.chat.templating import ChatTemplate, TemplateRenderError
from dsc.compiler.stages.preference.pairs import KtoRow, Pair
from dsc.core.canonical import compact_json
from dsc.record import Conversation, Message

FUNCTION_TYPE = pa.struct([("name", pa.string()), ("arguments", pa.string())])
OPENAI_TOOL_CALL = pa.struct([("id", pa.string()), ("type", pa.string()), ("function", FUNCTION_TYPE)])
OPENAI_MESSAGE = pa.struct([
    ("role", pa.string()),
    ("content", pa.string()),
    ("tool_calls", pa.list_(OPENAI_TOOL_CALL)),
    ("name", pa.string()),
    ("tool_call_id", pa.string()),
])
MESSAGES = pa.list_(OPENAI_MESSAGE)

DPO_SCHEMA = pa.schema([
    ("id", pa.string()), ("group", pa.string()),
    ("prompt", MESSAGES), ("chosen", MESSAGES), ("rejected", MESSAGES), ("tools", pa.string()),
    ("chosen_id", pa.string()), ("rejected_id", pa.string()), ("score_gap", pa.float64()),
    ("prompt_text", pa.string()), ("chosen_text", pa.string()), ("rejected_text", pa.string()),
])
KTO_SCHEMA = pa.schema([
    ("id", pa.string()), ("group", pa.string()),
    ("prompt", MESSAGES), ("completion", MESSAGES), ("label", pa.bool_()), ("tools", pa.string()),
    ("source_id", pa.string()), ("score", pa.float64()),
    ("prompt_text", pa.string()), ("completion_text", pa.string()),
])
SCHEMAS = {"dpo": DPO_SCHEMA, "kto": KTO_SCHEMA}


def openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages in OpenAI's chat shape (arguments stay the stored JSON string, keys in order)."""
    return [{"role": m.role, "content": m.content,
             "tool_calls": [{"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
                            for t in m.tool_calls] if m.tool_calls else None,
             "name": m.name, "tool_call_id": m.tool_call_id} for m in messages]


def _template_messages(conv: Conversation, messages: list[Message]) -> list[dict[str, Any]]:
    view = Conversation(conv.id, conv.group, messages, conv.meta, conv.tools)
    return view.template_messages()


@dataclass(frozen=True)
class Texts:
    prompt: str
    completions: tuple[str, ...]


def render_texts(template: ChatTemplate, conv: Conversation, cut: int, completions: list[list[Message]]) -> Texts:
    """The prompt as the template renders it for generation, and each completion as the text
    that follows it when the template renders prompt + completion. ValueError when the
    template refuses, or renders the prompt differently inside the conversation (a trainer
    would then score text the model never generates after that prompt)."""
    prompt = conv.messages[:cut]
    try:
        head = template.render_text(_template_messages(conv, prompt), tools=conv.tools, add_generation_prompt=True)
        fulls = [template.render_text(_template_messages(conv, prompt + c), tools=conv.tools) for c in completions]
    except TemplateRenderError as e:
        raise ValueError(str(e)) from None
    for full in fulls:
        if not full.startswith(head):
            raise ValueError(f"template {template.ref!r} renders the prompt with its generation prompt differently "
                             "from the same prompt followed by the completion; the completion's text is undefined")
    return Texts(head, tuple(full[len(head):] for full in fulls))


def _tools(conv: Conversation) -> str | None:
    return compact_json(conv.tools) if conv.tools else None


def dpo_row(pair: Pair, template: ChatTemplate) -> dict[str, Any]:
    """A DPO row (ValueError: the pair's texts cannot be rendered; see `render_texts`)."""
    texts = render_texts(template, pair.chosen, pair.cut, [pair.chosen_turns, pair.rejected_turns])
    return {
        "id": pair.id, "group": pair.group,
        "prompt": openai_messages(pair.prompt), "chosen": openai_messages(pair.chosen_turns),
        "rejected": openai_messages(pair.rejected_turns), "tools": _tools(pair.chosen),
        "chosen_id": pair.chosen.id, "rejected_id": pair.rejected.id, "score_gap": pair.score_gap,
        "prompt_text": texts.prompt, "chosen_text": texts.completions[0], "rejected_text": texts.completions[1],
    }


def kto_row(row: KtoRow, template: ChatTemplate) -> dict[str, Any]:
    """A KTO row (ValueError as `dpo_row`)."""
    texts = render_texts(template, row.conv, row.cut, [row.completion])
    return {
        "id": row.id, "group": row.conv.group,
        "prompt": openai_messages(row.prompt), "completion": openai_messages(row.completion),
        "label": row.desirable, "tools": _tools(row.conv), "source_id": row.conv.id, "score": row.conv.meta.score,
        "prompt_text": texts.prompt, "completion_text": texts.completions[0],
    }
