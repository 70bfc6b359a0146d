"""Rows between tasks through files (the build's exchange directory, which every worker sees): a
task writes one Arrow IPC file with a record batch per destination partition, the destinations
listed in the file's schema metadata, and returns how many rows each got; a task of the next step
reads its batch from each file the step before wrote. So the driver keeps, per step, the names of
the files and the rows per destination: counts per task, never per pair of tasks.
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


DESTINATIONS = b"dsc.destinations"  # an exchange file's schema metadata: each batch's destination, a line each


@dataclass(frozen=True)
class Sent:
    """What a task sent: its file (None: nothing) and the rows each destination got."""

    file: str | None
    rows: dict[Hashable, int]


def with_destinations(schema: pa.Schema, destinations: list[Hashable]) -> pa.Schema:
    """`schema` naming the destination of each record batch of a file, in batch order."""
    return schema.with_metadata({DESTINATIONS: "\n".join(map(str, destinations)).encode()})


def send(directory: Path, name: str, out: dict[Hashable, pa.Table], schema: pa.Schema) -> Sent:
    """`out`'s tables into one file, `<name>.arrow`, a record batch per destination (in
    destination order), placed by rename."""
    if not out:
        return Sent(None, {})
    path = directory / f"{name}.arrow"
    dests = sorted(out)  # type: ignore[type-var]
    rows = {}
    schema = with_destinations(schema, dests)
    with placed(path) as f, pa.ipc.new_file(f, schema, options=IPC_OPTIONS) as w:
        for dest in dests:
            table = out[dest].combine_chunks()
            w.write_table(table.replace_schema_metadata(schema.metadata), max_chunksize=max(1, table.num_rows))
            rows[dest] = table.num_rows
    return Sent(path.name, rows)


def find(directory: Path, files: list[str], wanted: list[Hashable]) -> dict[Hashable, list[Batch]]:
    """Per destination in `wanted`, its batches in `files` (each file lists its destinations), in
    file-name order."""
    keys = {str(d): d for d in wanted}
    out: dict[Hashable, list[Batch]] = {d: [] for d in wanted}
    for name in sorted(files):
        with pa.OSFile(str(directory / name)) as f:
            dests = pa.ipc.open_file(f).schema.metadata[DESTINATIONS].decode().split("\n")
        for i, key in enumerate(dests):
            if key in keys:
                out[keys[key]].append((name, i))
    return out


def received(directory: Path, files: list[str], dest: Hashable, schema: pa.Schema) -> pa.Table:
    """A destination's rows from the batches sent to it in `files`, in file-name order."""
    key = str(dest)
    parts = []
    for name in sorted(files):
        with pa.OSFile(str(directory / name)) as f:
            reader = pa.ipc.open_file(f)
            dests = reader.schema.metadata[DESTINATIONS].decode().split("\n")
            if key in dests:
                parts.append(pa.Table.from_batches([reader.get_batch(dests.index(key))]).replace_schema_metadata())
    return pa.concat_tables(parts) if parts else schema.empty_table()


class Mailroom:
    """The driver's side of the exchange: per step, the files sent to it and the rows each of its
    partitions got. Destinations are (step, partition), or partitions of the one step `add`
    names."""

    def __init__(self) -> None:
        self.files: dict[Hashable, dict[str, None]] = {}  # step → its files, as an ordered set
        self.rows: dict[tuple[Hashable, int], int] = {}

    def add(self, sent: Sent, step: Hashable = None) -> None:
        for dest, n in sent.rows.items():
            key = dest if step is None else (step, dest)
            self.files.setdefault(key[0], {})[sent.file] = None  # type: ignore[index]
            self.rows[key] = self.rows.get(key, 0) + n  # type: ignore[index]

    def take(self, step: Hashable = None) -> tuple[list[str], dict[int, int]]:
        """The step's files, and its partitions that got rows (in partition order) with their
        rows; the driver keeps neither past this."""
        parts = {p: self.rows.pop((s, p)) for s, p in sorted(k for k in self.rows if k[0] == step)}  # type: ignore[type-var]
        return list(self.files.pop(step, {})), parts


def write_table(path: Path, table: pa.Table) -> None:
    """One task's table, placed by rename."""
    with placed(path) as f, pa.ipc.new_file(f, table.schema, options=IPC_OPTIONS) as w:
        w.write_table(table)


def read_table(path: Path) -> pa.Table:
    with pa.OSFile(str(path)) as f:
        return pa.ipc.open_file(f).read_all()
