"""Byte-level BPE word by word in Python, with a word cache, for ASCII text.

A byte-level BPE tokenizer (GPT-2, Llama-3, Qwen2, the bench's) tokenises a piece of text between
added tokens in three steps: its pre-tokenizer cuts the piece into words with a regex, maps each
word's bytes to the byte-level alphabet, and the BPE model merges each word on its own — no
merge crosses a word. So the ids of a piece are the ids of its words laid end to end, and a word
seen before can be looked up. Words repeat far more than whole pieces do (a corpus of millions
of rows has a vocabulary of words in the hundred thousands), and `re` plus dict lookups cost about
a fifth of the CPU the library spends per text (its Unicode regex on onig, building Encodings);
the library's own word cache does not save that.

Exact only where Python's `re` cuts words as the library's regex does. For ASCII text that is
guaranteed by rewriting the pattern's Unicode classes to their ASCII members (`\\p{L}` →
`A-Za-z`, `\\p{N}` → `0-9`) and compiling with `re.ASCII`, whose `\\s` is `[ \\t\\n\\r\\f\\v]`, the ASCII
members of Unicode White_Space that onig's `\\s` matches. A text with any non-ASCII character,
or one holding an added token that the caller did not cut out, goes to the library instead.

`plan_words` allows this only for tokenizers whose whole pipeline is that (no normaliser; the
pre-tokenizer ByteLevel without a prefix space, alone or after isolating Splits; a BPE model
without dropout), and probes it at load time against the library on ASCII texts built to hit
every branch of the usual patterns (contractions, digit runs, whitespace before letters or at
the end, control characters). The word's BPE is the library's own model (`model.tokenize`), so
merges, `ignore_merges` and unknown tokens are never re-implemented here.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsc.chat.segments import FlatEncodeFn, components, library_encoder, ranges_index, token_pattern

# The regex of `pre_tokenizers.ByteLevel(use_regex=True)` (tokenizers' byte_level.rs).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Unicode properties whose ASCII members are known: inside a class, outside one.
_ASCII_PROPERTIES = {"L": ("A-Za-z", "[A-Za-z]"), "N": ("0-9", "[0-9]")}

def ascii_pattern(pattern: str) -> tuple[str | None, str]:
    """(`pattern` rewritten for `re.ASCII`, "") or (None, why it cannot be).

    Only `\\p{L}` and `\\p{N}` (and `\\pL`, `\\pN`; negated outside classes) are rewritten; any other
    Unicode property, or a nested class (onig's `[a[b]]`, `&&`), is refused."""
    out: list[str] = []
    in_class = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                return None, "the pattern ends in a backslash"
            e = pattern[i + 1]
            if e in "pP":
                if pattern.startswith("{", i + 2):
                    end = pattern.find("}", i + 3)
                    if end < 0:
                        return None, "an unterminated \\p{...}"
                    name, i = pattern[i + 3:end], end + 1
                else:
                    name, i = pattern[i + 2:i + 3], i + 3
                if name not in _ASCII_PROPERTIES:
                    return None, f"the Unicode property \\{e}{{{name}}} has no ASCII rewrite here"
                inside, outside = _ASCII_PROPERTIES[name]
                if e == "P":
                    if in_class:
                        return None, f"a negated property \\P{{{name}}} inside a character class"
                    out.append(f"[^{inside}]")
                else:
                    out.append(inside if in_class else outside)
                continue
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "[" or pattern.startswith("&&", i):
                return None, "a nested character class or class intersection (onig syntax)"
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            # a leading ']' (or '^]') is a literal member, not the class's end
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):
                out.append("]")
                i += 1
            continue
        out.append(c)
        i += 1
    if in_class:
        return None, "an unterminated character class"
    return "".join(out), ""


