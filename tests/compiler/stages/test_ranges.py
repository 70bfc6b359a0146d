"""Input ranges: newline-aligned JSONL byte ranges and Parquet row-group runs read every row
once, with the provenance row a whole-file read gives it, wherever the cuts fall."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsc.compiler.stages.read.ranges import ScanTask, plan_ranges, read_range, scan_file, scan_tasks
from dsc.compiler.stages.read.sources import InputFile, iter_raw_rows
from dsc.spec.sources import SourceSpec


def scanned(name, spec, base, target=None):
    """The source's files as the build scans them (cut for ranges of `target` bytes, if given)."""
    return [scan_file(t) for t in scan_tasks(name, spec, base, 1 if target else None, target)]


def _rows(raws) -> list[tuple[str, int, object]]:
    out = []
    for raw in raws:
        parsed = raw.parsed()
        if parsed is not None:
            out.append((parsed.file, parsed.row, parsed.data if parsed.data is not None else parsed.error))
    return out


def _whole(name: str, spec: SourceSpec, base: Path) -> list[tuple[str, int, object]]:
    return _rows(iter_raw_rows(name, spec, base))


def _ranged(name: str, spec: SourceSpec, base: Path, target: int):
    """(the rows of every range planned with this target, the ranges)"""
    ranges = plan_ranges(name, spec, scanned(name, spec, base, target))
    return [row for r in ranges for row in _rows(read_range(r, spec, base))], ranges


lines = st.one_of(
    st.builds(lambda i, s: json.dumps({"id": i, "text": s}), st.integers(0, 10**6), st.text(max_size=30)),
    st.sampled_from(["", "   ", "{broken", "[1, 2]", "\u00a0"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(lines, max_size=40), st.integers(1, 300), st.booleans(), st.booleans())
def test_jsonl_ranges_read_what_the_whole_file_reads(tmp_path_factory, body, target, bom, trailing_newline):
    base = tmp_path_factory.mktemp("jsonl")
    text = "\n".join(body) + ("\n" if trailing_newline and body else "")
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")
    (base / "a.jsonl").write_bytes(data)
    spec = SourceSpec(path="a.jsonl", format="openai")
    ranged, ranges = _ranged("s", spec, base, target)
    assert ranged == _whole("s", spec, base)
    if len(data) <= target:
        assert [r.kind for r in ranges] == ["file"]
        return
    cuts = [(r.start, r.end) for r in ranges]
    assert cuts[0][0] == 0 and cuts[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))  # contiguous
    assert all(data[z - 1:z] == b"\n" for _, z in cuts[:-1])  # every cut after a newline


def test_jsonl_ranges_are_near_the_target(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"i": i, "pad": "x" * (i % 50)}) + "\n" for i in range(5000)))
    scan = scan_file(ScanTask("s", InputFile(str(path), "big.jsonl", "jsonl"), path.stat().st_size, 10_000))
    assert scan.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # the same pass hashes it
    cuts = scan.lines
    assert len(cuts) > 10
    assert all(z - a >= 10_000 for a, z, _ in cuts[:-1]) and all(z - a < 10_100 for a, z, _ in cuts[:-1])
    first_rows = [row for _, _, row in cuts]
    assert first_rows == sorted(first_rows) and first_rows[0] == 0


def test_parquet_row_group_runs(tmp_path):
    (tmp_path / "d").mkdir()
    table = pa.table({"id": list(range(1000)), "text": [f"row {i}" for i in range(1000)]})
    pq.write_table(table, tmp_path / "d" / "a.parquet", row_group_size=64)
    pq.write_table(table.slice(0, 10), tmp_path / "d" / "b.parquet")
    spec = SourceSpec(path="d/*.parquet", format="openai")
    ranged, ranges = _ranged("s", spec, tmp_path, 2_000)
    assert sum(r.kind == "row_groups" for r in ranges) > 3
    assert ranged == _whole("s", spec, tmp_path)


@pytest.mark.parametrize("extra", [{"limit": 7}])
def test_a_limited_source_is_one_range(tmp_path, extra):
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(20)))
    spec = SourceSpec(path="a.jsonl", format="openai", **extra)
    ranged, ranges = _ranged("s", spec, tmp_path, 10)
    assert [r.kind for r in ranges] == ["source"]
    assert ranged == _whole("s", spec, tmp_path) and len(ranged) == 7


