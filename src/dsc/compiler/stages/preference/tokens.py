"""`tokenize:` for preference rows: each side's token ids and labels, from the texts the
artifact's template renders (`prompt_text`, `chosen_text` / `rejected_text` / `completion_text`).

A side is tokenised as one text, prompt text + completion text (what a trainer scores: the
completion in the context of the prompt, as `apply_chat_template(prompt + completion,
tokenize=True)` gives it), with labels -100 on the prompt's tokens and the ids on the
completion's. The prompt must end on a token boundary: the side's first tokens must be exactly
the prompt text's own tokens (`prompt_input_ids`, the same for both sides) — else a token
straddles the prompt and the completion, no mask can separate them, and the pair is refused
(ValueError: the build quarantines it), as a template that renders the prompt differently is.

Columns added, all int32 lists: DPO `prompt_input_ids`, `chosen_input_ids`, `chosen_labels`,
`rejected_input_ids`, `rejected_labels`; KTO `prompt_input_ids`, `completion_input_ids`,
`completion_labels` (each `*_input_ids` holds the prompt's tokens and the side's).
`tokenize.max_length` bounds each side: `drop` / `error` refuse the pair (quarantined, or a build
error), `truncate` cuts a side's tail (its prompt kept whole; a prompt longer than max_length is
refused).
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from dsc.chat.render import Rendered
from dsc.chat.tokenize import IGNORE_INDEX, RowTokenizer

IDS = pa.list_(pa.int32())
SIDES = {"dpo": ("chosen", "rejected"), "kto": ("completion",)}


def token_fields(kind: str) -> list[tuple[str, pa.DataType]]:
    """The columns `tokenize_row` adds, in order."""
    out = [("prompt_input_ids", IDS)]
    for side in SIDES[kind]:
        out += [(f"{side}_input_ids", IDS), (f"{side}_labels", IDS)]
    return out


def tokenized_schema(schema: pa.Schema, kind: str) -> pa.Schema:
    for name, typ in token_fields(kind):
        schema = schema.append(pa.field(name, typ))
    return schema


class TooLong(ValueError):
    """A side longer than tokenize.max_length (overflow: drop or error)."""


def tokenize_row(tokenizer: RowTokenizer, row: dict[str, Any], kind: str) -> dict[str, list[int]]:
    """The token columns of one DPO or KTO row (ValueError when the prompt does not end on a
    token boundary; TooLong when a side exceeds max_length and may not be truncated)."""
    prompt = row["prompt_text"]
    texts = [prompt + row[f"{side}_text"] for side in SIDES[kind]]
    # Encoded without the length limit: the limit is applied below, per side, prompt kept whole.
    limit, tokenizer.max_length = tokenizer.max_length, None
    try:
        encoded = tokenizer.encode_batch([Rendered(prompt, [])] + [Rendered(t, [(len(prompt), len(t))]) for t in texts])
    finally:
        tokenizer.max_length = limit
    prompt_ids = encoded[0].input_ids  # type: ignore[union-attr]
    n = len(prompt_ids)
    out: dict[str, list[int]] = {"prompt_input_ids": list(prompt_ids)}
    for side, enc in zip(SIDES[kind], encoded[1:]):
        assert enc is not None
        ids, labels = list(enc.input_ids), list(enc.labels)
        if ids[:n] != list(prompt_ids) or any(x != IGNORE_INDEX for x in labels[:n]) \
                or any(x == IGNORE_INDEX for x in labels[n:]):
            raise ValueError(f"the prompt text does not end on a token boundary of the {side} side: its last token "
                             f"merges with the completion's first (tokenizer {tokenizer.ref}); no mask separates them")
        if limit is not None and len(ids) > limit:
            if tokenizer.overflow != "truncate" or n >= limit:
                raise TooLong(f"the {side} side is {len(ids)} tokens, longer than tokenize.max_length {limit}")
            ids, labels = ids[:limit], labels[:limit]
        out[f"{side}_input_ids"] = ids
        out[f"{side}_labels"] = labels
    return out
