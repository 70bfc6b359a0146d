"""The write phase as tasks: the layout of shards, row groups and buckets, and shard bytes that
depend on neither the bucket layout, the task sizes, the worker count nor a task run twice."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from artifact_helpers import make_project
from dsc.compiler.engine import spill
from dsc.compiler.engine.driver import build
from dsc.compiler.stages.write import artifact as art

SHARDED = "output: {shard_rows: 9, row_group_rows: 2}\n"


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def small_tasks(monkeypatch):
    """Buckets of a few row groups, route tasks of a few rows: many of each even for 60 rows."""
    monkeypatch.setattr(spill, "BUCKET_ROWS", 5)
    monkeypatch.setattr(spill, "ROUTE_ROWS", 4)


def test_layout_cuts_row_groups_as_write_split_and_buckets_within_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "BUCKET_ROWS", 5)
    split_rows = {"train": 23, "validation": 7, "test": 0}
    layout = spill.Layout(split_rows, shard_rows=9, row_group_rows=2)
    for split, rows in split_rows.items():
        names = art.write_split(tmp_path, split, _rows(rows), rows, tokenized=False, shard_rows=9,
                                row_group_rows=2)
        plans = [s for s in layout.shards if s.split == split]
        assert [p.name for p in plans] == names
        for plan in plans:
            meta = pq.ParquetFile(tmp_path / plan.name).metadata
            assert [z - a for a, z in plan.row_groups] == [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            if not plan.row_groups:
                assert not plan.buckets  # an empty split: one empty shard
                continue
            # the buckets: consecutive, over the shard's row groups only, cut where a row group ends
            bounds = [plan.row_groups[0][0], *[b.end for b in plan.buckets]]
            assert [(b.start, b.end) for b in plan.buckets] == list(zip(bounds, bounds[1:]))
            assert bounds[-1] == plan.row_groups[-1][1]
            assert set(bounds[1:]) <= {z for _, z in plan.row_groups}
            assert all(b.end - b.start <= 5 for b in plan.buckets)  # row groups of 2: none alone is bigger
    assert [b.number for b in layout.buckets] == list(range(len(layout.buckets)))
    assert any(len(p.buckets) > 1 for p in layout.shards)


def _rows(n: int) -> list[dict]:
    meta = {"source": "s", "task": None, "method": None, "capability": None, "success": None, "score": None,
            "label": None, "extra": None, "provenance": {"file": "f", "file_sha256": "0", "row": 0, "steps": []}}
    return [{"id": str(i), "group": str(i), "messages": [], "tools": "[]", "meta": meta, "text": "x", "loss_spans": []}
            for i in range(n)]


def test_sharded_build_same_bytes_on_one_and_two_workers_whatever_the_task_sizes(tmp_path, monkeypatch):
    spec = make_project(tmp_path / "p", rows=60, extra=SHARDED + "mix: {chat: {rate: 1.5}}\n")  # copies: `#k` ids
    reference = tree_bytes(build(spec, tmp_path / "ref", cache=False).out_dir)
    shards = sorted((tmp_path / "ref" / "data").glob("train-*.parquet"))
    assert len(shards) > 1 and pq.ParquetFile(shards[0]).metadata.num_row_groups > 1
    monkeypatch.setattr(spill, "BUCKET_ROWS", 5)
    monkeypatch.setattr(spill, "ROUTE_ROWS", 4)
    for workers in (1, 2):
        out = build(spec, tmp_path / f"w{workers}", workers=workers, cache=False).out_dir
        assert tree_bytes(out) == reference
    # big route tasks that spill a few rows at a time (each task writes several files to a bucket)
    monkeypatch.setattr(spill, "ROUTE_ROWS", 8192)
    monkeypatch.setattr(spill, "CHUNK_ROWS", 3)
    monkeypatch.setattr(spill, "ROUTE_FLUSH_BYTES", 1)
    out = build(spec, tmp_path / "flushes", workers=2, cache=False).out_dir
    assert tree_bytes(out) == reference


def test_a_route_task_run_twice_leaves_the_same_files_and_artifact(tmp_path, monkeypatch, small_tasks):
    spec = make_project(tmp_path / "p", rows=60, extra=SHARDED)
    reference = tree_bytes(build(spec, tmp_path / "ref", cache=False).out_dir)
    real, runs = spill.route_rows, []

    def retried(task: spill.RouteTask) -> dict[str, dict[int, int]]:
        """The task, then the task again (a worker died after its files were placed)."""
        first = real(task)
        files = _task_files(task)
        again = real(task)
        assert again == first and _task_files(task) == files
        runs.append(task.number)
        return again

    monkeypatch.setattr(spill, "route_rows", retried)
    assert tree_bytes(build(spec, tmp_path / "out", cache=False).out_dir) == reference
    assert len(runs) > 1


def _task_files(task: spill.RouteTask) -> dict[str, bytes]:
    found = {p.name: p.read_bytes() for p in task.directory.iterdir() if p.name.startswith(f"route-{task.number:06d}-")}
    assert found and not list(task.directory.glob(".*.tmp"))  # no temporaries left
    return found


@pytest.mark.parametrize("flushes", [False, True])
def test_routing_writes_a_file_per_route_task_flush_not_per_bucket(tmp_path, monkeypatch, flushes):
    """Rows come in hash order, so each route task touches most buckets: a file per (task,
    bucket) would make tasks × buckets files; the spill holds one file per (task, flush), a
    record batch per bucket in bucket order (the task returns which)."""
    spec = make_project(tmp_path / "p", rows=60, extra=SHARDED)
    reference = tree_bytes(build(spec, tmp_path / "ref", cache=False).out_dir)
    monkeypatch.setattr(spill, "BUCKET_ROWS", 5)
    monkeypatch.setattr(spill, "ROUTE_ROWS", 20)
    if flushes:  # a file every 3 rows
        monkeypatch.setattr(spill, "CHUNK_ROWS", 3)
        monkeypatch.setattr(spill, "ROUTE_FLUSH_BYTES", 1)
    real_route, real_shard = spill.route_rows, spill.write_shard_file
    routed: dict[int, tuple[int, dict[str, dict[int, int]]]] = {}  # task: (its rows, what it routed)
    spilled: dict[str, list[int]] = {}  # after routing, each file: its batches' rows

    def route(task: spill.RouteTask) -> dict[str, dict[int, int]]:
        done = real_route(task)
        routed[task.number] = (sum(sum(held.values()) for held in done.values()), done)
        return done

    def shard(task: spill.ShardTask) -> spill.ShardWritten:
        for path in [] if spilled else sorted(task.directory.glob("route-*")):
            reader = pa.ipc.open_file(str(path))
            spilled[path.name] = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        return real_shard(task)

    monkeypatch.setattr(spill, "route_rows", route)
    monkeypatch.setattr(spill, "write_shard_file", shard)
    assert tree_bytes(build(spec, tmp_path / "out", cache=False).out_dir) == reference
    files = {name: held for t in sorted(routed) for name, held in routed[t][1].items()}
    assert list(spilled) == list(files) == [f"route-{t:06d}-{f:04d}.arrow" for t, (rows, _) in sorted(routed.items())
                                            for f in range(-(-rows // 3) if flushes else 1)]
    assert all(list(held) == sorted(held) for held in files.values())  # batches in bucket order
    assert spilled == {name: list(held.values()) for name, held in files.items()}
    task_buckets = sum(len({b for held in f.values() for b in held}) for _, f in routed.values())
    assert len(routed) > 1 and task_buckets > 2 * len(routed)  # a file per (task, bucket): several times as many


def test_a_failed_shard_task_leaves_no_spill_behind(tmp_path, monkeypatch):
    spec = make_project(tmp_path / "p", rows=30, extra=SHARDED)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(art, "write_shard", broken)
    with pytest.raises(OSError, match="disk full"):
        build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("spill-*"))
    assert not (tmp_path / "out").exists()
