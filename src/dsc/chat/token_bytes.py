"""Token offsets from token ids, for lossless byte-level BPE tokenizers.

Asking `tokenizers` for offsets costs about a quarter of its encoding time (`encode_batch` against
`encode_batch_fast`), and turning millions of offset tuples into arrays costs more on top. For a
byte-level BPE tokenizer without a normaliser, a token's text is a fixed string of bytes: the
bytes its vocabulary entry spells in the byte-level alphabet, or an added token's content. The
tokens of a text then tile its UTF-8 bytes exactly, so a running sum of per-id byte lengths gives
every token's byte offsets, and a token's characters are the characters its bytes belong to —
which is how the library maps a byte-level token to character offsets when nothing trims them.

A token overlaps a character span exactly when its bytes overlap the span's bytes, so labels
computed on byte offsets against byte spans equal labels computed on the library's character
offsets against character spans. `plan_byte_lengths` allows this only for tokenizers whose
structure guarantees the tiling (and probes it); `RowTokenizer` checks every row at run time (its
tokens' bytes must add up to its text's) and falls back to the library's offsets for a batch
where they do not.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dsc.chat.segments import components

# Pre-tokenizers that split the text (or map it byte for byte) and drop nothing.
_TILING_PRE_TOKENIZERS = frozenset({"ByteLevel", "Split", "Digits", "Punctuation", "Sequence"})
# Post-processors that leave offsets as the model made them (with add_special_tokens=False they add nothing).
_UNTRIMMED_POST_PROCESSORS = frozenset({"TemplateProcessing", "BertProcessing", "Sequence"})


def _structural_reason(spec: dict[str, Any]) -> str | None:
    if spec.get("normalizer"):
        return "the tokenizer has a normaliser (its tokens need not spell the text's bytes)"
    pre = components(spec.get("pre_tokenizer"))
    if not any(p.get("type") == "ByteLevel" for p in pre):
        return "the pre-tokenizer is not byte-level"
    for part in pre:
        kind = part.get("type")
        if kind not in _TILING_PRE_TOKENIZERS:
            return f"pre_tokenizer type {kind!r} may drop or change text"
        if kind == "ByteLevel" and part.get("add_prefix_space"):
            return "pre_tokenizer ByteLevel(add_prefix_space=true) adds a space the text does not have"
        if kind == "Split" and str(part.get("behavior", "")).lower() == "removed":
            return "pre_tokenizer Split(behavior=Removed) drops text"
    for part in components(spec.get("post_processor")):
        kind = part.get("type")
        if kind in ("ByteLevel", "RobertaProcessing"):
            if part.get("trim_offsets"):
                return f"post_processor {kind}(trim_offsets=true) trims offsets"
        elif kind not in _UNTRIMMED_POST_PROCESSORS:
            return f"post_processor type {kind!r} is not known to keep offsets"
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return "the model is not BPE"
    if model.get("byte_fallback") or model.get("dropout"):
        return "BPE byte_fallback or dropout"
    return None


def plan_byte_lengths(tokenizer: Any, spec: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """(per-id UTF-8 byte lengths, "") when ids alone give exact offsets for this tokenizer, else
    (None, why not). `tokenizer` is a `tokenizers.Tokenizer`, `spec` its tokenizer.json content."""
    from tokenizers import pre_tokenizers

    reason = _structural_reason(spec)
    if reason:
        return None, reason
    alphabet = frozenset(pre_tokenizers.ByteLevel.alphabet())
    added = tokenizer.get_added_tokens_decoder()
    vocab = (spec.get("model") or {}).get("vocab")  # (already parsed: faster than asking the library)
    if not isinstance(vocab, dict):
        vocab = tokenizer.get_vocab(with_added_tokens=False)
    plain = {token: i for token, i in vocab.items() if i not in added}
    size = max([*plain.values(), *added, -1]) + 1
    lengths = np.zeros(size, dtype=np.int64)
    for i, a in added.items():
        if a.lstrip or a.rstrip or a.single_word:
            return None, f"added token {a.content!r} has lstrip/rstrip/single_word (it covers more than its text)"
        lengths[i] = len(a.content.encode("utf-8"))
    # one alphabet character per byte (checked on all entries at once: vocabularies run to 200k)
    if not set("".join(plain)) <= alphabet:
        bad = next(token for token in plain if not set(token) <= alphabet)
        return None, f"vocabulary entry {bad!r} is not spelled in the byte-level alphabet"
    lengths[np.fromiter(plain.values(), dtype=np.int64, count=len(plain))] = np.fromiter(
        map(len, plain), dtype=np.int64, count=len(plain))
    used = np.zeros(size, dtype=bool)
    used[list(plain.values())] = True
    used[list(added)] = True
    if (lengths[used] == 0).any():
        return None, "a token has no text"
    mismatch = _probe(tokenizer, lengths)
    if mismatch:
        return None, mismatch
    return lengths, ""


def byte_offsets(ids: np.ndarray, splits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, 2) int64 byte offsets of every token, relative to its row (rows are ids[splits[i]:splits[i+1]])."""
    n = lengths[ids]
    ends = np.cumsum(n)
    starts = ends - n
    row_lengths = np.diff(splits)
    # where each row starts in the running sum (an empty row has no tokens to shift)
    row_base = np.zeros(len(row_lengths), dtype=np.int64)
    nonempty = row_lengths > 0
    row_base[nonempty] = starts[splits[:-1][nonempty]]
    shift = np.repeat(row_base, row_lengths)
    return np.stack([starts - shift, ends - shift], axis=1)


