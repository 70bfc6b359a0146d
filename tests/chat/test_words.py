"""Word-by-word tokenisation of ASCII text (dsc.chat.words) gives exactly the library's ids.

Three pre-tokenizer shapes (GPT-2's ByteLevel regex, Llama-3's and Qwen2's isolating Split before
a regex-free ByteLevel, and a Split that leaves gaps), hypothesis texts over all of ASCII (control
characters included) mixed with non-ASCII ones, a cache small enough to be cleared mid-batch;
the refusals; and a probe that catches a regex that cuts words differently. Whole rows through
RowTokenizer on every built-in template are in test_tokenize_reuse.py (its `reusing` fixture
runs the word cache)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_tokenize_reuse import _edit_tokenizer, byte_level_bpe, train_byte_level

from dsc.chat import words as words_mod
from dsc.chat.segments import library_encoder
from dsc.chat.tokenize import RowTokenizer
from dsc.chat.words import GPT2_PATTERN, WordEncoder, ascii_pattern, plan_words

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def split_then_byte_level(d: Path, pattern: str) -> Path:
    """Llama-3 / Qwen2 shape: Split(regex, isolated) then ByteLevel(use_regex=false)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return train_byte_level(tok, d)


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("words-toks")
    return {
        "gpt2": byte_level_bpe(root / "gpt2"),
        "llama3": split_then_byte_level(root / "llama3", LLAMA3_PATTERN),
        "qwen2": split_then_byte_level(root / "qwen2", QWEN2_PATTERN),
        "gaps": split_then_byte_level(root / "gaps", r"[a-z]+|\d"),  # leaves everything else as gaps
    }


def _load(d: Path, cut_elsewhere: bool = True):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    return tok, plan_words(tok, json.loads((d / "tokenizer.json").read_text()), cut_elsewhere=cut_elsewhere)


@pytest.fixture(scope="module")
def planned(tok_dirs) -> dict[str, tuple]:
    """Planned for texts nobody cut at the added tokens (hypothesis spells them: `<s>`)."""
    return {k: _load(d, cut_elsewhere=False) for k, d in tok_dirs.items()}


def _library(tok):
    return library_encoder(lambda texts: tok.encode_batch(texts, add_special_tokens=False), with_offsets=False)


def _assert_library_ids(tok, encoder: WordEncoder, texts: list[str]) -> None:
    library = _library(tok)
    ids, offsets, splits = encoder.encode(texts, library)
    want_ids, _, want_splits = library(texts)
    assert offsets is None
    for k, text in enumerate(texts):  # (per text, for a readable failure)
        assert ids[splits[k]:splits[k + 1]].tolist() == want_ids[want_splits[k]:want_splits[k + 1]].tolist(), text
    assert np.array_equal(splits, want_splits) and ids.dtype == np.int32


