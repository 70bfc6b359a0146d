"""Rows between tasks through files (the build's exchange directory, which every worker sees): a
task writes one Arrow IPC file with a record batch per destination partition, the destinations
listed in the file's schema metadata, and returns how many rows each got; a task of the next step
reads its batch from each file the step before wrote, and finds as many rows as the driver
counted. So the driver keeps, per step, the names of the files and the rows per destination:
counts per task, never per pair of tasks; a step's files go once its tasks have read them.
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
from typing import Any

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

    @classmethod
    def spread(cls, rows: list[int], selected: list[int], per_block: list[int]) -> "SegmentBlocks":
        """Blocks of about `per_block` selected rows each, taking the `selected` rows (copies
        included) as spread evenly over each segment's `rows`: a task per block, not per run of
        segment rows, whatever share of a source the spec selects."""
        return cls.of(rows, [max(1, n if k <= b else math.ceil(n * b / k)) for n, k, b in zip(rows, selected, per_block)])

    def __len__(self) -> int:
        return int(self.base[-1])

    def block(self, src: np.ndarray, seg: np.ndarray) -> np.ndarray:
        """The block of each (source, segment row)."""
        src = np.asarray(src, np.int64)
        return self.base[src] + np.asarray(seg, np.int64) // self.size[src]

    def source(self, block: int) -> int:
        return int(np.searchsorted(self.base, block, side="right") - 1)

    def span(self, block: int) -> tuple[int, int, int]:
        """(source, first row, last row) of a block."""
        s = self.source(block)
        first = (block - int(self.base[s])) * int(self.size[s])
        return s, first, first + int(self.size[s]) - 1


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


DESTINATIONS = b"dsc.destinations"  # an exchange file's schema metadata: each batch's destination, int64s

Dest = int | tuple[int, int]  # a partition, or (step, partition)


def _code(dest: Dest) -> int:
    """A destination as one int64: a partition (under 2**32) as itself, (step, partition) with
    step + 1 in the high 32 bits."""
    return ((int(dest[0]) + 1) << 32) | int(dest[1]) if isinstance(dest, tuple) else int(dest)


@dataclass(frozen=True)
class Sent:
    """What a task sent: its file (None: nothing) and the rows each destination got."""

    file: str | None
    rows: dict[Dest, int]


def with_destinations(schema: pa.Schema, destinations: list[Dest]) -> pa.Schema:
    """`schema` naming the destination of each record batch of a file, in batch order (ascending)."""
    return schema.with_metadata({DESTINATIONS: np.array([_code(d) for d in destinations], "<i8").tobytes()})


def send(directory: Path, name: str, out: dict[Dest, pa.Table], schema: pa.Schema) -> Sent:
    """`out`'s tables into one file, `<name>.arrow`, a record batch per destination (in
    destination order), placed by rename."""
    if not out:
        return Sent(None, {})
    path = directory / f"{name}.arrow"
    dests = sorted(out, key=_code)
    rows = {}
    schema = with_destinations(schema, dests)
    with placed(path) as f, pa.ipc.new_file(f, schema, options=IPC_OPTIONS) as w:
        for dest in dests:
            table = out[dest].combine_chunks()
            w.write_table(table.replace_schema_metadata(schema.metadata), max_chunksize=max(1, table.num_rows))
            rows[dest] = table.num_rows
    return Sent(path.name, rows)


def _batches(directory: Path, files: list[str], wanted: list[Dest]) -> Iterator[tuple[str, int, Dest, Any]]:
    """(file, batch, destination, the file's reader, open) for each batch sent to a destination
    in `wanted`, file by file in file-name order."""
    codes = np.array([_code(d) for d in wanted], np.int64)
    for name in sorted(files):
        with pa.OSFile(str(directory / name)) as f:
            reader = pa.ipc.open_file(f)
            held = np.frombuffer(reader.schema.metadata[DESTINATIONS], "<i8")
            at = np.minimum(np.searchsorted(held, codes), len(held) - 1)
            for k in np.flatnonzero(held[at] == codes).tolist():
                yield name, int(at[k]), wanted[k], reader


def find(directory: Path, files: list[str], wanted: list[Dest]) -> dict[Dest, list[Batch]]:
    """Per destination in `wanted`, its batches in `files` (each file lists its destinations), in
    file-name order."""
    out: dict[Dest, list[Batch]] = {d: [] for d in wanted}
    for name, i, dest, _ in _batches(directory, files, wanted):
        out[dest].append((name, i))
    return out


def received(directory: Path, files: list[str], dest: Dest, schema: pa.Schema, rows: int) -> pa.Table:
    """A destination's rows from the batches sent to it in `files`, in file-name order; `rows`:
    how many the driver counted (a missing or stale file is an error, not fewer rows)."""
    parts = [pa.Table.from_batches([reader.get_batch(i)]).replace_schema_metadata()
             for _, i, _, reader in _batches(directory, files, [dest])]
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    if table.num_rows != rows:
        raise RuntimeError(f"the build's exchange lost rows: partition {dest} got {table.num_rows} of {rows}")
    return table


def remove(directory: Path, files: list[str]) -> None:
    """Files every task that reads them has read."""
    for name in files:
        (directory / name).unlink(missing_ok=True)


class Mailroom:
    """The driver's side of the exchange: per step, the files sent to it and the rows each of its
    partitions got. Destinations are (step, partition), or partitions of the one step `add`
    names. A file can serve several steps (rows that pass a step by go to the next one): it can
    go once each has been read (`read`)."""

    def __init__(self) -> None:
        self.files: dict[Hashable, dict[str, None]] = {}  # step → its files, as an ordered set
        self.rows: dict[tuple[Hashable, int], int] = {}
        self.readers: dict[str, set[Hashable]] = {}  # file → the steps still to read it

    def add(self, sent: Sent, step: Hashable = None) -> None:
        for dest, n in sent.rows.items():
            key = dest if step is None else (step, dest)
            self.files.setdefault(key[0], {})[sent.file] = None  # type: ignore[index]
            self.readers.setdefault(sent.file, set()).add(key[0])  # type: ignore[arg-type,index]
            self.rows[key] = self.rows.get(key, 0) + n  # type: ignore[index]

    def take(self, step: Hashable = None) -> tuple[list[str], dict[int, int]]:
        """The step's files, and its partitions that got rows (in partition order) with their
        rows; the driver keeps neither past this."""
        parts = {p: self.rows.pop((s, p)) for s, p in sorted(k for k in self.rows if k[0] == step)}  # type: ignore[type-var]
        return list(self.files.pop(step, {})), parts

    def read(self, step: Hashable, files: list[str]) -> list[str]:
        """`step`'s tasks have read `files` (its `take`): those no other step still reads."""
        done = []
        for name in files:
            steps = self.readers[name]
            steps.discard(step)
            if not steps:
                del self.readers[name]
                done.append(name)
        return done


def write_table(path: Path, table: pa.Table) -> None:
    """One task's table, placed by rename."""
    with placed(path) as f, pa.ipc.new_file(f, table.schema, options=IPC_OPTIONS) as w:
        w.write_table(table)


def read_table(path: Path) -> pa.Table:
    with pa.OSFile(str(path)) as f:
        return pa.ipc.open_file(f).read_all()
