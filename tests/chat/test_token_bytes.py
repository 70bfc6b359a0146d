"""Offsets from token ids (dsc.chat.token_bytes): exact where allowed, refused elsewhere,
and a batch whose tokens do not spell its text falls back to the library's offsets.

The equality of labels with the library's offsets on every built-in template and on hypothesis
texts (non-ASCII included) is in test_tokenize_reuse.py (fixtures `whole` / `whole_bytes`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tokenize_reuse import _edit_tokenizer, byte_level_bpe, sentencepiece_like, wordpiece_bert

from dsc.chat.render import Rendered
from dsc.chat.token_bytes import byte_offsets, plan_byte_lengths, spans_to_bytes
from dsc.chat.tokenize import RowTokenizer


@pytest.fixture(scope="module")
def byte_level(tmp_path_factory) -> Path:
    return byte_level_bpe(tmp_path_factory.mktemp("tb") / "bl")


def _plan(d: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    return plan_byte_lengths(tok, json.loads((d / "tokenizer.json").read_text()))


def test_byte_level_bpe_is_allowed_and_lengths_spell_the_vocabulary(byte_level):
    lengths, reason = _plan(byte_level)
    assert lengths is not None, reason
    from tokenizers import Tokenizer

    # GPT-2's byte ↔ alphabet map (written out here, independent of the module's length rule)
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    byte_of = {chr(b): b for b in printable} | {chr(256 + k): b for k, b in enumerate(extra)}
    tok = Tokenizer.from_file(str(byte_level / "tokenizer.json"))
    added = tok.get_added_tokens_decoder()
    for token, i in tok.get_vocab(with_added_tokens=True).items():
        spelled = added[i].content.encode("utf-8") if i in added else bytes(byte_of[c] for c in token)
        assert lengths[i] == len(spelled), (i, token)


def test_refused_where_tokens_need_not_spell_the_text(tmp_path, byte_level):
    assert "byte-level" in _plan(sentencepiece_like(tmp_path / "ms"))[1]
    assert "normaliser" in _plan(wordpiece_bert(tmp_path / "wp"))[1]

    def trim(d):
        d["post_processor"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}

    def prefix_space(d):
        d["pre_tokenizer"]["add_prefix_space"] = True

    def lstrip(d):
        next(t for t in d["added_tokens"] if t["content"] == "<|im_end|>")["lstrip"] = True

    def removed(d):
        d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": "x"}, "behavior": "Removed", "invert": False}, d["pre_tokenizer"]]}

    for name, edit, why in [("trim", trim, "trim_offsets"), ("prefix", prefix_space, "add_prefix_space"),
                            ("lstrip", lstrip, "lstrip"), ("removed", removed, "Removed")]:
        d = _edit_tokenizer(byte_level, tmp_path / name, edit)
        lengths, reason = _plan(d)
        assert lengths is None and why in reason, (name, reason)
        rt = RowTokenizer.load(str(d), Path("/"))
        assert rt._byte_lengths is None and why in rt.byte_offsets_reason


def test_batch_whose_tokens_do_not_spell_the_text_falls_back(byte_level):
    """A wrong length table (as if the plan had missed something) is caught per batch."""
    good = RowTokenizer.load(str(byte_level), Path("/"), byte_offsets=False)
    rt = RowTokenizer.load(str(byte_level), Path("/"))
    rows = [Rendered("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nthe answer<|im_end|>", [(48, 70)])]
    first = rt._tok.encode("the answer", add_special_tokens=False).ids[0]
    rt._byte_lengths = rt._byte_lengths.copy()
    rt._byte_lengths[first] += 1
    got, want = rt.encode_arrays(rows), good.encode_arrays(rows)
    assert rt.stats.byte_offset_fallbacks == 1
    assert np.array_equal(got.input_ids, want.input_ids) and np.array_equal(got.labels, want.labels)
    assert (want.labels != -100).any()


def test_byte_offsets_restart_per_row_and_skip_empty_rows():
    lengths = np.array([1, 2, 3, 4])
    ids = np.array([1, 3, 0, 2, 2])
    splits = np.array([0, 2, 2, 5])  # rows: [1, 3], [], [0, 2, 2]
    assert byte_offsets(ids, splits, lengths).tolist() == [[0, 2], [2, 6], [0, 1], [1, 4], [4, 7]]
    assert byte_offsets(np.zeros(0, np.int64), np.array([0, 0]), lengths).shape == (0, 2)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=20), data=st.data())
def test_spans_to_bytes(text, data):
    a = data.draw(st.integers(0, len(text)))
    b = data.draw(st.integers(a, len(text)))
    [(x, y)] = spans_to_bytes(text, [(a, b)])
    raw = text.encode("utf-8")
    assert raw[:x].decode("utf-8") == text[:a] and raw[x:y].decode("utf-8") == text[a:b]