def test_ascii_rewrites_of_the_usual_patterns():
    gpt2, _ = ascii_pattern(GPT2_PATTERN)
    assert gpt2 == r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"""
    llama, _ = ascii_pattern(LLAMA3_PATTERN)
    assert r"[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]{1,3}" in llama
    assert ascii_pattern(r"\P{L}+|[]\p{N}]")[0] == r"[^A-Za-z]+|[]0-9]"
    assert ascii_pattern(r"\pL\pN")[0] == "[A-Za-z][0-9]"
    assert ascii_pattern(r"\\p{L}")[0] == r"\\p{L}"  # an escaped backslash, not a property
    for bad, why in ((r"\p{Lu}+", "no ASCII rewrite"), (r"[^\P{L}]", "negated property"),
                     (r"[a-z&&[^aeiou]]", "nested"), (r"[a-z", "unterminated"), ("a\\", "backslash")):
        assert ascii_pattern(bad)[0] is None and why in ascii_pattern(bad)[1], bad


def test_planned_for_the_three_shapes(planned):
    for kind, (_, (encoder, why)) in planned.items():
        assert encoder is not None, (kind, why)
    gaps = planned["gaps"][1][0]
    assert gaps.words("ab, c1!") == ["ab", ", ", "c", "1", "!"]  # matches and the gaps between them


_ASCII_ATOMS = ["'s", "'S", "'ll", "'", " the", "Thought:", "  ", "\r\n", "\n\n ", "123456", " 7", "{\"a\": [1]}",
                "\\n", "..."]
_ASCII = st.lists(st.one_of(st.text(st.characters(max_codepoint=127), max_size=6), st.sampled_from(_ASCII_ATOMS)),
                  max_size=10).map("".join)
_ANY = st.one_of(_ASCII, _ASCII, st.text(max_size=12))  # a third may hold non-ASCII: the library's


@pytest.mark.parametrize("kind", ["gpt2", "llama3", "qwen2", "gaps"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_ANY, min_size=1, max_size=8))
@example(texts=["<s>", "a<|im_start|>b c", "x  \n\n y"])
def test_equals_the_library(kind, texts, planned):
    tok, (encoder, _) = planned[kind]
    _assert_library_ids(tok, encoder, texts)
    _assert_library_ids(tok, encoder, texts)  # warm cache


def test_a_full_cache_is_cleared_and_stays_exact(planned):
    tok, (encoder, _) = planned["gpt2"]
    small = WordEncoder(encoder.patterns, encoder.model, None, max_words=3)
    texts = ["alpha beta gamma delta", "epsilon alpha 42 beta", "zeta eta theta"] * 3
    _assert_library_ids(tok, small, texts)
    assert len(small._cache) <= 3 and small.stats.misses > 6


def test_texts_it_cannot_do_go_to_the_library(planned, tok_dirs):
    tok, (encoder, _) = planned["gpt2"]
    fresh = WordEncoder(encoder.patterns, encoder.model, encoder.inline_tokens)
    _assert_library_ids(tok, fresh, ["plain text", "héllo", "more plain text"])
    assert fresh.stats.texts == 3 and fresh.stats.library_texts == 1
    # without a caller cutting at the added tokens, a text holding one goes to the library
    tok2, (uncut, _) = _load(tok_dirs["gpt2"], cut_elsewhere=False)
    texts = ["<|im_start|>user\nhi<|im_end|>", "no tokens here"]
    _assert_library_ids(tok2, uncut, texts)
    assert uncut.stats.library_texts == 1


def test_normalised_added_tokens_send_their_texts_to_the_library(tmp_path, tok_dirs):
    def add_normalised(d):
        d["added_tokens"].append({"id": 699, "content": "Action", "single_word": False, "lstrip": False,
                                  "rstrip": False, "normalized": True, "special": False})

    d = _edit_tokenizer(tok_dirs["gpt2"], tmp_path / "n", add_normalised)
    tok, (encoder, why) = _load(d)
    assert encoder is not None, why
    texts = ["Thought: x\nAction: y", "Thought: x"]
    _assert_library_ids(tok, encoder, texts)
    assert encoder.stats.library_texts == 1


def test_refused_where_words_are_not_the_library_s(tmp_path, tok_dirs):
    def normaliser(d):
        d["normalizer"] = {"type": "Lowercase"}

    def prefix_space(d):
        d["pre_tokenizer"]["add_prefix_space"] = True

    def metaspace(d):
        d["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}

    def dropout(d):
        d["model"]["dropout"] = 0.1

    def inverted(d):
        d["pre_tokenizer"]["pretokenizers"][0]["invert"] = True

    def merged(d):
        d["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "MergedWithPrevious"

    def unicode_class(d):
        d["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": r"\p{Lu}+|\s+|."}

    def empty_match(d):
        d["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": r"\d*"}

    def capturing(d):
        d["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": r"(a)|b+"}

    cases = [("gpt2", normaliser, "normaliser"), ("gpt2", prefix_space, "add_prefix_space"),
             ("gpt2", metaspace, "'Metaspace'"), ("gpt2", dropout, "dropout"),
             ("llama3", inverted, "Isolated"), ("llama3", merged, "Isolated"),
             ("llama3", unicode_class, r"\p{Lu}"), ("llama3", empty_match, "empty string"),
             ("llama3", capturing, "capturing groups")]
    for k, (kind, edit, why) in enumerate(cases):
        d = _edit_tokenizer(tok_dirs[kind], tmp_path / str(k), edit)
        tok, (encoder, reason) = _load(d)
        assert encoder is None and why in reason, (edit.__name__, reason)


def test_probe_catches_a_regex_that_cuts_differently(tok_dirs, monkeypatch):
    # GPT-2's regex without its whitespace lookahead: "a  b" becomes "a", "  ", "b" instead of "a", " ", " b"
    monkeypatch.setattr(words_mod, "GPT2_PATTERN", GPT2_PATTERN.replace(r"\s+(?!\S)|", ""))
    _, (encoder, reason) = _load(tok_dirs["gpt2"])
    assert encoder is None and "differs from the library on the probe" in reason


def test_row_tokenizer_names_the_word_cache(tok_dirs, tmp_path):
    on = RowTokenizer.load(str(tok_dirs["llama3"]), Path("/"))
    assert on.fast_paths() == "segment reuse on; offsets from ids; word cache on"
    off = RowTokenizer.load(str(tok_dirs["llama3"]), Path("/"), word_cache=False)
    assert off.fast_paths().endswith("word cache off (word cache switched off)")
    lib_offsets = RowTokenizer.load(str(tok_dirs["llama3"]), Path("/"), byte_offsets=False)
    assert lib_offsets.fast_paths().endswith("word cache off (needs offsets from ids)")
    assert re.search(r"word cache on$", RowTokenizer.load(str(tok_dirs["gpt2"]), Path("/")).fast_paths())
