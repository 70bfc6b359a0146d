"""The benchmark measures the same output: dsc's input_ids/labels equal the hand-written baseline's.

Also pins the pieces the numbers rest on: the corpus generator is deterministic and streams
(row i does not depend on n), the tool-schema corpus reuses K system prompts, and the limit
tokenises exactly the text the baseline tokenises.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import make_corpus  # noqa: E402
import make_tokenizer  # noqa: E402

N_ROWS = 30
K = 3


def _rows(path: Path) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def bench_tokenizer(tmp_path_factory) -> Path:
    # Small and quick, but trained the same way as the benchmark's.
    return make_tokenizer.build_tokenizer(tmp_path_factory.mktemp("bench-tok"), vocab_size=1200, train_rows=60)


@pytest.fixture(scope="module", params=[0, K], ids=["plain", "tool-schemas"])
def spec_dir(request, tmp_path_factory, bench_tokenizer) -> Path:
    """A dsc spec dir exactly as run.py lays it out."""
    import shutil

    d = tmp_path_factory.mktemp(f"bench-k{request.param}")
    make_corpus.write_corpus(d / "corpus.jsonl", N_ROWS, seed=7, tool_schemas=request.param)
    shutil.copytree(bench_tokenizer, d / "tokenizer")
    _common.write_spec(d)
    return d


@pytest.fixture(scope="module")
def baseline_rows(spec_dir, tmp_path_factory) -> list[dict]:
    """The baseline's saved rows (input_ids, labels), in corpus order."""
    import baseline
    import datasets

    tmp = tmp_path_factory.mktemp("baseline")
    baseline.run_baseline(spec_dir / "corpus.jsonl", spec_dir / "tokenizer", tmp / "out",
                          num_proc=1, cache_dir=tmp / "hf-cache")
    return datasets.load_from_disk(str(tmp / "out")).to_list()


def test_corpus_is_deterministic_and_row_i_does_not_depend_on_n(tmp_path):
    a = make_corpus.write_corpus(tmp_path / "a.jsonl", 12, seed=3).read_bytes()
    b = make_corpus.write_corpus(tmp_path / "b.jsonl", 20, seed=3).read_bytes()
    again = make_corpus.write_corpus(tmp_path / "c.jsonl", 12, seed=3).read_bytes()
    other = make_corpus.write_corpus(tmp_path / "d.jsonl", 12, seed=4).read_bytes()
    assert a == again
    assert b.startswith(a) and len(b) > len(a)
    assert a != other


def test_corpus_shape_is_react(tmp_path):
    for messages in _rows(make_corpus.write_corpus(tmp_path / "c.jsonl", 40, seed=1)):
        roles = [m["role"] for m in messages]
        assert roles[:2] == ["system", "user"] and roles[-1] == "assistant"
        pairs = roles[2:-1]
        assert 2 <= len(pairs) // 2 <= 6 and pairs == ["assistant", "tool"] * (len(pairs) // 2)
        for m in messages[2:]:
            if m["role"] == "assistant":
                assert m["content"].startswith("Thought: ") and "\nAction: " in m["content"]
            else:
                assert m["content"].startswith("Observation: ")
        assert "Action: finish[" in messages[-1]["content"]


def test_tool_schema_corpus_reuses_k_system_prompts_and_calls_their_functions(tmp_path):
    rows = _rows(make_corpus.write_corpus(tmp_path / "c.jsonl", 40, seed=1, tool_schemas=K))
    systems = {r[0]["content"] for r in rows}
    assert len(systems) == K
    for messages in rows:
        block = messages[0]["content"].split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
        names = {json.loads(line)["function"]["name"] for line in block.splitlines()}
        assert 5 <= len(names) <= 8
        for m in messages[2:-1:2]:
            action = m["content"].split("\nAction: ", 1)[1]
            name, args = action.split("[", 1)
            assert name in names
            assert isinstance(json.loads(args[:-1]), dict)


def test_limit_tokenises_exactly_the_baseline_text(spec_dir, baseline_rows, tmp_path):
    import limit

    base = baseline_rows
    texts = limit.render(spec_dir / "corpus.jsonl", spec_dir / "tokenizer", tmp_path / "rendered.parquet")
    res = limit.run_limit(texts, spec_dir / "tokenizer", batch_size=7)
    assert res["rows"] == N_ROWS
    assert res["tokens"] == sum(len(r["input_ids"]) for r in base)


def test_baseline_labels_are_the_assistant_generations(spec_dir, baseline_rows):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(spec_dir / "tokenizer"))
    base = baseline_rows
    assert len(base) == N_ROWS
    for row, messages in zip(base, _rows(spec_dir / "corpus.jsonl")):
        supervised = [t for t in row["labels"] if t != -100]
        expected = "".join(m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant")
        assert tok.decode(supervised) == expected
        assert all(lab in (-100, t) for lab, t in zip(row["labels"], row["input_ids"]))


def test_dsc_build_equals_baseline(spec_dir, baseline_rows, tmp_path, monkeypatch):
    from dsc.compiler.engine.driver import build

    monkeypatch.setenv("DSC_CACHE_DIR", str(tmp_path / "dsc-cache"))  # a cold build, not ~/.cache/dsc
    base = baseline_rows
    build(spec_dir / "spec.yaml", tmp_path / "dsc", workers=1)
    table = _common.read_dsc_train(tmp_path / "dsc", ["meta", "input_ids", "labels"])
    assert table.num_rows == N_ROWS
    by_row = {}
    for meta, ids, labels in zip(table.column("meta").to_pylist(), table.column("input_ids").to_pylist(),
                                 table.column("labels").to_pylist()):
        by_row[meta["provenance"]["row"]] = (ids, labels)
    assert sorted(by_row) == list(range(N_ROWS))
    for i, row in enumerate(base):
        ids, labels = by_row[i]
        assert ids == row["input_ids"], f"row {i}: input_ids differ"
        assert labels == row["labels"], f"row {i}: labels differ"
    assert any(t != -100 for _, labels in by_row.values() for t in labels)
