"""Segment reuse gives exactly the tokens of whole-text tokenisation (dsc.chat.segments).

Every built-in template on real FireAct rows, with a tokenizer whose added special tokens are
those templates' control tokens; hypothesis texts around special tokens on several kinds of
tokenizer; the conservative fallbacks; the bounded cache; the array hand-over.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_templates import fireact_gpt, make_conv  # noqa: F401 (a fixture)

from dsc.record import BadRow
from dsc.chat.render import Rendered, render
from dsc.spec.sections import LossPolicy
from dsc.chat.segments import SegmentCache, encode_segmented, encode_whole, library_encoder, plan_segments
from dsc.chat.templating import BUILTIN_TEMPLATES, load_template
from dsc.chat.tokenize import IGNORE_INDEX, RowTokenizer
from dsc.spec.sections import TokenizeSpec

HERE = Path(__file__).resolve().parents[1]

SYSTEM = ("Solve a question answering task with interleaving Thought, Action, Observation steps. Thought can "
          "reason about the current situation, and Action can be three types: (1) search[entity] (2) "
          "lookup[keyword] (3) finish[answer].")


def _specials() -> list[str]:
    found = {"<unk>"}
    for name in BUILTIN_TEMPLATES:
        found.update(load_template(name, HERE).special_tokens)
    return sorted(found)


SPECIALS = _specials()


def _training_text() -> list[str]:
    from tiny import corpus

    return corpus(600) + [SYSTEM, "Question: who was born in the city? Observation: Episode finished, reward = True",
                          "héllo wörld ✓ 日本 😀 \t tabs  and   spaces\n\n"]


def _save(tok, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    return d


def train_byte_level(tok, d: Path, specials: list[str] = SPECIALS) -> Path:
    """Train `tok` (a BPE whose pre-tokenizer ends in ByteLevel) on the test text, save it in `d`."""
    from tokenizers import decoders, pre_tokenizers, trainers

    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_text(), trainer=trainer)
    return _save(tok, d)


def byte_level_bpe(d: Path, specials: list[str] = SPECIALS) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return train_byte_level(tok, d, specials)


def sentencepiece_like(d: Path, scheme: str = "always") -> Path:
    """Llama-style: Metaspace pre-tokenizer, byte fallback (normaliser-free)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=[f"<0x{i:02X}>" for i in range(256)])
    tok.train_from_iterator(_training_text(), trainer=trainer)
    return _save(tok, d)


def prepend_normalizer(d: Path) -> Path:
    """Llama-2's fast tokenizer shape: normaliser Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer."""
    from tokenizers import Regex, Tokenizer, models, normalizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(Regex(" "), "▁")])
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=[f"<0x{i:02X}>" for i in range(256)])
    tok.train_from_iterator(_training_text(), trainer=trainer)
    return _save(tok, d)


def wordpiece_bert(d: Path) -> Path:
    """Tokens that do not tile the text (whitespace dropped, lowercased, accents stripped)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(_training_text(), trainer=trainer)
    return _save(tok, d)


@pytest.fixture(scope="module")
def tok_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reuse-toks")
    return {
        "byte-level": byte_level_bpe(root / "bl"),
        "metaspace": sentencepiece_like(root / "ms"),
        "prepend": prepend_normalizer(root / "pp"),
        "wordpiece": wordpiece_bert(root / "wp"),
    }


@pytest.fixture(scope="module")
def reusing(tok_dirs) -> dict[str, RowTokenizer]:
    """One tokenizer per kind for the whole module, so later tests meet a warm cache."""
    return {k: RowTokenizer.load(str(d), Path("/")) for k, d in tok_dirs.items()}


@pytest.fixture(scope="module")
def reusing_library_ids(tok_dirs) -> dict[str, RowTokenizer]:
    """Segment reuse with the library's ids for every piece (no word cache)."""
    return {k: RowTokenizer.load(str(d), Path("/"), word_cache=False) for k, d in tok_dirs.items()}


@pytest.fixture(scope="module")
def whole(tok_dirs) -> dict[str, RowTokenizer]:
    """The reference: whole texts, the library's own offsets."""
    return {k: RowTokenizer.load(str(d), Path("/"), segment_reuse=False, byte_offsets=False)
            for k, d in tok_dirs.items()}


@pytest.fixture(scope="module")
def whole_bytes(tok_dirs) -> dict[str, RowTokenizer]:
    """Whole texts, offsets from ids where the tokenizer allows it (dsc.chat.token_bytes)."""
    return {k: RowTokenizer.load(str(d), Path("/"), segment_reuse=False) for k, d in tok_dirs.items()}


