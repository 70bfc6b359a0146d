"""Segment reuse: tokenise the text between a tokenizer's added tokens once, reuse it across rows.

Agent data repeats long stretches verbatim: system prompts carrying the same tool schemas, the
same instruction turn in every row, the role headers of a chat template. `tokenizers` never lets
a token cross an added token: it first cuts the raw text at every occurrence of its
*non-normalised* added tokens (leftmost-longest, an Aho-Corasick scan), then normalises,
pre-tokenises and tokenises each piece on its own (`AddedVocabulary::extract_and_normalize`). So
the ids of a text are the ids of its pieces, stitched with the added tokens' own ids, and a
piece seen before can be looked up instead of tokenised again. Offsets are the piece's offsets
shifted by where the piece starts.

That holds only when nothing in the pipeline looks past a piece or at where it starts. This
module decides that conservatively (`plan_segments`) and falls back to whole-text tokenisation
(`Splitter` None, with the reason) when:
- an added token that takes part in the cut has `lstrip`/`rstrip`/`single_word` (its match
  then depends on the text around it), or special tokens are encoded as text
  (`encode_special_tokens`);
- a component of the tokenizer is not one whose behaviour is known to be per piece: the
  pre-tokenizer `Metaspace` with `prepend_scheme: first` (it prepends only to the piece at offset
  0 of the original text), BPE dropout (random), or any component type not on the lists below;
- a probe of texts built around the added tokens (adjacent tokens, empty pieces, whitespace,
  unicode) does not give exactly the whole-text ids and offsets.

Everything else (the cache, the batching) cannot change a result: a cache hit returns what
tokenising that exact string returned before in this process.
"""
from __future__ import annotations

import itertools
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Component types whose processing is known to be per piece and position-independent.
_PER_PIECE_PRE_TOKENIZERS = frozenset({
    "ByteLevel", "Whitespace", "WhitespaceSplit", "BertPreTokenizer", "Punctuation", "Digits", "Split",
    "CharDelimiterSplit", "UnicodeScripts", "Metaspace", "FixedLength", "Sequence"})
_PER_PIECE_NORMALIZERS = frozenset({
    "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip", "StripAccents", "Replace", "Prepend", "Precompiled",
    "BertNormalizer", "Nmt", "ByteLevel", "Sequence"})
_POST_PROCESSORS = frozenset({"TemplateProcessing", "BertProcessing", "RobertaProcessing", "ByteLevel", "Sequence"})
_MODELS = frozenset({"BPE", "WordPiece", "WordLevel", "Unigram"})

# Probe pieces placed around the added tokens: empty, whitespace runs, text that a pre-tokenizer
# would join with a neighbour, multi-byte characters.
_PROBE_PIECES = ("", " ", "\n", "  \n\n ", "a", " hello", "world ", "Thought: x\nAction: y[z]", "héllo wörld ✓ 日本 😀",
                 "\t", "1234", "'s", " ")
_PROBE_TOKENS = 24  # added tokens probed (all of them when fewer; else the longest and shortest)


@dataclass(frozen=True)
class Splitter:
    """Cuts a text where the tokenizer cuts it: at its non-normalised added tokens."""

    pattern: re.Pattern[str]  # one capturing group matching leftmost-longest (see token_pattern)
    ids: dict[str, np.ndarray]  # added token → its ids (one id) as an int32 array
    offsets: dict[str, np.ndarray]  # added token → its (1, 2) int32 offsets, relative to the token

    def __post_init__(self) -> None:
        # The added tokens laid end to end: the head of every batch's pool of token arrays.
        tokens = list(self.ids)
        counts = [len(self.ids[t]) for t in tokens]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
        object.__setattr__(self, "_pool_ids", np.concatenate([self.ids[t] for t in tokens]).astype(np.int32))
        object.__setattr__(self, "_pool_offsets",
                           np.concatenate([self.offsets[t] for t in tokens]).astype(np.int32).reshape(-1, 2))
        object.__setattr__(self, "_index", {t: (starts[k], counts[k]) for k, t in enumerate(tokens)})

    def split(self, text: str) -> list[str]:
        """[piece, token, piece, token, ..., piece]: odd positions are added tokens; pieces may be empty."""
        return self.pattern.split(text)


