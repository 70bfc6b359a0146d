"""Render a Conversation through its chat template into text + supervised character spans.

The text comes from one rendering of the template (never a Python re-implementation of it), and
so do the spans:

- templates with `{% generation %}` blocks (all built-ins): the i-th block is the i-th assistant
  message's supervised span, exactly what transformers' `return_assistant_tokens_mask` uses;
- templates without them: a fallback locates each assistant content in order in the rendered
  text (`str.find` after the previous user/assistant/tool message's content, so a reply equal to
  the question is found after the question; a template that trims content is matched by the
  stripped content) and extends the span by the template's probed `end_of_turn` when that text
  follows. Its limits: a template that rewrites or reorders content (escapes it, drops a
  message) can make a message unlocatable (the row is rejected with a reason) or, when the same
  content also occurs in template text between two messages, locate the wrong copy; whitespace a
  template inserts between content and end-of-turn is not crossed; an assistant turn with empty
  content cannot be located, and the text of tool calls is not supervised (only the content is
  found). Prefer a template with generation tags.

A supervised non-assistant message (per-message, loss=True) is located by its content between the
assistant spans around it, in message order; then anywhere in the text (a template may move it,
as Mistral moves the system message into the last user turn).

Loss policies choose among those spans; `all` supervises the whole text. A `LossSpec` adds
per-span weights on top of them (dsc.chat.weights): `Rendered.weights`. Their `part` rules read
the pieces of each assistant turn with the spec's dialect (`dialect`, see `weights.parts_dialect`):
a text dialect's turn is the message's content, located inside its span as the fallback above
locates it; a structured one's (`openai`: the template writes the calls) is the whole span.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from dsc.chat.templating import ChatTemplate, TemplateRenderError
from dsc.chat.weights import WeightedSpan, uses_parts, weigh
from dsc.dialects.base import Dialect, Piece
from dsc.record import BadRow, Conversation, Message
from dsc.spec.sections import LossPolicy, LossSpec, SpecialTokenPolicy, loss_mode, loss_weight_rules


@dataclass
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # sorted, merged, non-empty, half-open supervised spans of `text`
    # With weight rules: pieces covering `spans` exactly, each with its loss weight (else None).
    weights: list[WeightedSpan] | None = None


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def render(conv: Conversation, template: ChatTemplate, loss: LossPolicy | LossSpec | str,
           dialect: Dialect | None = None) -> Rendered:
    """`dialect`: whose turns `part` weight rules read (`weights.parts_dialect`; None: ReAct's labels)."""
    rules = loss_weight_rules(loss)
    loss = loss_mode(loss)
    messages = conv.template_messages()
    try:
        text, blocks = template.render(messages, tools=conv.tools, add_generation_prompt=False)
    except TemplateRenderError as e:
        raise BadRow(str(e)) from None
    positions = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
    assistant: dict[int, tuple[int, int]] = {}
    if loss is not LossPolicy.all or (dialect is not None and uses_parts(rules)):
        assistant = dict(zip(positions, _assistant_spans(text, conv.messages, blocks, template)))
    if loss is LossPolicy.all:
        spans = [(0, len(text))]
    else:
        spans = []
        if loss is LossPolicy.assistant:
            spans = [assistant[i] for i in positions if conv.messages[i].loss is not False]
        elif loss is LossPolicy.last:
            if positions and conv.messages[positions[-1]].loss is not False:
                spans = [assistant[positions[-1]]]
        else:  # per-message
            for i, m in enumerate(conv.messages):
                if not (m.loss if m.loss is not None else m.role == "assistant"):
                    continue
                if i in assistant:
                    spans.append(assistant[i])
                    continue
                if not m.content.strip():
                    continue  # nothing to supervise
                span = _content_span(text, conv.messages, i, assistant)
                if span is None:
                    raise BadRow(f"cannot supervise message {i} ({m.role}): its content does not appear in the "
                                 f"text rendered by template {template.ref!r}")
                spans.append(span)
    merged = merge_spans(s for s in spans if s is not None)
    if not merged:
        raise BadRow(f"nothing supervised: loss policy '{loss.value}' selects no text in this conversation "
                     f"({_role_summary(conv.messages)})")
    if not rules:
        return Rendered(text, merged)
    parts = _turn_parts(text, conv.messages, assistant, dialect) if dialect is not None and uses_parts(rules) else None
    return Rendered(text, merged, weigh(text, merged, rules, parts))


def _turn_parts(text: str, messages: list[Message], assistant: dict[int, tuple[int, int]],
                dialect: Dialect) -> list[Piece]:
    """The pieces of every assistant turn, as ranges of `text` (see the module doc)."""
    out: list[Piece] = []
    for i, (a, b) in assistant.items():
        if dialect.text:
            at = _locate(text, messages[i].content, a)
            if at is None or at[1] > b:
                continue  # an empty turn (or one the template rewrote): no pieces
            a, b = at
        out += [(part, a + x, a + y) for part, x, y in dialect.turn_parts(text[a:b])]
    return out


def render_prompt(messages: list[dict[str, Any]], template: ChatTemplate, tools: list[dict[str, Any]] | None = None,
                  add_generation_prompt: bool = True) -> str:
    """The inference-time prompt (raises TemplateRenderError when the template refuses it)."""
    return template.render_text(messages, tools=tools, add_generation_prompt=add_generation_prompt)


def merge_spans(spans: Any) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in spans):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _assistant_spans(text: str, messages: list[Message], blocks: list[tuple[int, int]],
                     template: ChatTemplate) -> list[tuple[int, int]]:
    """The supervised span of each assistant message, in order."""
    n_assistant = sum(1 for m in messages if m.role == "assistant")
    if template.has_generation_tags:
        if len(blocks) != n_assistant:
            raise BadRow(f"template {template.ref!r} rendered {len(blocks)} generation block(s) for "
                         f"{n_assistant} assistant message(s); each assistant turn must be in exactly one "
                         f"{{% generation %}} block")
        return list(blocks)
    # Fallback: locate contents in order. User/tool contents advance the cursor too, so that an
    # assistant reply equal to the question before it is found after the question. System
    # messages do not: templates move them (Mistral into the last user turn) or drop them.
    out: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m.role == "system":
            continue
        span = _locate(text, m.content, cursor)
        if m.role == "assistant":
            if not m.content.strip():
                raise BadRow(f"cannot locate empty assistant message {i} in the text rendered by template "
                             f"{template.ref!r}: it has no generation tags to mark the turn")
            if span is None:
                raise BadRow(f"cannot locate assistant message {i} in the text rendered by template "
                             f"{template.ref!r} (no generation tags; the fallback looks for the content as is)")
            eot = template.end_of_turn
            if eot and text.startswith(eot, span[1]):
                span = (span[0], span[1] + len(eot))
            out.append(span)
        if span is not None:
            cursor = span[1]
    return out