def _raw_ids(rt: RowTokenizer, texts: list[str]) -> list[list[int]]:
    """Whole-text ids straight from the `tokenizers` library, independent of dsc's code."""
    return [e.ids for e in rt._tok.encode_batch(texts, add_special_tokens=False)]


def _assert_same(a: RowTokenizer, b: RowTokenizer, rows: list[Rendered]) -> None:
    ea, eb = a.encode_arrays(rows), b.encode_arrays(rows)
    assert np.array_equal(ea.splits, eb.splits)
    assert np.array_equal(ea.input_ids, eb.input_ids)
    assert np.array_equal(ea.labels, eb.labels)
    raw = _raw_ids(b, [r.text for r in rows])
    assert [e.input_ids for e in a.encode_batch(rows)] == raw


# ---------------------------------------------------------------------------------------------
# Every built-in template on FireAct rows
# ---------------------------------------------------------------------------------------------


def _fireact_rows(fireact_gpt, template_name: str) -> list[Rendered]:
    tpl = load_template(template_name, HERE)
    rows = []
    for i, messages in enumerate(fireact_gpt[::6]):
        if i % 2 == 0:  # a repeated system prompt, the segment reuse is for
            messages = [{"role": "system", "content": SYSTEM}, *messages]
        try:
            rows.append(render(make_conv(messages), tpl, LossPolicy.assistant))
        except BadRow:
            continue  # a template that refuses a shape (e.g. llama-2 alternation)
    assert len(rows) > 100, f"{template_name} rendered too few FireAct rows"
    return rows


@pytest.mark.parametrize("template_name", BUILTIN_TEMPLATES)
def test_builtin_templates_reuse_is_exact(template_name, fireact_gpt, reusing, reusing_library_ids, whole,
                                         whole_bytes):
    a, b, c = reusing["byte-level"], whole["byte-level"], whole_bytes["byte-level"]
    d = reusing_library_ids["byte-level"]
    assert a._words is not None and d._words is None
    assert a.segment_reuse, a.reuse_reason
    assert a._byte_lengths is not None and c._byte_lengths is not None, a.byte_offsets_reason
    assert not b.segment_reuse and b._byte_lengths is None
    rows = _fireact_rows(fireact_gpt, template_name)
    tpl = load_template(template_name, HERE)
    assert a.split_special_tokens(tpl) == []  # the template's control tokens are the tokenizer's
    before = a.cache.stats.hits
    for _ in range(2):  # the second pass runs on a warm cache
        for i in range(0, len(rows), 64):
            _assert_same(a, b, rows[i:i + 64])
            _assert_same(c, b, rows[i:i + 64])
            _assert_same(d, b, rows[i:i + 64])
    assert a.cache.stats.hits > before
    assert a._words.stats.words > a._words.stats.misses > 0  # words were looked up, not just merged
    assert a.stats.byte_offset_fallbacks == c.stats.byte_offset_fallbacks == 0  # pieces were reused, not just re-tokenised
    assert sum(e.n_supervised for e in a.encode_batch(rows[:20])) > 0


def test_reuse_tokenises_each_repeated_piece_once(tmp_path, fireact_gpt):
    rt = RowTokenizer.load(str(byte_level_bpe(tmp_path / "t")), Path("/"))
    rows = _fireact_rows(fireact_gpt, "chatml")
    for i in range(0, len(rows), 32):
        rt.encode_arrays(rows[i:i + 32])
    s = rt.cache.stats
    # the system prompt and the role headers: tokenised in the first two batches only
    assert s.hits > 2 * (len(rows) // 32 - 2)
    assert s.encoded < s.pieces
    assert SYSTEM in {k.removeprefix("system\n") for k in rt.cache._entries}


# ---------------------------------------------------------------------------------------------
# Hypothesis: texts around special tokens, several tokenizer kinds
# ---------------------------------------------------------------------------------------------

_PIECE = st.lists(st.sampled_from(list("ab xyz\n\t.:[]'0123é✓日😀\u200b") + ["  ", "Thought", " the", "\r\n"]),
                  max_size=8).map("".join)
_PART = st.one_of(_PIECE, st.sampled_from(SPECIALS), st.sampled_from(["<|im", "|>", "<s", "[INST", "<<"]))
_TEXT = st.lists(_PART, max_size=12).map("".join)


@st.composite
def _rows(draw) -> list[Rendered]:
    out = []
    for text in draw(st.lists(_TEXT, min_size=1, max_size=6)):
        cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=4)))
        spans = [(a, b) for a, b in zip(cuts[0::2], cuts[1::2]) if b > a]
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        out.append(Rendered(text, merged))
    return out