@dataclass
class TokenBatch:
    """Token ids and offsets of a batch of texts, concatenated."""

    ids: np.ndarray  # int32 (N,)
    offsets: np.ndarray | None  # int64 (N, 2), relative to each row's text, in `unit`s; None: not asked for
    splits: np.ndarray  # int64 (rows + 1,): row i is ids[splits[i]:splits[i + 1]]
    unit: str = "char"  # "char": the library's character offsets; "byte": UTF-8 byte offsets (token_bytes)


@dataclass
class CacheStats:
    pieces: int = 0  # pieces of text in the rows (added tokens not counted)
    distinct: int = 0  # distinct pieces per batch (a piece repeated within a batch is looked up once)
    hits: int = 0  # distinct pieces found in the cache
    encoded: int = 0  # distinct pieces tokenised
    admitted: int = 0
    evicted: int = 0


@dataclass
class SegmentCache:
    """A bounded LRU of piece → (ids, relative offsets or None), per process.

    Bounded by the tokens it holds and by its number of entries, so memory stays flat however
    many rows pass. A piece is admitted when it occurs twice in one batch or is tokenised a
    second time (a "doorkeeper" of hashes remembers first sightings), so the many pieces that
    occur once (most message contents) never churn the cache.
    Which pieces are cached only changes speed, never a result."""

    max_tokens: int = 2_000_000  # 12 bytes per token (ids int32 + offsets 2 × int32), plus the keys
    max_entries: int = 100_000
    stats: CacheStats = field(default_factory=CacheStats)
    _entries: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=OrderedDict, repr=False)
    _tokens: int = 0
    _seen: set[int] = field(default_factory=set, repr=False)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        return self._tokens

    def get(self, piece: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        hit = self._entries.get(piece)
        if hit is not None:
            self._entries.move_to_end(piece)
        return hit

    def wants(self, piece: str, n_tokens: int, repeated: bool) -> bool:
        """Whether to keep a piece just tokenised: it was `repeated` in its batch or seen in an
        earlier one (the doorkeeper remembers it otherwise), and it is not huge."""
        if n_tokens > self.max_tokens // 8:
            return False  # one huge piece would flush everything else
        h = hash(piece)
        if repeated or h in self._seen:
            return True
        if len(self._seen) >= 2 * self.max_entries:  # (a set of ints: ~50 bytes each)
            self._seen.clear()
        self._seen.add(h)
        return False

    def put(self, piece: str, ids: np.ndarray, offsets: np.ndarray | None) -> None:
        """Keep a piece (own copies of the arrays, not views of a batch's buffers; no offsets
        when the caller computes them from ids)."""
        n = len(ids)
        old = self._entries.pop(piece, None)
        if old is not None:
            self._tokens -= len(old[0])
        self._entries[piece] = (ids, offsets)
        self._tokens += n
        self.stats.admitted += 1
        while self._tokens > self.max_tokens or len(self._entries) > self.max_entries:
            _, (old, _) = self._entries.popitem(last=False)
            self._tokens -= len(old)
            self.stats.evicted += 1

    def clear(self) -> None:
        self._entries.clear()
        self._seen.clear()
        self._tokens = 0


# texts → (ids int32, offsets int32 (N, 2) or None when not asked for, splits int64 (texts + 1))
FlatEncodeFn = Callable[[list[str]], tuple[np.ndarray, np.ndarray | None, np.ndarray]]


def library_encoder(encode_batch: Callable[[list[str]], list[Any]], with_offsets: bool = True) -> FlatEncodeFn:
    """A FlatEncodeFn from a function returning the library's Encodings (add_special_tokens=False);
    `with_offsets=False`: ids only (the caller derives offsets, `encode_batch` need not compute them)."""
    return lambda texts: _flatten(encode_batch(texts), with_offsets)


def _flatten(encodings: Sequence[Any], with_offsets: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(ids int32, offsets int32 (N, 2) or None, splits int64) of a list of Encodings, without
    a Python-level loop per token."""
    splits = np.zeros(len(encodings) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings)), out=splits[1:])
    total = int(splits[-1])
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total)
    if not with_offsets:
        return ids, None, splits
    flat = itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encodings))
    offsets = np.fromiter(flat, dtype=np.int32, count=2 * total).reshape(total, 2)
    return ids, offsets, splits


def ranges_index(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The positions of ranges (start, count) of a pool laid end to end: pool[ranges_index(...)]
    is the ranges concatenated. Output position t comes from its range's start plus t's rank
    within the range."""
    ends = np.cumsum(counts)
    return np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) + np.repeat(starts - (ends - counts), counts)


def encode_whole(encode: FlatEncodeFn, texts: list[str]) -> TokenBatch:
    ids, offsets, splits = encode(texts)
    return TokenBatch(ids, offsets.astype(np.int64) if offsets is not None else None, splits)


def encode_segmented(encode: FlatEncodeFn, texts: list[str], splitter: Splitter, cache: SegmentCache,
                     with_offsets: bool = True) -> TokenBatch:
    """Tokenise `texts` piece by piece: each distinct piece not in `cache` is tokenised once, in
    one batched call, and every row is stitched from pieces and added tokens.

    The stitching is one gather: the batch's token arrays (added tokens, cache hits, newly
    tokenised pieces) are laid end to end in a pool, every part of every row is a (start,
    count) range of it, and the output is the pool indexed by those ranges expanded.
    `with_offsets=False`: ids only (`encode` returns no offsets; pieces go into the cache without them)."""
    n_rows = len(texts)
    rows = [splitter.split(t) for t in texts]
    parts_per_row = np.fromiter(map(len, rows), dtype=np.int64, count=n_rows)
    parts = list(itertools.chain.from_iterable(rows))
    # A piece never equals an added token (it would have been cut), so one index serves both.
    index: dict[str, tuple[int, int]] = dict(splitter._index)  # type: ignore[attr-defined]
    pool_ids: list[np.ndarray] = [splitter._pool_ids]  # type: ignore[attr-defined]
    pool_offsets: list[np.ndarray] = [splitter._pool_offsets]  # type: ignore[attr-defined]
    at = len(splitter._pool_ids)  # type: ignore[attr-defined]
    missing: list[str] = []  # in first-occurrence order: the batch sent to the tokenizer is deterministic
    occurrences = Counter(parts)
    hits = 0
    for part in occurrences:
        if part in index:
            continue
        hit = cache.get(part)
        if hit is None or (with_offsets and hit[1] is None):  # (kept by a caller that needed no offsets)
            missing.append(part)
            continue
        n = len(hit[0])
        index[part] = (at, n)
        pool_ids.append(hit[0])
        if with_offsets:
            pool_offsets.append(hit[1])
        at += n
        hits += 1
    stats = cache.stats
    stats.pieces += len(parts) - int(parts_per_row.sum() - n_rows) // 2
    stats.distinct += hits + len(missing)
    stats.hits += hits
    if missing:
        ids, offsets, splits = encode(missing)
        stats.encoded += len(missing)
        bounds = splits.tolist()
        for k, piece in enumerate(missing):
            a, b = bounds[k], bounds[k + 1]
            index[piece] = (at + a, b - a)
            if cache.wants(piece, b - a, occurrences[piece] > 1):
                cache.put(piece, ids[a:b].copy(), offsets[a:b].copy() if offsets is not None else None)
        pool_ids.append(ids)
        if offsets is not None:
            pool_offsets.append(offsets)

    ranges = np.fromiter(itertools.chain.from_iterable(map(index.__getitem__, parts)), dtype=np.int64,
                         count=2 * len(parts)).reshape(-1, 2)
    counts = ranges[:, 1]
    first_part = np.zeros(n_rows, dtype=np.int64)
    np.cumsum(parts_per_row[:-1], out=first_part[1:])
    splits = np.zeros(n_rows + 1, dtype=np.int64)
    if len(parts):
        np.cumsum(np.add.reduceat(counts, first_part), out=splits[1:])
    total = int(splits[-1])
    if total == 0:
        return TokenBatch(np.zeros(0, np.int32), np.zeros((0, 2), np.int64) if with_offsets else None, splits)
    gather = ranges_index(ranges[:, 0], counts)
    ids = np.concatenate(pool_ids)[gather]
    if not with_offsets:
        return TokenBatch(ids, None, splits)
    # Where each part starts in its row: an exclusive running sum of part lengths, restarted per row.
    char_lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    char_starts = np.cumsum(char_lens) - char_lens
    char_starts -= np.repeat(char_starts[first_part], parts_per_row)
    offsets = np.concatenate(pool_offsets)[gather].astype(np.int64) + np.repeat(char_starts, counts)[:, None]
    return TokenBatch(ids, offsets, splits)


# ---------------------------------------------------------------------------------------------
# Deciding whether pieces are independent
# ---------------------------------------------------------------------------------------------


def components(component: Any) -> list[dict[str, Any]]:
    """A component of tokenizer.json and, for Sequences, its parts (recursively)."""
    if not isinstance(component, dict):
        return []
    out = [component]
    for key in ("pretokenizers", "normalizers", "processors"):
        for sub in component.get(key) or []:
            out += components(sub)
    return out


def _structural_reason(spec: dict[str, Any], encode_special_tokens: bool) -> str | None:
    """Why this tokenizer's pieces may not be independent; None when its structure allows reuse."""
    if encode_special_tokens:
        return "the tokenizer encodes special tokens as text (encode_special_tokens)"
    for name, allowed in (("pre_tokenizer", _PER_PIECE_PRE_TOKENIZERS), ("normalizer", _PER_PIECE_NORMALIZERS),
                          ("post_processor", _POST_PROCESSORS)):
        for part in components(spec.get(name)):
            kind = part.get("type")
            if kind not in allowed:
                return f"{name} type {kind!r} is not known to work piece by piece"
            if name == "pre_tokenizer" and kind == "Metaspace" and str(part.get("prepend_scheme", "")).lower() == "first":
                return "pre_tokenizer Metaspace(prepend_scheme=first) treats the piece at offset 0 differently"
    model = spec.get("model") or {}
    if model.get("type") not in _MODELS:
        return f"model type {model.get('type')!r} is not known"
    if model.get("dropout"):
        return "BPE dropout makes tokenisation random"
    return None


def plan_segments(tokenizer: Any, spec: dict[str, Any]) -> tuple[Splitter | None, str]:
    """(a Splitter, "") when segment reuse is exact for this tokenizer, else (None, why not).

    `tokenizer` is a `tokenizers.Tokenizer` (truncation and padding off); `spec` its
    tokenizer.json content."""
    reason = _structural_reason(spec, bool(getattr(tokenizer, "encode_special_tokens", False)))
    if reason:
        return None, reason
    cut = [t for t in _added_tokens(tokenizer, spec) if not t["normalized"]]
    bad = [t["content"] for t in cut if t.get("lstrip") or t.get("rstrip") or t.get("single_word")]
    if bad:
        return None, f"added token(s) {', '.join(map(repr, bad[:3]))} have lstrip/rstrip/single_word"
    if not cut:
        return None, "the tokenizer has no added tokens to cut the text at"
    contents = sorted({t["content"] for t in cut}, key=lambda s: (-len(s), s))
    pattern = re.compile("(" + token_pattern(contents) + ")")
    ids: dict[str, np.ndarray] = {}
    offsets: dict[str, np.ndarray] = {}
    # Single `encode` calls here and in the probe, never `encode_batch`: once a process has used
    # the library's thread pool, processes forked from it (the build's workers) tokenise on one
    # thread only.
    for token in contents:
        enc = tokenizer.encode(token, add_special_tokens=False)
        if len(enc.ids) != 1:
            return None, f"added token {token!r} does not encode as one token"
        ids[token] = np.asarray(enc.ids, dtype=np.int32)
        offsets[token] = np.asarray(enc.offsets, dtype=np.int32).reshape(1, 2)
    splitter = Splitter(pattern, ids, offsets)
    mismatch = _probe(tokenizer, splitter, contents)
    if mismatch:
        return None, mismatch
    return splitter, ""


def _added_tokens(tokenizer: Any, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The tokenizer's added tokens with their flags, as the loaded tokenizer has them (the file's
    entries where the library cannot say)."""
    keys = ("content", "normalized", "special", "lstrip", "rstrip", "single_word")
    decoder = getattr(tokenizer, "get_added_tokens_decoder", None)
    if decoder is not None:
        tokens = [{k: getattr(t, k) for k in keys} for _, t in sorted(decoder().items())]
    else:
        tokens = [{k: t.get(k, False) for k in keys} for t in spec.get("added_tokens") or [] if isinstance(t, dict)]
    return [t for t in tokens if t["content"]]


def token_pattern(tokens: Sequence[str]) -> str:
    """A regex matching any of `tokens`, leftmost-longest like the tokenizer's Aho-Corasick scan.

    Built as a trie (`<(?:\\|im_(?:end\\|>|start\\|>)|s>)`), so scanning costs about the same
    with thousands of added tokens (Gemma, Llama-3's reserved ones) as with a few: a plain
    alternation would try every token at every candidate position. Where a token is a prefix
    of another, the longer continuation is an optional greedy group, so it wins when present."""
    trie: dict[str, Any] = {}
    for token in tokens:
        node = trie
        for ch in token:
            node = node.setdefault(ch, {})
        node[""] = {}  # a token ends here

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


def probe_texts(tokens: Sequence[str]) -> list[str]:
    """Texts that put every probe piece before, between and after added tokens (adjacent ones too)."""
    tokens = list(tokens)
    if len(tokens) > _PROBE_TOKENS:  # the longest and the shortest (sorted longest first by the caller)
        half = _PROBE_TOKENS // 2
        tokens = tokens[:half] + tokens[-half:]
    texts = []
    for i, tok in enumerate(tokens):
        other = tokens[(i + 1) % len(tokens)]
        for j, piece in enumerate(_PROBE_PIECES):
            nxt = _PROBE_PIECES[(j + 1) % len(_PROBE_PIECES)]
            texts.append(piece + tok + nxt)
            texts.append(tok + piece + other + other + nxt + tok)
    texts.append("".join(p + t for p, t in zip(_PROBE_PIECES * len(tokens), tokens * len(_PROBE_PIECES))))
    return texts


def _probe(tokenizer: Any, splitter: Splitter, tokens: Sequence[str]) -> str | None:
    def encode(batch: list[str]) -> list[Any]:
        return [tokenizer.encode(text, add_special_tokens=False) for text in batch]  # (see plan_segments)

    texts = probe_texts(tokens)
    whole = encode_whole(library_encoder(encode), texts)
    pieces = encode_segmented(library_encoder(encode), texts, splitter, SegmentCache())
    if not (np.array_equal(whole.splits, pieces.splits) and np.array_equal(whole.ids, pieces.ids)
            and np.array_equal(whole.offsets, pieces.offsets)):
        for i, text in enumerate(texts):
            a, b = slice(whole.splits[i], whole.splits[i + 1]), slice(pieces.splits[i], pieces.splits[i + 1])
            if not (np.array_equal(whole.ids[a], pieces.ids[b]) and np.array_equal(whole.offsets[a], pieces.offsets[b])):
                return f"piece-wise tokenisation differs from whole-text tokenisation on the probe {text!r}"
        return "piece-wise tokenisation differs from whole-text tokenisation on a probe"
    return None
