"""Tokenisation: ids equal transformers' apply_chat_template, labels equal its assistant mask."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from test_templates import fireact_gpt, make_conv, tool_conversations  # noqa: F401 (a fixture)

from dsc.core.errors import BuildError
from dsc.record import BadRow
from dsc.chat.render import Rendered, render
from dsc.spec.sections import LossPolicy
from dsc.chat.templating import load_template
from dsc.chat.tokenize import IGNORE_INDEX, RowTokenizer, RowTooLong, supervised_mask
from dsc.spec.sections import TokenizeSpec

HERE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hf_tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def row_tok(tiny_tokenizer_dir):
    return RowTokenizer.load(str(tiny_tokenizer_dir), Path("/"))


def _chats(fireact_gpt):
    extra = [
        [{"role": "user", "content": "héllo wörld ✓ 日本"}, {"role": "assistant", "content": " leading space ✓"},
         {"role": "user", "content": "x"}, {"role": "assistant", "content": "trailing\n\n"}],
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}],
    ]
    return list(fireact_gpt[::16]) + extra


@pytest.mark.parametrize("ref", ["tokenizer", "chatml", "qwen2.5"])
def test_ids_and_labels_equal_transformers(ref, tiny_tokenizer_dir, hf_tok, row_tok, fireact_gpt):
    tpl = load_template(f"tokenizer:{tiny_tokenizer_dir}" if ref == "tokenizer" else ref, HERE)
    chats = _chats(fireact_gpt)
    rows = [render(make_conv(m), tpl, LossPolicy.assistant) for m in chats]
    encoded = row_tok.encode_batch(rows)
    total = 0
    for messages, enc in zip(chats, encoded):
        out = hf_tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
                                         chat_template=tpl.source)
        mask = out["assistant_masks"]
        assert sum(mask) > 0
        assert enc.input_ids == out["input_ids"]
        assert enc.labels == [t if m else IGNORE_INDEX for t, m in zip(out["input_ids"], mask)]
        assert not enc.truncated and enc.n_supervised == sum(mask)
        total += 1
    assert total == len(chats) and row_tok.stats.dropped_too_long == 0


def test_tool_conversations_tokenise(hf_tok, row_tok):
    tpl = load_template("qwen2.5", HERE)
    for messages, tools in tool_conversations():
        enc = row_tok.encode(render(make_conv(messages, tools), tpl, LossPolicy.assistant))
        out = hf_tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                         return_assistant_tokens_mask=True, chat_template=tpl.source)
        assert enc.input_ids == out["input_ids"]
        assert enc.labels == [t if m else IGNORE_INDEX for t, m in zip(out["input_ids"], out["assistant_masks"])]


def test_special_tokens_are_single_ids(row_tok):
    ids = row_tok.encode(Rendered("<|im_start|>user\nhi<|im_end|>", [(0, 1)])).input_ids
    assert ids[0] == row_tok.token_to_id("<|im_start|>") and ids[-1] == row_tok.token_to_id("<|im_end|>")
    assert row_tok.split_special_tokens(load_template("chatml", HERE)) == ["<|endoftext|>"]
    assert "<|eot_id|>" in row_tok.split_special_tokens(load_template("llama-3", HERE))


def test_all_policy_labels_everything(row_tok):
    r = render(make_conv([{"role": "user", "content": "who was born"}, {"role": "assistant", "content": "the city"}]),
               load_template("chatml", HERE), LossPolicy.all)
    enc = row_tok.encode(r)
    assert enc.labels == enc.input_ids


def test_supervised_mask_edges():
    offsets = np.array([[0, 3], [3, 5], [5, 9], [9, 9], [9, 12]])
    # a token straddling a span edge is supervised; [9, 9) is a zero-width token at 9
    assert supervised_mask(offsets, [(4, 6)]).tolist() == [False, True, True, False, False]
    assert supervised_mask(offsets, [(0, 1), (9, 10)]).tolist() == [True, False, False, True, True]
    assert supervised_mask(offsets, [(3, 5)]).tolist() == [False, True, False, False, False]
    assert supervised_mask(offsets, []).tolist() == [False] * 5
    assert supervised_mask(offsets[:0], [(0, 3)]).tolist() == []


# ---------------------------------------------------------------------------------------------
# Overflow
# ---------------------------------------------------------------------------------------------


def _rows():
    tpl = load_template("chatml", HERE)
    short = render(make_conv([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]), tpl,
                   LossPolicy.assistant)
    long = render(make_conv([{"role": "user", "content": "the question"},
                             {"role": "assistant", "content": "the answer " * 20}]), tpl, LossPolicy.assistant)
    prompt_heavy = render(make_conv([{"role": "user", "content": "the question " * 40},
                                     {"role": "assistant", "content": "yes"}]), tpl, LossPolicy.assistant)
    return short, long, prompt_heavy


def test_overflow_modes(tiny_tokenizer_dir):
    short, long, prompt_heavy = _rows()
    free = RowTokenizer.load(str(tiny_tokenizer_dir), Path("/"))
    n_short, n_long, n_heavy = (len(e.input_ids) for e in free.encode_batch([short, long, prompt_heavy]))
    limit = 30
    assert n_short <= limit < n_long and limit < n_heavy

    drop = RowTokenizer.load(TokenizeSpec(tokenizer=str(tiny_tokenizer_dir), max_length=limit), Path("/"))
    out = drop.encode_batch([short, long, prompt_heavy])
    assert out[0] is not None and out[1] is None and out[2] is None
    assert (drop.stats.rows, drop.stats.dropped_too_long, drop.stats.truncated) == (3, 2, 0)

    trunc = RowTokenizer.load(TokenizeSpec(tokenizer=str(tiny_tokenizer_dir), max_length=limit, overflow="truncate"),
                              Path("/"))
    a, b, c = trunc.encode_batch([short, long, prompt_heavy])
    full_b = free.encode(long)
    assert not a.truncated and b.truncated and c.truncated
    assert b.input_ids == full_b.input_ids[:limit] and b.labels == full_b.labels[:limit]
    assert b.n_supervised > 0 and c.n_supervised == 0  # the builder rejects c: nothing left to learn
    assert (trunc.stats.truncated, trunc.stats.unsupervised_after_truncation) == (2, 1)

    err = RowTokenizer.load(TokenizeSpec(tokenizer=str(tiny_tokenizer_dir), max_length=limit, overflow="error"),
                            Path("/"))
    with pytest.raises(RowTooLong) as e:
        err.encode_batch([short, long])
    assert isinstance(e.value, BadRow) and e.value.index == 1 and e.value.n_tokens == n_long
    assert "max_length=30" in e.value.reason


def test_tokenize_spec_is_strict():
    assert TokenizeSpec(tokenizer="t").overflow == "drop"
    with pytest.raises(ValidationError):
        TokenizeSpec(tokenizer="t", max_len=3)
    with pytest.raises(ValidationError):
        TokenizeSpec(tokenizer="t", overflow="wrap")
    with pytest.raises(ValidationError):
        TokenizeSpec(tokenizer="t", max_length=0)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def test_load_relative_hash_and_errors(tmp_path, tiny_tokenizer_dir):
    shutil.copytree(tiny_tokenizer_dir, tmp_path / "tok")
    a = RowTokenizer.load("tok", tmp_path)
    b = RowTokenizer.load(str(tiny_tokenizer_dir), Path("/"))
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    cfg = tmp_path / "tok" / "tokenizer_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "model_max_length": 7}))
    assert RowTokenizer.load("tok", tmp_path).sha256 != a.sha256

    # settings stored in tokenizer.json (truncation/padding) do not apply: the spec decides
    tj = tmp_path / "tok" / "tokenizer.json"
    data = json.loads(tj.read_text())
    data["truncation"] = {"direction": "Right", "max_length": 3, "strategy": "LongestFirst", "stride": 0}
    tj.write_text(json.dumps(data))
    r = Rendered("the question is who was born in the city", [(0, 3)])
    assert len(RowTokenizer.load("tok", tmp_path).encode(r).input_ids) > 3

    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="has no tokenizer.json"):
        RowTokenizer.load("empty", tmp_path)
    with pytest.raises(BuildError, match="not found"):
        RowTokenizer.load("./nope", tmp_path)
    with pytest.raises(BuildError, match="not in the Hugging Face cache|could not be fetched"):
        RowTokenizer.load("no-such-org/no-such-model-xyz", tmp_path)
    tj.write_text("{not json")
    with pytest.raises(BuildError, match="cannot load tokenizer"):
        RowTokenizer.load("tok", tmp_path)


def test_build_path_does_not_import_transformers(tiny_tokenizer_dir):
    import subprocess

    code = (
        "import sys, pathlib\n"
        "from dsc.chat.templating import load_template\n"
        "from dsc.chat.render import render, LossPolicy\n"
        "from dsc.chat.tokenize import RowTokenizer\n"
        f"t = load_template('tokenizer:{tiny_tokenizer_dir}', pathlib.Path('.'))\n"
        f"tok = RowTokenizer.load({str(tiny_tokenizer_dir)!r}, pathlib.Path('.'))\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