@pytest.mark.parametrize("kind", ["byte-level", "metaspace", "prepend", "wordpiece"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows())
def test_texts_around_special_tokens(kind, rows, reusing, whole, whole_bytes):
    a, b = reusing[kind], whole[kind]
    assert a.segment_reuse, a.reuse_reason
    assert (a._byte_lengths is not None) == (kind == "byte-level"), a.byte_offsets_reason
    _assert_same(whole_bytes[kind], b, rows)
    _assert_same(a, b, rows + rows)  # every piece twice in one batch: kept in the cache
    hits = a.cache.stats.hits
    _assert_same(a, b, rows)  # ... so this batch is stitched from the cache
    assert a.cache.stats.hits > hits
    # offsets too (they decide the labels): straight from the segment functions
    texts = [r.text for r in rows]

    def enc(batch):
        return b._tok.encode_batch(batch, add_special_tokens=False)

    w = encode_whole(library_encoder(enc), texts)
    s = encode_segmented(library_encoder(enc), texts, a._splitter, a.cache)
    assert np.array_equal(w.offsets, s.offsets) and np.array_equal(w.ids, s.ids)


def test_empty_and_special_only_texts(reusing, whole):
    rows = [Rendered("", []), Rendered("<|im_start|><|im_end|>", [(0, 22)]), Rendered("<|im_start|>", []),
            Rendered(" <s>  </s> ", [(1, 4)]), Rendered("\n", [(0, 1)])]
    for kind in reusing:
        _assert_same(reusing[kind], whole[kind], rows)
    enc = reusing["byte-level"].encode_batch(rows)
    assert enc[0].input_ids == [] and len(enc[1].input_ids) == 2 and enc[1].labels == enc[1].input_ids


# ---------------------------------------------------------------------------------------------
# Conservative fallbacks
# ---------------------------------------------------------------------------------------------


def test_metaspace_first_falls_back(tmp_path):
    d = sentencepiece_like(tmp_path / "first", scheme="first")
    rt = RowTokenizer.load(str(d), Path("/"))
    assert not rt.segment_reuse and "prepend_scheme=first" in rt.reuse_reason
    # ... and really would differ: the piece after a special token gets no "▁" in the whole text
    text = "a<|im_start|>b c"
    whole_ids = _raw_ids(rt, [text])[0]
    splitter_like = [rt._tok.encode(p, add_special_tokens=False).ids for p in ("a", "<|im_start|>", "b c")]
    assert whole_ids != [i for ids in splitter_like for i in ids]
    assert rt.encode(Rendered(text, [(0, 1)])).input_ids == whole_ids


def _edit_tokenizer(src: Path, dst: Path, edit) -> Path:
    data = json.loads((src / "tokenizer.json").read_text())
    edit(data)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "tokenizer.json").write_text(json.dumps(data))
    return dst


def test_fallback_reasons(tmp_path, tok_dirs):
    src = tok_dirs["byte-level"]

    def lstrip(d):
        next(t for t in d["added_tokens"] if t["content"] == "<|im_end|>")["lstrip"] = True

    def unknown_pre(d):
        d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [d["pre_tokenizer"], {"type": "Mystery"}]}

    def dropout(d):
        d["model"]["dropout"] = 0.1

    def no_added(d):
        d["added_tokens"] = []

    cases = {"lstrip": (lstrip, "lstrip/rstrip/single_word"), "unknown": (unknown_pre, "'Mystery'"),
             "dropout": (dropout, "dropout"), "none": (no_added, "no added tokens")}
    for name, (edit, why) in cases.items():
        d = tmp_path / name
        try:
            rt = RowTokenizer.load(str(_edit_tokenizer(src, d, edit)), Path("/"))
        except Exception as e:  # noqa: BLE001 - the library may refuse an invented component
            assert name == "unknown", e
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(src / "tokenizer.json"))
            data = json.loads((d / "tokenizer.json").read_text())
            splitter, reason = plan_segments(tok, data)
            assert splitter is None and why in reason
            continue
        assert not rt.segment_reuse and why in rt.reuse_reason, (name, rt.reuse_reason)
        if name != "dropout":  # (random: two encodings differ whatever dsc does)
            row = Rendered("x <|im_end|> y<|im_start|>z", [(2, 14)])
            assert rt.encode(row).input_ids == _raw_ids(rt, [row.text])[0]


