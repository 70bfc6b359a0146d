"""Success conditioning: a string per label class, placed in the prompt of each row, and the
class whose string the prompt carries at inference time.

    condition:
      turn: question        # an assembled turn's id, or first_user | last_user | system
      position: suffix      # or prefix
      strings:
        success: " Generate a sequence of Thought and Action steps to solve the question **correctly**."
        failure: " Generate a sequence of Thought and Action steps. But **incorrectly** solve the question."
      inference: success

Turns: `first_user` — the first user message; `last_user` — the last user message before the
first assistant message (the question when the prompt is instruction + question); `system` —
the system message (created, holding only the string, when the row has none); or the `id` of
an assembled turn. The string is joined to the turn's text as written (put the space in it).

NAT's ablations are all data: swap the strings for inverse labels, use `[1] `/`[2] ` for
meaningless tokens, `prefix` + `[Correct] `/`[Incorrect] `, or bins with one string per class.
Rows whose class has no string are a bad row, unless `unlabelled: keep` (they stay as they are).
"""
from __future__ import annotations

from typing import Any

from dsc.compiler.stages.transforms.common import add_step
from dsc.record import BadRow, Conversation, Message
from dsc.spec.sections import ConditionSpec

BUILTIN_TURNS = ("first_user", "last_user", "system")


def _target(messages: list[Message], turn: str, positions: dict[str, int]) -> int | None:
    if turn == "first_user":
        return next((i for i, m in enumerate(messages) if m.role == "user"), None)
    if turn == "last_user":
        first_assistant = next((i for i, m in enumerate(messages) if m.role == "assistant"), len(messages))
        return max((i for i, m in enumerate(messages[:first_assistant]) if m.role == "user"), default=None)
    if turn == "system":
        return next((i for i, m in enumerate(messages) if m.role == "system"), None)
    return positions.get(turn)


def place(messages: list[Message], spec: ConditionSpec, cls: str, positions: dict[str, int] | None = None) -> None:
    """Put the class's string into `messages` in place (BadRow when the turn is absent)."""
    text = spec.strings[cls]
    i = _target(messages, spec.turn, positions or {})
    if i is None:
        if spec.turn != "system":
            raise BadRow(f"condition: the row has no '{spec.turn}' turn to carry the conditioning string")
        messages.insert(0, Message("system", text, loss=False))
        return
    m = messages[i]
    m.content = text + m.content if spec.position == "prefix" else m.content + text


def apply_condition(conv: Conversation, spec: ConditionSpec, positions: dict[str, int] | None = None) -> Conversation:
    cls = conv.meta.label
    if cls is None or cls not in spec.strings:
        if spec.unlabelled == "keep":
            return conv
        what = "has no label" if cls is None else f"has class '{cls}', which has no string in condition.strings"
        raise BadRow(f"condition: the row {what}")
    place(conv.messages, spec, cls, positions)
    add_step(conv, f"condition:{cls}")
    return conv


def inference_block(spec: ConditionSpec | None, prompt: list[dict[str, Any]],
                    positions: dict[str, int]) -> dict[str, Any]:
    """The manifest's `inference` block: the exact prompt messages at inference time (with
    `{{ question }}` for the question) and the class they are conditioned on."""
    msgs = [Message(m["role"], m["content"]) for m in prompt]
    if spec is not None:
        place(msgs, spec, spec.inference, positions)
    block: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content} for m in msgs],
                             "label": spec.inference if spec is not None else None}
    if spec is not None:
        block["condition"] = {"turn": spec.turn, "position": spec.position,
                              "string": spec.strings[spec.inference]}
    return block