def _content_span(text: str, messages: list[Message], index: int,
                  assistant: dict[int, tuple[int, int]]) -> tuple[int, int] | None:
    """Where a non-assistant message's content is: looked for between the assistant turns around
    it (their spans are anchors), after the other messages of that gap; then anywhere (a
    template may move a message, as Mistral's does with the system message)."""
    before = max((j for j in assistant if j < index), default=None)
    after = min((j for j in assistant if j > index), default=None)
    lo = assistant[before][1] if before is not None else 0
    hi = assistant[after][0] if after is not None else len(text)
    cursor = lo
    for j in range(before + 1 if before is not None else 0, index):  # earlier messages of the gap first
        if messages[j].role != "system":
            prev = _locate(text, messages[j].content, cursor)
            if prev is not None and prev[1] <= hi:
                cursor = prev[1]
    for start in (cursor, lo):
        span = _locate(text, messages[index].content, start)
        if span is not None and span[1] <= hi:
            return span
    return _locate(text, messages[index].content, 0)


def _locate(text: str, content: str, start: int) -> tuple[int, int] | None:
    for needle in (content, content.strip()):
        if not needle:
            return None
        at = text.find(needle, start)
        if at >= 0:
            return (at, at + len(needle))
    return None


def _role_summary(messages: list[Message]) -> str:
    roles = [m.role + ("[loss=False]" if m.loss is False else "[loss=True]" if m.loss else "") for m in messages]
    return "messages: " + ", ".join(roles) if roles else "no messages"


# ---------------------------------------------------------------------------------------------
# Special tokens typed in content
# ---------------------------------------------------------------------------------------------

# U+200B ZERO WIDTH SPACE, inserted after the first character of each control token found in
# content: "<|im_end|>" → "<\u200b|im_end|>". The tokenizer then no longer matches the added
# token, a human still reads the same text, and deleting the U+200B that follows the first
# character of such a string restores the original.
ESCAPE_CHAR = "\u200b"


def _special_re(template: ChatTemplate) -> re.Pattern[str] | None:
    if not template.special_tokens:
        return None
    longest_first = sorted(set(template.special_tokens), key=lambda s: (-len(s), s))
    return re.compile("|".join(map(re.escape, longest_first)))


def find_special_tokens(conv: Conversation, template: ChatTemplate) -> list[str]:
    """The template's control tokens that occur in message contents (any role: a control token
    in an assistant target is as harmful as one in an observation), in order of first occurrence."""
    pattern = _special_re(template)
    if pattern is None:
        return []
    found: dict[str, None] = {}
    for m in conv.messages:
        for hit in pattern.finditer(m.content):
            found.setdefault(hit.group(0), None)
    return list(found)


def escape_special_tokens(text: str, template: ChatTemplate) -> str:
    pattern = _special_re(template)
    if pattern is None:
        return text
    return pattern.sub(lambda h: h.group(0)[0] + ESCAPE_CHAR + h.group(0)[1:], text)


def apply_special_token_policy(conv: Conversation, template: ChatTemplate,
                               policy: SpecialTokenPolicy | str) -> tuple[Conversation, list[str]]:
    """(the conversation to render, the control tokens found in its contents)."""
    policy = SpecialTokenPolicy(policy)
    found = find_special_tokens(conv, template)
    if not found:
        return conv, found
    if policy is SpecialTokenPolicy.error:
        raise BadRow(f"message content contains control token(s) of template {template.ref!r}: "
                     + ", ".join(repr(t) for t in found) + " (special_tokens: error)")
    if policy is SpecialTokenPolicy.escape:
        messages = [dataclasses.replace(m, content=escape_special_tokens(m.content, template)) for m in conv.messages]
        conv = dataclasses.replace(conv, messages=messages)
    return conv, found