def test_probe_catches_a_splitter_that_cuts_where_the_tokenizer_does_not(tok_dirs):
    """The probe compares piece-wise with whole-text tokenisation: cutting at a plain word (which
    the byte-level pre-tokenizer joins with the space before it) is caught."""
    import re

    from tokenizers import Tokenizer

    from dsc.chat.segments import Splitter, _probe

    tok = Tokenizer.from_file(str(tok_dirs["byte-level"] / "tokenizer.json"))
    word = "Thought"
    enc = tok.encode(word, add_special_tokens=False)
    fake = Splitter(re.compile(f"({word})"), {word: np.asarray(enc.ids, np.int32)},
                    {word: np.asarray(enc.offsets, np.int64).reshape(-1, 2)})
    mismatch = _probe(tok, fake, [word])
    assert mismatch is not None and "differs" in mismatch
    real, reason = plan_segments(tok, json.loads(tok.to_str()))
    assert real is not None and reason == ""
    assert _probe(tok, real, SPECIALS) is None


def test_normalisers_run_per_piece(tok_dirs):
    from tokenizers import Tokenizer, normalizers

    tok = Tokenizer.from_file(str(tok_dirs["byte-level"] / "tokenizer.json"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    splitter, reason = plan_segments(tok, json.loads(tok.to_str()))
    assert splitter is not None, reason
    texts = ["A<|im_start|>B ﬁ C<|im_end|>\nD", "<s>ÅB</s></s>x"]

    def enc(batch):
        return tok.encode_batch(batch, add_special_tokens=False)

    w, s = encode_whole(library_encoder(enc), texts), encode_segmented(library_encoder(enc), texts, splitter,
                                                                       SegmentCache())
    assert np.array_equal(w.ids, s.ids) and np.array_equal(w.offsets, s.offsets)


# ---------------------------------------------------------------------------------------------
# The cache stays bounded; the arrays hand-over
# ---------------------------------------------------------------------------------------------


def test_cache_is_bounded_and_still_exact(tok_dirs, whole):
    rt = RowTokenizer.load(str(tok_dirs["byte-level"]), Path("/"))
    rt.cache = SegmentCache(max_tokens=400, max_entries=20)
    rows = [Rendered(f"<|im_start|>system\n{SYSTEM} {i % 30}<|im_end|>\n<|im_start|>user\nq {i}<|im_end|>", [(0, 5)])
            for i in range(300)]
    for i in range(0, len(rows), 7):
        _assert_same(rt, whole["byte-level"], rows[i:i + 7])
        assert len(rt.cache) <= 20 and rt.cache.tokens <= 400
    s = rt.cache.stats
    assert s.evicted > 0 and s.hits > 0 and s.admitted > 0


def test_huge_piece_is_not_cached(tok_dirs):
    rt = RowTokenizer.load(str(tok_dirs["byte-level"]), Path("/"))
    rt.cache = SegmentCache(max_tokens=800, max_entries=20)
    big = Rendered("<|im_start|>" + "the answer " * 200 + "<|im_end|>", [(12, 30)])
    for _ in range(3):
        rt.encode(big)
    assert rt.cache.tokens <= 800 and all(len(k) < 1000 for k in rt.cache._entries)


def test_arrays_match_rows_and_arrow(tok_dirs):
    import pyarrow as pa

    spec = TokenizeSpec(tokenizer=str(tok_dirs["byte-level"]), max_length=12, overflow="drop")
    rows = [Rendered("<|im_start|>user\nhi<|im_end|>", [(17, 19)]),
            Rendered("<|im_start|>user\n" + "the question " * 10 + "<|im_end|>", [(17, 40)]),
            Rendered("<|im_start|>assistant\nyes<|im_end|>", [(22, 35)])]
    for overflow in ("drop", "truncate"):
        rt = RowTokenizer.load(spec.model_copy(update={"overflow": overflow}), Path("/"))
        batch = rt.encode_arrays(rows)
        listed = rt.encode_batch(rows)
        assert [e is None for e in listed] == batch.dropped.tolist() == [False, overflow == "drop", False]
        kept = [e for e in listed if e is not None]
        ids, labels = batch.arrow_columns()
        assert ids.type == pa.list_(pa.int32()) and labels.type == pa.list_(pa.int32())
        assert ids.to_pylist() == [e.input_ids for e in kept]
        assert labels.to_pylist() == [e.labels for e in kept]
        assert batch.n_supervised.tolist() == [
            0 if e is None else sum(1 for t in e.labels if t != IGNORE_INDEX) for e in listed]
        assert [e.n_supervised for e in kept] == [sum(1 for t in e.labels if t != IGNORE_INDEX) for e in kept]
        if overflow == "truncate":
            assert batch.truncated.tolist() == [False, True, False] and len(listed[1].input_ids) == 12


def _leftmost_longest(text: str, tokens: list[str]) -> list[str]:
    """The reference: at each position the longest token that starts there, else move on."""
    out, piece, i = [], "", 0
    while i < len(text):
        hit = max((t for t in tokens if text.startswith(t, i)), key=len, default=None)
        if hit is None:
            piece += text[i]
            i += 1
            continue
        out += [piece, hit]
        piece, i = "", i + len(hit)
    return out + [piece]


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.text(alphabet="ab<|>", min_size=1, max_size=4), min_size=1, max_size=6, unique=True),
       text=st.text(alphabet="ab<|>x", max_size=30))