def _word_patterns(spec: dict[str, Any]) -> tuple[list[re.Pattern[str]] | None, str]:
    """The pre-tokenizer as a list of word regexes applied in turn, or (None, why not)."""
    pre = spec.get("pre_tokenizer")
    if not isinstance(pre, dict):
        return None, "the tokenizer has no pre-tokenizer"
    steps = [p for p in components(pre) if p.get("type") != "Sequence"]
    patterns: list[str] = []
    byte_level = 0
    for part in steps:
        kind = part.get("type")
        if kind == "ByteLevel":
            byte_level += 1
            if part.get("add_prefix_space"):
                return None, "pre_tokenizer ByteLevel(add_prefix_space=true)"
            if part.get("use_regex", True):
                patterns.append(GPT2_PATTERN)
        elif kind == "Split":
            if part.get("invert") or str(part.get("behavior", "")).lower() != "isolated":
                return None, "pre_tokenizer Split other than behavior=Isolated, invert=false"
            raw = part.get("pattern") or {}
            if "Regex" in raw:
                patterns.append(str(raw["Regex"]))
            elif "String" in raw:
                patterns.append(re.escape(str(raw["String"])))
            else:
                return None, "pre_tokenizer Split without a pattern"
        else:
            return None, f"pre_tokenizer type {kind!r} is not a word regex"
    if byte_level != 1 or steps[-1].get("type") != "ByteLevel":
        return None, "the pre-tokenizer does not end in one ByteLevel"
    compiled = []
    for raw in patterns:
        rewritten, why = ascii_pattern(raw)
        if rewritten is None:
            return None, f"pre-tokenizer regex {raw!r}: {why}"
        try:
            pat = re.compile(rewritten, re.ASCII)
        except re.error as e:
            return None, f"pre-tokenizer regex {raw!r} is not Python regex syntax ({e})"
        if pat.groups:
            return None, f"pre-tokenizer regex {raw!r} has capturing groups"
        if pat.search("") is not None:
            return None, f"pre-tokenizer regex {raw!r} can match the empty string"
        compiled.append(pat)
    return compiled, ""


def _structural_reason(spec: dict[str, Any]) -> str | None:
    if spec.get("normalizer"):
        return "the tokenizer has a normaliser"
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return "the model is not BPE"
    if model.get("dropout"):
        return "BPE dropout makes tokenisation random"
    return None


def _byte_level_table() -> dict[int, str]:
    """ASCII code point → its character in the byte-level alphabet, as the library maps it."""
    from tokenizers import pre_tokenizers

    mapping = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return {b: mapping.pre_tokenize_str(chr(b))[0][0] for b in range(128)}


@dataclass
class WordStats:
    texts: int = 0
    library_texts: int = 0  # non-ASCII, or holding an added token: tokenised by the library
    words: int = 0
    misses: int = 0  # words merged by the model (not in the cache)


@dataclass
class WordEncoder:
    """Ids of ASCII texts word by word, through a bounded per-process word cache."""

    patterns: list[re.Pattern[str]]
    model: Any  # the tokenizer's `tokenizers.models.BPE`
    inline_tokens: re.Pattern[str] | None  # added tokens a text may still hold: such a text goes to the library
    # Cleared when full: ≈ 220 bytes an entry, so ≈ 22 MB per process. 20k bench conversations
    # hold 60k distinct words; which words are cached only changes speed.
    max_words: int = 100_000
    stats: WordStats = field(default_factory=WordStats)
    _cache: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    _table: dict[int, str] = field(default_factory=_byte_level_table, repr=False)

    def words(self, text: str) -> list[str]:
        """The pre-tokenizer's words of an ASCII text (every match and every gap between matches)."""
        words = [text]
        for pat in self.patterns:
            found = list(itertools.chain.from_iterable(map(pat.findall, words)))
            if sum(map(len, found)) != len(text):  # the regex skipped some text: gaps are words too
                found = list(itertools.chain.from_iterable(_isolated(pat, w) for w in words))
            words = found
        return words

    def _merge(self, word: str) -> tuple[int, ...]:
        ids = tuple(t.id for t in self.model.tokenize(word.translate(self._table)))
        if len(self._cache) >= self.max_words:
            self._cache.clear()
        self._cache[word] = ids
        self.stats.misses += 1
        return ids

    def encode(self, texts: list[str], library: FlatEncodeFn) -> tuple[np.ndarray, None, np.ndarray]:
        """(ids int32, None, splits int64) of `texts` — a FlatEncodeFn asked for ids only; `library`
        (ids only too) tokenises the texts this cannot."""
        get = self._cache.get
        chunks: list[list[tuple[int, ...]]] = []
        to_library: list[int] = []
        inline = self.inline_tokens
        n_words = 0
        for i, text in enumerate(texts):
            if not text.isascii() or (inline is not None and inline.search(text)):
                to_library.append(i)
                chunks.append([])
                continue
            words = self.words(text)
            ids = list(map(get, words))
            if None in ids:
                for k, v in enumerate(ids):
                    if v is None:  # (looked up again: the word may be earlier in this text)
                        v = get(words[k])
                        ids[k] = v if v is not None else self._merge(words[k])
            n_words += len(words)
            chunks.append(ids)  # type: ignore[arg-type]
        counts = np.fromiter((sum(map(len, c)) for c in chunks), dtype=np.int64, count=len(texts))
        ids_out = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(chunks)), dtype=np.int32,
                              count=int(counts.sum()))
        if to_library:  # stitched in as arrays: the library's ids never become Python ints
            lib_ids, _, lib_splits = library([texts[i] for i in to_library])
            at = np.asarray(to_library, dtype=np.int64)
            starts = np.cumsum(counts) - counts  # in the word ids (library texts hold none there)
            starts[at] = len(ids_out) + lib_splits[:-1]
            counts[at] = np.diff(lib_splits)
            ids_out = np.concatenate([ids_out, lib_ids.astype(np.int32)])[ranges_index(starts, counts)]
        splits = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(counts, out=splits[1:])
        self.stats.texts += len(texts)
        self.stats.library_texts += len(to_library)
        self.stats.words += n_words
        return ids_out, None, splits


