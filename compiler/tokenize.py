"""Tokenise rendered rows: input_ids + labels from supervised character spans.

Uses the `tokenizers` library directly on the tokenizer's `tokenizer.json` (the build must not
import transformers). The rendered text already carries the template's own special tokens, so
nothing is added (`add_special_tokens=False`, as `apply_chat_template(tokenize=True)` does), and
the tokenizer file's own truncation/padding settings are switched off.

Labels: a token is supervised (label = its id, else -100) when its character span overlaps a
supervised span — i.e. a token straddling a span edge is supervised. This is what transformers'
`return_assistant_tokens_mask` computes (from the token holding a span's first character through
the token holding its last one) whenever the tokens tile the text, which byte-level and
SentencePiece-style tokenizers do; the test suite compares the two on the tiny tokenizer.
Labels are not shifted (causal-LM models shift internally).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dsc.compiler.errors import BuildError, SpecError
from dsc.compiler.record import BadRow
from dsc.compiler.render import Rendered
from dsc.compiler.templating import ChatTemplate, resolve_tokenizer_file

IGNORE_INDEX = -100


class TokenizeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokenizer: str = Field(description="a local tokenizer directory (with tokenizer.json) or a Hugging Face hub id")
    max_length: int | None = Field(None, gt=0, description="longest row in tokens; None: no limit")
    overflow: Literal["drop", "truncate", "error"] = Field(
        "drop", description="a row longer than max_length: drop it, truncate it, or fail with an error")


@dataclass(slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_supervised(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass
class TokenizeStats:
    rows: int = 0
    dropped_too_long: int = 0  # overflow: drop
    truncated: int = 0  # overflow: truncate
    unsupervised_after_truncation: int = 0  # truncated rows whose supervised tokens were all cut


class RowTooLong(BadRow):
    """overflow: error — the row at `index` of the batch is longer than max_length."""

    def __init__(self, reason: str, index: int, n_tokens: int):
        super().__init__(reason)
        self.index = index
        self.n_tokens = n_tokens


@dataclass
class RowTokenizer:
    ref: str
    path: Path  # the tokenizer.json used
    sha256: str  # of tokenizer.json + tokenizer_config.json content
    max_length: int | None = None
    overflow: Literal["drop", "truncate", "error"] = "drop"
    stats: TokenizeStats = field(default_factory=TokenizeStats)
    _tok: object = field(default=None, repr=False)

    @classmethod
    def load(cls, ref: "str | TokenizeSpec", base_dir: Path, max_length: int | None = None,
             overflow: Literal["drop", "truncate", "error"] = "drop") -> "RowTokenizer":
        """`ref`: a TokenizeSpec, or a tokenizer directory (relative to base_dir) / hub id."""
        if isinstance(ref, TokenizeSpec):
            ref, max_length, overflow = ref.tokenizer, ref.max_length, ref.overflow
        from tokenizers import Tokenizer

        try:
            tok_json = resolve_tokenizer_file(ref, Path(base_dir), "tokenizer.json", required=True)
            config = resolve_tokenizer_file(ref, Path(base_dir), "tokenizer_config.json", required=False)
        except SpecError as e:
            raise BuildError(f"cannot load tokenizer {ref!r}: {e.message}") from None
        assert tok_json is not None
        try:
            data = tok_json.read_bytes()
            tok = Tokenizer.from_str(data.decode("utf-8"))
        except Exception as e:  # noqa: BLE001 - a corrupt or incompatible tokenizer.json
            raise BuildError(f"cannot load tokenizer {ref!r} from {tok_json}: {type(e).__name__}: {e}") from None
        tok.no_truncation()
        tok.no_padding()
        h = hashlib.sha256()
        for name, content in (("tokenizer.json", data), ("tokenizer_config.json",
                                                         config.read_bytes() if config is not None else b"")):
            h.update(f"{name}\0{len(content)}\0".encode())
            h.update(content)
        return cls(ref=ref, path=tok_json, sha256=h.hexdigest(), max_length=max_length, overflow=overflow, _tok=tok)

    def encode_batch(self, rows: list[Rendered]) -> list[Encoded | None]:
        """One Encoded per row; None for a row dropped as too long (overflow: drop).
        overflow: error raises RowTooLong for the first overlong row of the batch."""
        encodings = self._tok.encode_batch([r.text for r in rows], add_special_tokens=False)
        out: list[Encoded | None] = []
        for index, (row, enc) in enumerate(zip(rows, encodings)):
            ids = np.asarray(enc.ids, dtype=np.int64)
            n = len(ids)
            truncated = False
            if self.max_length is not None and n > self.max_length:
                if self.overflow == "drop":
                    self.stats.rows += 1
                    self.stats.dropped_too_long += 1
                    out.append(None)
                    continue
                if self.overflow == "error":
                    raise RowTooLong(f"row is {n} tokens long, more than tokenize.max_length={self.max_length} "
                                     f"(overflow: error)", index, n)
                truncated = True
            offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            labels = np.where(supervised_mask(offsets, row.spans), ids, IGNORE_INDEX)
            if truncated:
                ids, labels = ids[: self.max_length], labels[: self.max_length]
                self.stats.truncated += 1
                if not (labels != IGNORE_INDEX).any():
                    self.stats.unsupervised_after_truncation += 1
            self.stats.rows += 1
            out.append(Encoded(ids.tolist(), labels.tolist(), truncated))
        return out

    def encode(self, row: Rendered) -> Encoded | None:
        return self.encode_batch([row])[0]

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def split_special_tokens(self, template: ChatTemplate) -> list[str]:
        """The template's control tokens this tokenizer does not encode as one token (a template/
        tokenizer mismatch: e.g. chatml with a Llama-2 tokenizer) — worth a warning."""
        out = []
        for token in template.special_tokens:
            ids = self._tok.encode(token, add_special_tokens=False).ids
            if len(ids) != 1:
                out.append(token)
        return out


def supervised_mask(offsets: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Per token: does its character span [start, end) overlap a supervised span?

    `spans` are sorted and non-overlapping. A zero-width token counts as covering the character
    at its position."""
    n = len(offsets)
    if n == 0 or not spans:
        return np.zeros(n, dtype=bool)
    sp = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], np.maximum(offsets[:, 1], offsets[:, 0] + 1)
    # The first span ending after the token starts is the only candidate for an overlap.
    k = np.searchsorted(sp[:, 1], starts, side="right")
    valid = k < len(sp)
    k = np.minimum(k, len(sp) - 1)
    return valid & (sp[k, 0] < ends)