def test_token_pattern_is_leftmost_longest(tokens, text):
    import re

    from dsc.chat.segments import token_pattern

    assert re.compile("(" + token_pattern(tokens) + ")").split(text) == _leftmost_longest(text, tokens)


def test_empty_batch(reusing):
    assert reusing["byte-level"].encode_batch([]) == []
    assert len(reusing["byte-level"].encode_arrays([])) == 0


def test_arrow_columns_scattered_and_overflow_error_marked(tok_dirs):
    import pyarrow as pa

    rows = [Rendered("<|im_start|>user\nhi<|im_end|>", [(17, 19)]),
            Rendered("<|im_start|>user\n" + "the question " * 10 + "<|im_end|>", [(17, 40)]),
            Rendered("<|im_start|>assistant\nyes<|im_end|>", [(22, 35)])]
    spec = TokenizeSpec(tokenizer=str(tok_dirs["byte-level"]), max_length=12, overflow="error")
    rt = RowTokenizer.load(spec, Path("/"))
    batch = rt.encode_arrays(rows, raise_too_long=False)
    full = RowTokenizer.load(str(tok_dirs["byte-level"]), Path("/")).encode_batch(rows)
    assert batch.too_long.tolist() == batch.dropped.tolist() == [False, True, False]
    assert batch.n_tokens.tolist() == [len(e.input_ids) for e in full]
    # render batch of 6 rows where rows 0, 2, 5 were rendered (the others failed earlier)
    ids, labels = batch.arrow_columns(at=np.array([0, 2, 5]), length=6)
    assert ids.type == pa.list_(pa.int32()) and len(ids) == 6
    assert ids.to_pylist() == [full[0].input_ids, None, None, None, None, full[2].input_ids]
    assert labels.to_pylist() == [full[0].labels, None, None, None, None, full[2].labels]
    for bad in (np.array([0, 0, 5]), np.array([0, 2]), np.array([0, 2, 6])):
        with pytest.raises(ValueError):
            batch.arrow_columns(at=bad, length=6)
    with pytest.raises(Exception) as e:
        rt.encode_arrays(rows)
    assert type(e.value).__name__ == "RowTooLong" and e.value.index == 1


def test_loading_leaves_forked_workers_their_thread_pool(tok_dirs):
    """Loading (the probe) must not use the library's thread pool: processes forked after it
    (the build's workers) would then tokenise on one thread only."""
    import os
    import subprocess
    import sys

    code = (
        "import os\n"
        "from pathlib import Path\n"
        "from dsc.chat.tokenize import RowTokenizer\n"
        f"rt = RowTokenizer.load({str(tok_dirs['byte-level'])!r}, Path('/'))\n"
        "assert rt.segment_reuse\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    rt._tok.encode_batch(['hello world ' * 50] * 500, add_special_tokens=False)\n"
        "    os._exit(0 if len(os.listdir('/proc/self/task')) > 1 else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "raise SystemExit(os.waitstatus_to_exitcode(status))\n"
    )
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs /proc")
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", code], env=env, timeout=120, capture_output=True, text=True)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])


def test_fast_paths_name_what_runs_and_why_not(reusing, whole):
    assert reusing["byte-level"].fast_paths() == "segment reuse on; offsets from ids; word cache on"
    ms = reusing["metaspace"].fast_paths()
    assert ms.startswith("segment reuse on; offsets from the library (") and "byte-level" in ms
    assert whole["byte-level"].fast_paths() == ("segment reuse off (segment reuse switched off); "
                                                "offsets from the library (offsets from ids switched off); "
                                                "word cache off (needs offsets from ids)")
