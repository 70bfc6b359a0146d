"""Rows between tasks through files (the build cache's scratch, which every worker sees): a task
writes one Arrow IPC file with a record batch per destination partition and returns which; the
driver hands each task of the next step the batches of its partition and keeps only counts.
Files have deterministic names and are renamed into place, and readers take batches in
file-name order: a task run twice writes the same bytes, and nothing depends on which task
finished first."""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from dsc.compiler.engine.rowfiles import IPC_OPTIONS

PARTITION_ROWS = 1 << 16  # rows per partition, about

Batch = tuple[str, int]  # (file name in the exchange directory, record batch)


def partitions(rows: int, workers: int) -> int:
    """Partitions for `rows`: enough for every worker, none much above PARTITION_ROWS rows. Bytes
    never depend on it: a partition holds every row its step compares."""
    return max(1, min(1024, max(2 * workers, math.ceil(rows / PARTITION_ROWS)))) if rows else 1


@contextmanager
def directory(scratch: Path) -> Iterator[Path]:
    """A build's exchange directory under `scratch` (every worker must see it), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="exchange-", dir=scratch))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class SegmentBlocks:
    """Partitions of every source's segment rows into blocks of consecutive rows, numbered
    source after source: a task per block reads one segment's rows in order."""

    size: np.ndarray  # int64 per source: rows per block
    base: np.ndarray  # int64 per source: its first block's number; then the number of blocks

    @classmethod
    def of(cls, rows: list[int], size: list[int]) -> "SegmentBlocks":
        counts = [max(1, math.ceil(n / b)) for n, b in zip(rows, size)]
        return cls(np.array(size, np.int64), np.cumsum([0, *counts]).astype(np.int64))

    def __len__(self) -> int:
        return int(self.base[-1])

    def block(self, src: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """The block of each (source, segment row)."""
        src = np.asarray(src, np.int64)
        return self.base[src] + np.asarray(seg, np.int64) // self.size[src]

    def source(self, block: int) -> int:
        return int(np.searchsorted(self.base, block, side="right") - 1)


def by_partition(table: pa.Table, part: np.ndarray) -> dict[int, pa.Table]:
    """`table`'s rows by partition (`part`: each row's), each partition's in table order."""
    if not table.num_rows:
        return {}
    order = np.argsort(part, kind="stable")
    sorted_parts = part[order]
    table = table.take(pa.array(order))
    cuts = (np.flatnonzero(np.diff(sorted_parts)) + 1).tolist()
    return {int(sorted_parts[a]): table.slice(a, z - a) for a, z in zip([0, *cuts], [*cuts, len(order)])}


@contextmanager
def placed(path: Path) -> Iterator[pa.NativeFile]:
    """A file written under a temporary name beside `path`, then renamed to it."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with pa.OSFile(str(temp), "wb") as f:
        yield f
    os.replace(temp, path)


def send(directory: Path, name: str, out: dict[Hashable, pa.Table], schema: pa.Schema
         ) -> list[tuple[Hashable, str, int, int]]:
    """`out`'s tables into one file, `<name>.arrow`, a record batch per destination (in
    destination order), placed by rename; [(destination, file, batch, rows)]."""
    if not out:
        return []
    path = directory / f"{name}.arrow"
    sent = []
    with placed(path) as f, pa.ipc.new_file(f, schema, options=IPC_OPTIONS) as w:
        for i, dest in enumerate(sorted(out)):  # type: ignore[type-var]
            table = out[dest].combine_chunks()
            w.write_table(table, max_chunksize=max(1, table.num_rows))
            sent.append((dest, path.name, i, table.num_rows))
    return sent


def received(directory: Path, batches: list[Batch], schema: pa.Schema) -> pa.Table:
    """A partition's rows from the batches sent to it, in file-name order."""
    parts = []
    for name, i in sorted(batches):
        with pa.OSFile(str(directory / name)) as f:
            parts.append(pa.Table.from_batches([pa.ipc.open_file(f).get_batch(i)]))
    return pa.concat_tables(parts) if parts else schema.empty_table()


def write_table(path: Path, table: pa.Table) -> None:
    """One task's table, placed by rename."""
    with placed(path) as f, pa.ipc.new_file(f, table.schema, options=IPC_OPTIONS) as w:
        w.write_table(table)


def read_table(path: Path) -> pa.Table:
    with pa.OSFile(str(path)) as f:
        return pa.ipc.open_file(f).read_all()
