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

Speed (see `dsc.chat.segments`): rows are tokenised a batch at a time, piece by piece between
the tokenizer's added tokens, with a bounded per-process cache of pieces seen before (system
prompts, tool schemas, instruction turns), which gives exactly the ids and offsets of whole-text
tokenisation, or whole-text when that cannot be guaranteed for the tokenizer (`reuse_reason`
says why). For byte-level BPE tokenizers the offsets come from the ids (`dsc.chat.token_bytes`:
each id spells a fixed number of bytes), so the library is asked for ids only and labels are
computed on byte offsets against byte spans — the same labels (`byte_offsets_reason` says why a
tokenizer does not qualify). With offsets from ids, ASCII text is tokenised word by word through
a word cache (`dsc.chat.words`: the pre-tokenizer's regex in Python, each distinct word merged
once by the tokenizer's own model; `words_reason` says why a tokenizer does not qualify), the
rest by the library. Labels come from one vectorised pass over the batch's offsets, and
`encode_arrays` hands the result over as flat arrays (for Arrow) without a Python list per row.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dsc.chat.render import Rendered
from dsc.chat.segments import (
    SegmentCache,
    Splitter,
    TokenBatch,
    encode_segmented,
    encode_whole,
    library_encoder,
    plan_segments,
)
from dsc.chat.templating import ChatTemplate, resolve_tokenizer_file
from dsc.chat.token_bytes import byte_offsets, plan_byte_lengths, row_byte_lengths, spans_to_bytes, utf8_lengths
from dsc.chat.weights import token_weights
from dsc.chat.words import WordEncoder, plan_words
from dsc.core.errors import BuildError, SpecError
from dsc.record import BadRow
from dsc.spec.sections import TokenizeSpec

IGNORE_INDEX = -100


@dataclass(slots=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False
    supervised: int | None = None  # labels != IGNORE_INDEX, when the encoder counted them

    @property
    def n_supervised(self) -> int:
        if self.supervised is not None:
            return self.supervised
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass
class EncodedBatch:
    """A batch of rows as flat arrays: row i is `input_ids[splits[i]:splits[i + 1]]` (after
    truncation; a row without tokens in the output, `dropped`, has none)."""

    input_ids: np.ndarray  # int32
    labels: np.ndarray  # int32, IGNORE_INDEX where not supervised
    splits: np.ndarray  # int64, rows + 1
    dropped: np.ndarray  # bool per row: too long and not truncated (overflow: drop, or error unraised)
    truncated: np.ndarray  # bool per row
    n_supervised: np.ndarray  # int64 per row (0 for a dropped row)
    too_long: np.ndarray  # bool per row: more than max_length tokens (whatever overflow says)
    n_tokens: np.ndarray  # int64 per row: its length before any truncation
    weights: np.ndarray | None = None  # float32 per token when the rows carry loss weights (0: not supervised)

    def __len__(self) -> int:
        return len(self.dropped)

    def row(self, i: int) -> Encoded | None:
        if self.dropped[i]:
            return None
        a, b = int(self.splits[i]), int(self.splits[i + 1])
        return Encoded(self.input_ids[a:b].tolist(), self.labels[a:b].tolist(), bool(self.truncated[i]),
                       int(self.n_supervised[i]))

    def rows(self) -> list[Encoded | None]:
        return [self.row(i) for i in range(len(self))]

    def arrow_columns(self, at: np.ndarray | None = None, length: int | None = None) -> tuple[Any, Any]:
        """(input_ids, labels) as Arrow list<int32> arrays (the artifact's column type), built
        from the flat buffers without a Python list per row.

        Without `at`: the rows that were not dropped, in order. With `at` (strictly increasing
        positions, one per row of this batch) and `length`: arrays of `length` entries where
        entry at[i] holds row i, and every other entry, and a dropped row's, is null — e.g. a
        render batch where some rows failed before tokenisation."""
        import pyarrow as pa

        offsets_a, mask = self._list_layout(at, length)
        ids = pa.ListArray.from_arrays(offsets_a, pa.array(self.input_ids, type=pa.int32()), mask=mask)
        labels = pa.ListArray.from_arrays(offsets_a, pa.array(self.labels, type=pa.int32()), mask=mask)
        return ids, labels

    def arrow_weights(self, at: np.ndarray | None = None, length: int | None = None) -> Any:
        """The per-token loss weights as an Arrow list<float32> array, laid out as `arrow_columns`."""
        import pyarrow as pa

        if self.weights is None:
            raise ValueError("these rows carry no loss weights")
        offsets_a, mask = self._list_layout(at, length)
        return pa.ListArray.from_arrays(offsets_a, pa.array(self.weights, type=pa.float32()), mask=mask)

    def _list_layout(self, at: np.ndarray | None, length: int | None) -> tuple[Any, Any]:
        """(offsets, null mask) of the per-row lists (see `arrow_columns`)."""
        import pyarrow as pa

        lengths = np.diff(self.splits)
        if at is None:
            valid = ~self.dropped
            lengths = lengths[valid]
            mask = None
        else:
            at = np.asarray(at, dtype=np.int64)
            if len(at) != len(self) or (len(at) and (np.any(np.diff(at) <= 0) or at[0] < 0
                                                     or length is None or at[-1] >= length)):
                raise ValueError("`at` must hold one strictly increasing position below `length` per row")
            n = int(length if length is not None else 0)
            full = np.zeros(n, dtype=np.int64)
            full[at] = lengths
            valid = np.zeros(n, dtype=bool)
            valid[at[~self.dropped]] = True
            lengths, mask = full, pa.array(~valid)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if offsets[-1] >= 2**31:
            raise ValueError("more than 2**31 tokens in one batch: split it")
        return pa.array(offsets.astype(np.int32)), mask


@dataclass
class TokenizeStats:
    rows: int = 0
    dropped_too_long: int = 0  # overflow: drop
    truncated: int = 0  # overflow: truncate
    unsupervised_after_truncation: int = 0  # truncated rows whose supervised tokens were all cut
    byte_offset_fallbacks: int = 0  # batches re-encoded with the library's offsets (tokens did not spell the text)


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
    # Segment reuse (dsc.chat.segments): the splitter when it is exact for this tokenizer,
    # else None and `reuse_reason` says why; the cache is per process (forked workers start
    # from the parent's copy and fill their own).
    _splitter: Splitter | None = field(default=None, repr=False)
    reuse_reason: str = ""
    cache: SegmentCache = field(default_factory=SegmentCache, repr=False)
    # Offsets from ids (dsc.chat.token_bytes): per-id byte lengths when exact for this
    # tokenizer, else None and `byte_offsets_reason` says why.
    _byte_lengths: np.ndarray | None = field(default=None, repr=False)
    byte_offsets_reason: str = ""
    # Word cache (dsc.chat.words): ASCII text tokenised word by word, when exact for this
    # tokenizer and offsets come from ids; else None and `words_reason` says why.
    _words: WordEncoder | None = field(default=None, repr=False)
    words_reason: str = ""

    @classmethod
    def load(cls, ref: "str | TokenizeSpec", base_dir: Path, max_length: int | None = None,
             overflow: Literal["drop", "truncate", "error"] = "drop", *,
             segment_reuse: bool = True, byte_offsets: bool = True, word_cache: bool = True) -> "RowTokenizer":
        """`ref`: a TokenizeSpec, or a tokenizer directory (relative to base_dir) / hub id.
        `segment_reuse=False` always tokenises whole texts, `byte_offsets=False` always asks the
        library for offsets, `word_cache=False` always asks the library for ids (the results are
        the same)."""
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
            text = data.decode("utf-8")
            tok = Tokenizer.from_str(text)
        except Exception as e:  # noqa: BLE001 - a corrupt or incompatible tokenizer.json
            raise BuildError(f"cannot load tokenizer {ref!r} from {tok_json}: {type(e).__name__}: {e}") from None
        tok.no_truncation()
        tok.no_padding()
        h = hashlib.sha256()
        for name, content in (("tokenizer.json", data), ("tokenizer_config.json",
                                                         config.read_bytes() if config is not None else b"")):
            h.update(f"{name}\0{len(content)}\0".encode())
            h.update(content)
        spec = json.loads(text)
        splitter, reason = None, "segment reuse switched off"
        if segment_reuse:
            splitter, reason = plan_segments(tok, spec)
        byte_lengths, byte_reason = None, "offsets from ids switched off"
        if byte_offsets:
            byte_lengths, byte_reason = plan_byte_lengths(tok, spec)
        words, words_reason = None, "word cache switched off"
        if word_cache and byte_lengths is None:
            words_reason = "needs offsets from ids"
        elif word_cache:
            words, words_reason = plan_words(tok, spec, cut_elsewhere=splitter is not None)
        return cls(ref=ref, path=tok_json, sha256=h.hexdigest(), max_length=max_length, overflow=overflow, _tok=tok,
                   _splitter=splitter, reuse_reason=reason, _byte_lengths=byte_lengths,
                   byte_offsets_reason=byte_reason, _words=words, words_reason=words_reason)

    @property
    def segment_reuse(self) -> bool:
        return self._splitter is not None

    def fast_paths(self) -> str:
        """Which speed-ups this tokenizer allows, and why not where it does not (results never
        depend on them): for `dsc build --timings`."""
        reuse = "segment reuse on" if self.segment_reuse else f"segment reuse off ({self.reuse_reason})"
        offsets = ("offsets from ids" if self._byte_lengths is not None
                   else f"offsets from the library ({self.byte_offsets_reason})")
        words = "word cache on" if self._words is not None else f"word cache off ({self.words_reason})"
        return f"{reuse}; {offsets}; {words}"

    def _encode_texts(self, texts: list[str]) -> TokenBatch:
        """Ids and offsets of `texts`: in bytes when the tokenizer allows offsets from ids and
        every row's tokens spell exactly its text's bytes, else the library's character offsets."""
        tok = self._tok
        lengths = self._byte_lengths

        def encode(batch: list[str]) -> list[Any]:
            return tok.encode_batch(batch, add_special_tokens=False)  # type: ignore[attr-defined]

        if lengths is not None:  # ids only: the offsets follow from the ids
            encode_ids = getattr(tok, "encode_batch_fast", None)
            library = library_encoder((lambda batch: encode_ids(batch, add_special_tokens=False)) if encode_ids else encode,
                                      with_offsets=False)
            words = self._words
            ids_only = library if words is None else (lambda batch: words.encode(batch, library))
            if self._splitter is None:
                batch = encode_whole(ids_only, texts)
            else:
                batch = encode_segmented(ids_only, texts, self._splitter, self.cache, with_offsets=False)
            if np.array_equal(row_byte_lengths(batch.ids, batch.splits, lengths), utf8_lengths(texts)):
                return TokenBatch(batch.ids, byte_offsets(batch.ids, batch.splits, lengths), batch.splits, unit="byte")
            self.stats.byte_offset_fallbacks += 1  # cannot happen for a tokenizer that passed the plan
        if self._splitter is None:
            return encode_whole(library_encoder(encode), texts)
        return encode_segmented(library_encoder(encode), texts, self._splitter, self.cache)

    def encode_arrays(self, rows: list[Rendered], *, raise_too_long: bool = True) -> EncodedBatch:
        """The batch as flat arrays. overflow: drop marks overlong rows `dropped`; overflow: error
        raises RowTooLong for the first overlong row of the batch, or with `raise_too_long=False`
        marks every overlong row `dropped` (and `too_long`, with its `n_tokens`) and encodes the
        others, so a caller can report the first offender in its own order in one pass."""
        n_rows = len(rows)
        texts = [r.text for r in rows]
        batch = self._encode_texts(texts)
        ids, splits = batch.ids, batch.splits
        lengths = np.diff(splits)
        in_bytes = batch.unit == "byte"
        # One pass over the whole batch: rows are laid end to end with a one-unit gap (so a
        # zero-width token at a row's end cannot reach the next row's first span).
        bases = np.zeros(n_rows, dtype=np.int64)
        if n_rows > 1:
            row_sizes = utf8_lengths(texts[:-1]) if in_bytes else np.fromiter(map(len, texts[:-1]), dtype=np.int64,
                                                                               count=n_rows - 1)
            np.cumsum(row_sizes + 1, out=bases[1:])
        span_counts = [len(r.spans) for r in rows]
        if sum(span_counts):
            row_spans = [spans_to_bytes(r.text, r.spans) for r in rows] if in_bytes else [r.spans for r in rows]
            spans = np.fromiter((x for sp in row_spans for s in sp for x in s), dtype=np.int64,
                                count=2 * sum(span_counts)).reshape(-1, 2)
            spans = spans + np.repeat(bases, span_counts)[:, None]
        else:
            spans = np.zeros((0, 2), dtype=np.int64)
        offsets = batch.offsets + np.repeat(bases, lengths)[:, None]
        mask = supervised_mask(offsets, spans)
        labels = np.where(mask, ids, IGNORE_INDEX).astype(np.int32)
        weights = None
        if any(r.weights is not None for r in rows):
            weights = self._token_weights(rows, offsets, bases, in_bytes)

        too_long = (lengths > self.max_length) if self.max_length is not None else np.zeros(n_rows, dtype=bool)
        if self.overflow == "error" and too_long.any() and raise_too_long:
            index = int(np.argmax(too_long))
            self.stats.rows += index
            n = int(lengths[index])
            raise RowTooLong(f"row is {n} tokens long, more than tokenize.max_length={self.max_length} "
                             f"(overflow: error)", index, n)
        dropped = too_long if self.overflow != "truncate" else np.zeros(n_rows, dtype=bool)
        truncated = too_long if self.overflow == "truncate" else np.zeros(n_rows, dtype=bool)
        kept_lengths = np.where(dropped, 0, lengths)
        if truncated.any():
            kept_lengths = np.where(truncated, self.max_length, kept_lengths)
        if dropped.any() or truncated.any():
            position = np.arange(len(ids), dtype=np.int64) - np.repeat(splits[:-1], lengths)
            keep = position < np.repeat(kept_lengths, lengths)
            ids, labels, mask = ids[keep], labels[keep], mask[keep]
            weights = weights[keep] if weights is not None else None
        out_splits = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(kept_lengths, out=out_splits[1:])
        cum = np.zeros(len(mask) + 1, dtype=np.int64)
        np.cumsum(mask, out=cum[1:])
        n_supervised = cum[out_splits[1:]] - cum[out_splits[:-1]]

        self.stats.rows += n_rows
        self.stats.dropped_too_long += int(dropped.sum()) if self.overflow == "drop" else 0
        self.stats.truncated += int(truncated.sum())
        self.stats.unsupervised_after_truncation += int((truncated & (n_supervised == 0)).sum())
        return EncodedBatch(ids, labels, out_splits, dropped, truncated, n_supervised, too_long, lengths, weights)

    @staticmethod
    def _token_weights(rows: list[Rendered], offsets: np.ndarray, bases: np.ndarray, in_bytes: bool) -> np.ndarray:
        """Per token of the batch (rows laid end to end as in `encode_arrays`): its loss weight."""
        pieces = [r.weights or [] for r in rows]
        counts = [len(p) for p in pieces]
        bounds = ([spans_to_bytes(r.text, [(w.start, w.end) for w in p]) for r, p in zip(rows, pieces)] if in_bytes
                  else [[(w.start, w.end) for w in p] for p in pieces])
        flat = np.array([x for b in bounds for s in b for x in s], dtype=np.int64).reshape(-1, 2)
        flat = flat + np.repeat(bases, counts)[:, None]
        values = np.array([w.weight for p in pieces for w in p], dtype=np.float32)
        return token_weights(offsets, flat, values)

    def encode_batch(self, rows: list[Rendered]) -> list[Encoded | None]:
        """One Encoded per row; None for a row dropped as too long (overflow: drop).
        overflow: error raises RowTooLong for the first overlong row of the batch."""
        return self.encode_arrays(rows).rows()

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


def supervised_mask(offsets: np.ndarray, spans: "list[tuple[int, int]] | np.ndarray") -> np.ndarray:
    """Per token: does its character span [start, end) overlap a supervised span?

    `spans` (a list of pairs or an (n, 2) array) are sorted and non-overlapping. A zero-width
    token counts as covering the character at its position."""
    n = len(offsets)
    sp = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    if n == 0 or len(sp) == 0:
        return np.zeros(n, dtype=bool)
    starts, ends = offsets[:, 0], np.maximum(offsets[:, 1], offsets[:, 0] + 1)
    # The first span ending after the token starts is the only candidate for an overlap.
    k = np.searchsorted(sp[:, 1], starts, side="right")
    valid = k < len(sp)
    k = np.minimum(k, len(sp) - 1)
    return valid & (sp[k, 0] < ends)
