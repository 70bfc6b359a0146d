"""The dataset card: realised mix (table + PNG), length histogram, template hash, licences,
loading instructions, and bytes that never change between builds."""
from __future__ import annotations

import struct

import matplotlib
import pyarrow.parquet as pq
from artifact_helpers import make_project

from dsc.compiler.engine.driver import build
from dsc.compiler.stages.write.card import LENGTH_CHART, MIX_CHART, card_text, length_chart, mix_chart
from dsc.artifact.inspection import ArtifactStats, LengthCounts, Tally


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i:i + 4])
        out.append((data[i + 4:i + 8], data[i + 8:i + 8 + n]))
        i += 12 + n
    return out


def test_card_and_charts_are_byte_identical_across_builds(tmp_path):
    spec = make_project(tmp_path)
    build(spec, tmp_path / "a")
    build(spec, tmp_path / "b", workers=2)
    for name in ("README.md", MIX_CHART, LENGTH_CHART):
        a, b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        assert a == b, name
    for name in (MIX_CHART, LENGTH_CHART):
        chunks = png_chunks((tmp_path / "a" / name).read_bytes())
        kinds = {k for k, _ in chunks}
        assert b"tIME" not in kinds  # no timestamp
        texts = b"".join(v for k, v in chunks if k in (b"tEXt", b"iTXt", b"zTXt"))
        assert b"Software" not in texts and b"matplotlib" not in texts.lower()


def test_card_content(tmp_path):
    spec = make_project(tmp_path)
    result = build(spec, tmp_path / "a")
    m = result.manifest
    card = (tmp_path / "a" / "README.md").read_text()
    train = m["counts"]["written"]["train"]
    sup = m["counts"]["supervised_chars"]["train"]
    assert f"| chat | {train} | 100.0% | {sup} | 100.0% |" in card  # the realised mix
    assert f"![realised mix]({MIX_CHART})" in card and f"![row lengths]({LENGTH_CHART})" in card
    texts = pq.read_table(sorted((tmp_path / "a" / "data").glob("train-*"))[0], columns=["text"])
    longest = max(len(t) for t in texts.column("text").to_pylist())
    assert "| split | min | median | p95 | max |" in card and f"| {longest} |" in card
    assert m["template"]["sha256"] in card
    assert "| chat | MIT (FireAct) |" in card  # source licence as the spec declares it
    assert 'load_dataset("parquet", data_files={"train": "data/train-*.parquet"' in card
    assert card.startswith("---\nlicense: mit\n")


def test_charts_ignore_the_users_matplotlib_style(tmp_path):
    spec = make_project(tmp_path)
    build(spec, tmp_path / "a")
    expected = (tmp_path / "a" / MIX_CHART).read_bytes()
    with matplotlib.rc_context({"axes.facecolor": "red", "font.size": 20, "figure.dpi": 50}):
        build(spec, tmp_path / "b")
    assert (tmp_path / "b" / MIX_CHART).read_bytes() == expected


def test_label_and_capability_mixes_appear_when_rows_carry_them():
    stats = ArtifactStats(tokenised=True)
    stats.splits["train"] = Tally(4, 400, 100)
    stats.by = {
        "source": {"train": {"nat": Tally(4, 400, 100)}},
        "label": {"train": {"success": Tally(1, 100, 40), "failure": Tally(3, 300, 60)}},
        "capability": {"train": {"(none)": Tally(4, 400, 100)}},
    }
    stats.lengths = {"train": LengthCounts.of([10, 20, 30, 40])}
    manifest = {"name": "n", "version": "v", "dsc_version": "0", "counts": {
        "written": {"train": 4}, "per_source": {"nat": {"train": 4}}, "read": {"nat": 4}, "quarantined": 0,
        "supervised_chars": {"train": 400}, "supervised_tokens": {"train": 100}},
        "spec": {"sources": {"nat": {}}, "loss": "assistant"},
        "template": {"ref": "llama-2", "sha256": "abc"}, "tokenizer": {"ref": "tok", "sha256": "def"}}
    card = card_text(manifest, stats)
    assert "| label | rows | share | supervised tokens | share |" in card
    assert "| failure | 3 | 75.0% | 60 | 60.0% |" in card and "| success | 1 | 25.0% | 40 | 40.0% |" in card
    assert "| capability |" not in card  # no row carries one
    assert "| nat | not declared |" in card
    assert "`input_ids` and `labels`" in card
    assert mix_chart(stats) != mix_chart(ArtifactStats(tokenised=True, splits=stats.splits,
                                                       by={"source": stats.by["source"]}, lengths=stats.lengths))
    assert length_chart(stats)[:8] == b"\x89PNG\r\n\x1a\n"


def test_counts_taken_while_writing_equal_the_artifact_read_back(tmp_path):
    """The build counts rows for the card as it writes them; the card must be the one the
    written artifact gives when read back (several shards and row groups, two splits, tokens)."""
    import json
    import shutil
    from collections import defaultdict

    from tiny import make_tokenizer

    from dsc.compiler.stages.write.card import write_card
    from dsc.artifact.inspection import artifact_stats
    from dsc.artifact.reader import open_artifact

    tok = make_tokenizer(tmp_path / "tok")
    spec = make_project(tmp_path, rows=60, extra=f"tokenize: {{tokenizer: {tok}}}\n"
                                                 "output: {row_group_rows: 7, shard_rows: 15}\n")
    build(spec, tmp_path / "a", workers=2)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert len(manifest["files"]) > 3  # several shards
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    write_card(tmp_path / "b", manifest)  # counts read back from the written shards
    for name in ("README.md", MIX_CHART, LENGTH_CHART):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    # and those counts are right: a plain per-row count over the written rows
    stats = artifact_stats(open_artifact(tmp_path / "a"))
    for split in ("train", "validation"):
        table = pq.read_table(sorted((tmp_path / "a" / "data").glob(f"{split}-*"))).to_pylist()
        per_source: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for row in table:
            t = per_source[row["meta"]["source"]]
            t[0] += 1
            t[1] += sum(b - a for a, b in row["loss_spans"])
            t[2] += sum(1 for x in row["labels"] if x != -100)
        assert {k: [v.rows, v.supervised_chars, v.supervised_tokens] for k, v in stats.by["source"][split].items()} \
            == dict(per_source)
        assert stats.lengths[split] == LengthCounts.of([len(row["input_ids"]) for row in table])
