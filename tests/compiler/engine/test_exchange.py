"""The exchange between a build's tasks (`engine.exchange`): a task finds its batch in every file
of the step before, in file-name order; the driver keeps file names and rows per partition,
never a list per pair of tasks; a build whose every task runs twice writes the same bytes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from artifact_helpers import make_project, tree_digest
from dsc.compiler.engine import exchange
from dsc.compiler.engine.cache import BuildCache
from dsc.compiler.engine.driver import build
from dsc.compiler.engine.executors.local import LocalExecutor
from dsc.compiler.engine.rowfiles import ArrowFile

SCHEMA = pa.schema([("producer", pa.int32()), ("value", pa.int64())])


def _sent(p: int, partitions: int) -> tuple[pa.Table, np.ndarray]:
    """Producer p's rows and their partitions; partition p % partitions gets none of them."""
    values = np.arange(p * 100, p * 100 + 3 * partitions)
    part = values % partitions
    part[part == p % partitions] = (p + 1) % partitions
    return pa.table({"producer": pa.array(np.full(len(values), p, np.int32)), "value": pa.array(values)}), part


def test_a_task_reads_its_batch_from_every_file_in_name_order_and_the_driver_keeps_counts(tmp_path):
    producers, partitions = 7, 5
    mail = exchange.Mailroom()
    for p in reversed(range(producers)):  # finishing in any order
        t, part = _sent(p, partitions)
        mail.add(exchange.send(tmp_path, f"p-{p:03d}", exchange.by_partition(t, part), SCHEMA), "step")
    files, rows = mail.take("step")
    # the driver: a name per producer, a count per partition (not producers × partitions entries)
    assert sorted(files) == [f"p-{p:03d}.arrow" for p in range(producers)]
    assert mail.files == {} and mail.rows == {}
    for dest in range(partitions):
        expected = pa.concat_tables([t.filter(pa.array(part == dest)) for t, part in
                                     (_sent(p, partitions) for p in range(producers))])
        got = exchange.received(tmp_path, files, dest, SCHEMA, rows[dest])
        assert got.equals(expected) and rows[dest] == expected.num_rows  # file-name order
        assert got.schema.metadata is None
    assert list(rows) == list(range(partitions))
    assert exchange.received(tmp_path, files, partitions + 3, SCHEMA, 0).num_rows == 0
    with pytest.raises(RuntimeError, match="lost rows: partition 1 got"):  # a file gone: an error, not fewer rows
        exchange.received(tmp_path, sorted(files)[1:], 1, SCHEMA, rows[1])
    assert exchange.received(tmp_path, files, (0, 1), SCHEMA, 0).num_rows == 0  # (step, part): another key
    found = exchange.find(tmp_path, files, [0, partitions + 3])
    assert found[0] == [(f"p-{p:03d}.arrow", 0) for p in range(producers) if p % partitions != 0]
    assert found[partitions + 3] == []


class TwiceExecutor(LocalExecutor):
    """Runs every task twice (a retried or duplicated task), handing back the second result."""

    def map(self, fn, tasks):
        for t in tasks:
            fn(t)
            yield fn(t)


@pytest.mark.parametrize("cache", [False, True])
def test_every_task_of_a_build_run_twice_writes_the_same_bytes(tmp_path, monkeypatch, cache):
    spec = make_project(tmp_path / "p", rows=60, extra="output: {shard_rows: 9, row_group_rows: 2}\n")
    reference = tree_digest(build(spec, tmp_path / "ref", cache=False).out_dir)
    monkeypatch.setattr(exchange, "PARTITION_ROWS", 7)  # several ranges, blocks and shards
    monkeypatch.setattr("dsc.compiler.engine.executors.local.LocalExecutor", TwiceExecutor)
    out = build(spec, tmp_path / "out", cache=cache, cache_dir=tmp_path / "cache").out_dir
    assert tree_digest(out) == reference
    if cache:  # a render task run again writes the same part, not a second one
        monkeypatch.setattr("dsc.compiler.engine.executors.local.LocalExecutor", LocalExecutor)
        build(spec, tmp_path / "once", cache_dir=tmp_path / "cache-once")
        assert parts(tmp_path / "cache") == parts(tmp_path / "cache-once") != []


def parts(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.glob("*/rendered/*/parts/*"))


def test_a_rendered_part_names_its_first_and_last_row(tmp_path):
    spec = make_project(tmp_path / "p", rows=60)
    result = build(spec, tmp_path / "out", cache_dir=tmp_path / "cache")
    with BuildCache.open(True, tmp_path / "cache") as store:
        stores = sorted(Path(store.root).glob("rendered/*/parts"))
        assert stores
        rendered = 0
        for d in stores:
            for part in store.rendered(d.parent.name).parts():
                with ArrowFile(d / part.name, ["row"]) as f:
                    rows = f.read_all().column("row").to_numpy()
                assert (part.first, part.last) == (rows.min(), rows.max()) and np.all(np.diff(rows) > 0)
                rendered += len(rows)
    assert sum(c.rendered_new for c in result.cache.values()) == rendered > 0