def _isolated(pat: re.Pattern[str], text: str) -> list[str]:
    """`Split(behavior=Isolated)`: every match and every non-empty gap between matches, in order."""
    out, at = [], 0
    for m in pat.finditer(text):
        if m.start() > at:
            out.append(text[at:m.start()])
        out.append(m.group())
        at = m.end()
    if at < len(text):
        out.append(text[at:])
    return out


# Probe material: the branches of GPT-2's, Llama-3's and Qwen2's patterns in ASCII (contractions
# in both cases and not followed through, digit runs past three, whitespace before a word and at
# the end, \r\n runs, punctuation runs, control characters on either side of \s).
_PROBE_ATOMS = ("a", "Z", "hello", " world", "WORLD", "'s", "'S", "'t", "'re", "'RE", "'ve", "'m", "'ll", "'d", "'x",
                "'", "0", "12", "3456789", " 42", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\x0b", "\x0c",
                "\x1c", "\x1f", "\x00", "\x7f", ".", ",", "...", "[", "]", "{\"", "\":", "-", "_", "!?", " (", "$",
                "Thought:", " Action:", "search[", "x_y", "a1b2", "\\n")


def probe_texts(seed: int = 0, count: int = 400) -> list[str]:
    rng = random.Random(seed)
    texts = list(_PROBE_ATOMS) + ["".join(_PROBE_ATOMS)]
    for _ in range(count):
        texts.append("".join(rng.choice(_PROBE_ATOMS) for _ in range(rng.randint(1, 16))))
    return texts


def plan_words(tokenizer: Any, spec: dict[str, Any], *, cut_elsewhere: bool) -> tuple[WordEncoder | None, str]:
    """(a WordEncoder, "") when word-by-word tokenisation of ASCII text is exact for this
    tokenizer, else (None, why not). `cut_elsewhere`: the caller cuts the texts at the
    non-normalised added tokens itself (segment reuse), so only the normalised ones can remain.
    `tokenizer` is a `tokenizers.Tokenizer`, `spec` its tokenizer.json content."""
    reason = _structural_reason(spec)
    if reason:
        return None, reason
    patterns, reason = _word_patterns(spec)
    if patterns is None:
        return None, reason
    added = [t for t in tokenizer.get_added_tokens_decoder().values() if t.content]
    inline = sorted({t.content for t in added if t.normalized or not cut_elsewhere}, key=lambda s: (-len(s), s))
    encoder = WordEncoder(patterns, tokenizer.model, re.compile(token_pattern(inline)) if inline else None)
    mismatch = _probe(tokenizer, encoder)
    if mismatch:
        return None, mismatch
    encoder._cache.clear()  # (probe words: not worth their room)
    encoder.stats = WordStats()
    return encoder, ""


def _probe(tokenizer: Any, encoder: WordEncoder) -> str | None:
    """None when the encoder gives the library's ids on the probe texts (single `encode` calls:
    see segments.plan_segments on forked workers' thread pools)."""
    library = library_encoder(lambda texts: [tokenizer.encode(t, add_special_tokens=False) for t in texts],
                              with_offsets=False)
    texts = probe_texts()
    ids, _, splits = encoder.encode(texts, library)
    want_ids, _, want_splits = library(texts)
    if np.array_equal(ids, want_ids) and np.array_equal(splits, want_splits):
        return None
    for k, text in enumerate(texts):
        if not np.array_equal(ids[splits[k]:splits[k + 1]], want_ids[want_splits[k]:want_splits[k + 1]]):
            return f"word-by-word tokenisation differs from the library on the probe {text!r}"
    return "word-by-word tokenisation differs from the library on a probe"