def test_every_input_is_scanned_once_by_one_task_on_the_executor(tmp_path, monkeypatch):
    """The driver hands one task per file to the executor's map; each task reads its file once,
    for its hash and (a JSONL of an emitted source larger than the range size) its cuts."""
    from collections import Counter

    from dsc.compiler.stages.read import ranges
    from dsc.compiler.stages.read.ranges import resolve_inputs
    from dsc.spec.model import read_spec

    monkeypatch.setattr(ranges, "MIN_RANGE_BYTES", 2_000)
    (tmp_path / "data").mkdir()
    for name in ("a", "b"):
        (tmp_path / "data" / f"{name}.jsonl").write_text(
            "".join(json.dumps({"id": f"{name}{i}", "pad": "x" * 40}) + "\n" for i in range(300)))
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps({"id": f"a{i}"}) + "\n" for i in range(300)))
    (tmp_path / "spec.yaml").write_text(
        "dsc: 1\nname: s\ntemplate: chatml\nsources:\n"
        "  chat: {path: data/*.jsonl, format: openai}\n"
        "  questions: {path: questions.jsonl, lookup: id}\n")
    maps = []

    def recording_map(fn, tasks):
        tasks = list(tasks)
        maps.append((fn, tasks))
        return map(fn, tasks)

    opened: Counter[str] = Counter()
    real_open = InputFile.open
    monkeypatch.setattr(InputFile, "open", lambda self: (opened.update([self.display]), real_open(self))[1])
    inputs = resolve_inputs(read_spec(tmp_path / "spec.yaml"), workers=2, map_fn=recording_map)

    assert [fn for fn, _ in maps] == [scan_file]
    assert sorted(t.file.display for t in maps[0][1]) == ["data/a.jsonl", "data/b.jsonl", "questions.jsonl"]
    assert opened == {"data/a.jsonl": 1, "data/b.jsonl": 1, "questions.jsonl": 1}
    assert [(e["source"], e["path"]) for e in inputs.entries] == [
        ("chat", "data/a.jsonl"), ("chat", "data/b.jsonl"), ("questions", "questions.jsonl")]
    for e in inputs.entries:
        assert e["sha256"] == hashlib.sha256((tmp_path / e["path"]).read_bytes()).hexdigest()
    chat = inputs.files["chat"]
    assert all(len(s.lines) > 3 for s in chat)  # cut in the same pass
    assert inputs.files["questions"][0].lines == ()  # a lookup is read whole, never cut
    planned = plan_ranges("chat", read_spec(tmp_path / "spec.yaml").spec.sources["chat"], chat)
    assert [(r.file.display, r.start, r.end, r.first_row) for r in planned] == [
        (s.file.display, a, z, row) for s in chat for a, z, row in s.lines]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"x", b"yy", b"\n", b"zzzz\n", b"\n\n"]), max_size=60), st.integers(1, 40),
       st.lists(st.integers(1, 17), min_size=1, max_size=10))
def test_cuts_do_not_depend_on_how_the_bytes_come_in_blocks(parts, target, block_sizes):
    from dsc.compiler.stages.read.ranges import _LineCuts

    data = b"".join(parts)
    whole = _LineCuts(len(data), target)
    whole.feed(data)
    pieces, at, k = _LineCuts(len(data), target), 0, 0
    while at < len(data):
        n = block_sizes[k % len(block_sizes)]
        pieces.feed(data[at:at + n])
        at, k = at + n, k + 1
    assert pieces.finish() == whole.finish()


def test_a_file_that_grows_while_it_is_scanned_fails_the_build(tmp_path):
    from dsc.core.errors import BuildError

    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(100)))
    listed = path.stat().st_size
    with path.open("a") as f:  # rows appended after the listing: the cuts would end at the old size
        f.write(json.dumps({"i": 100}) + "\n")
    with pytest.raises(BuildError, match=r"source 's': a.jsonl changed while it was read \(\d+ bytes when listed"):
        scan_file(ScanTask("s", InputFile(str(path), "a.jsonl", "jsonl"), listed, 200))