def row_byte_lengths(ids: np.ndarray, splits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Bytes spelled by each row's tokens (equal to its text's UTF-8 length when they tile it)."""
    cum = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths[ids], out=cum[1:])
    return cum[splits[1:]] - cum[splits[:-1]]


def utf8_lengths(texts: list[str]) -> np.ndarray:
    return np.fromiter((len(t) if t.isascii() else len(t.encode("utf-8")) for t in texts), dtype=np.int64,
                       count=len(texts))


def spans_to_bytes(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans of `text` as UTF-8 byte spans."""
    if text.isascii():
        return spans
    return [(len(text[:a].encode("utf-8")), len(text[:b].encode("utf-8"))) for a, b in spans]


_PROBE_TEXTS = ("", "a", " hello world", "Thought: x\nAction: y[z]\n", "héllo wörld ✓ 日本 😀", "  \n\n\t 1234 's",
                "\u200b\u00e9\u0301 ﬁ Ⅻ", "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\"}}")


def _probe(tokenizer: Any, lengths: np.ndarray) -> str | None:
    """None when byte offsets from `lengths` agree with the library's character offsets on probe
    texts (single `encode` calls: see segments.plan_segments on forked workers' thread pools)."""
    specials = [t.content for t in list(tokenizer.get_added_tokens_decoder().values())[:8]]
    texts = list(_PROBE_TEXTS) + [t + tok + t for t in _PROBE_TEXTS[1:4] for tok in specials]
    for text in texts:
        enc = tokenizer.encode(text, add_special_tokens=False)
        ids = np.asarray(enc.ids, dtype=np.int64)
        if int(lengths[ids].sum()) != len(text.encode("utf-8")):
            return f"the tokens of the probe {text!r} do not spell its bytes"
        # the character each byte belongs to, and one past the last character
        char_of_byte = np.repeat(np.arange(len(text)), [len(c.encode("utf-8")) for c in text])
        offs = byte_offsets(ids, np.array([0, len(ids)]), lengths)
        for (bs, be), (cs, ce) in zip(offs.tolist(), enc.offsets):
            if (int(char_of_byte[bs]), int(char_of_byte[be - 1]) + 1) != (cs, ce):
                return f"byte offsets disagree with the tokenizer's offsets on the probe {text!r}"
    return None
