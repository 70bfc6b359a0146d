"""Writing the artifact's splits in output order, as tasks on the build's executor: the driver
lays the output out and keeps only counts; rows move between tasks through files.

Rows come from their segments and rendered parts in storage order, but the artifact wants them
in output order (a seeded hash). An external distribution sort, memory holding a task's rows,
never the corpus:

1. `Layout` (driver): each shard's row groups, cut as `write_split` cuts them, and spill buckets
   of consecutive row groups (a bucket never crosses a shard, so a shard is written from its own
   buckets only).
2. `route_rows` (a task per route block: consecutive rows of one source's segment): the written
   rows the ranges sent it (`engine.tally`), each at its output position (its range's first
   position, from the driver, plus its rank), made into artifact rows (segment + rendered
   columns, copies and escaped contents applied), read part by part in part order, sorted by
   output position, one Arrow IPC file per flush, `route-<block>-<flush>.arrow`: a record batch
   per bucket the rows fall in, in bucket order; the task returns which buckets, in that order.
   Placed by rename: a task run twice (a retry) leaves the same files. (A file per bucket instead
   would make route tasks × buckets files: rows come in hash order, so every task touches most
   buckets.)
3. `write_shard_file` (a task per shard): for each of its buckets, that bucket's batches (found
   in the route files: each lists its buckets), in file-name order,
   sorted by position, written as one parquet shard and placed by rename in the staged artifact;
   it hands back the shard's hash and its rows' counts, which the driver merges in artifact order,
   and sends its distinct groups to partitions of their hash (`engine.exchange`);
4. `count_groups` (a task per partition of the groups): each split's distinct groups and those
   with rows in two splits, which the driver adds up for the card (the driver never holds every
   group: at a million rows they were most of its memory).

The build's exchange directory (in the build cache's scratch) and the staged artifact must be
visible to every worker: the same machine locally, shared storage on a cluster.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsc.artifact.inspection import ArtifactStats, GroupCounts
from dsc.artifact.manifest import DATA_DIR
from dsc.artifact.reader import split_sort_key
from dsc.compiler.engine import exchange, resources
from dsc.compiler.engine.exchange import SegmentBlocks
from dsc.compiler.engine.context import BuildContext
from dsc.compiler.engine.executors.base import Executor
from dsc.compiler.engine.normalise import CHUNK_ROWS
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.rowfiles import ArrowFile, SegmentInfo, id_hashes
from dsc.compiler.engine.tally import ROUTE_SCHEMA, Tallied
from dsc.compiler.stages.write import artifact as art
from dsc.core.hashing import sha256_file
from dsc.spec.model import Spec

BUCKET_ROWS = 4096  # rows per spill bucket (a few row groups; tens of MB)
# Segment rows per route block: its rows come in seeded-hash order, spread over most buckets, so
# a small block would cut its file into batches of a row or two, each read on its own by a shard
# task; its task holds at most ROUTE_FLUSH_BYTES of them at a time.
ROUTE_ROWS = 8192
ROUTE_FLUSH_BYTES = 48 << 20  # a route task's rows in memory before it writes them to a route file
_POS = "__pos"
SEGMENT_COLUMNS = ["id", "group", "messages", "tools", "meta"]


@dataclass(frozen=True)
class RowFormat:
    """Which artifact row schema the rows are in."""

    tokenized: bool
    weighted: bool

    @property
    def schema(self) -> pa.Schema:
        return art.row_schema(self.tokenized, self.weighted)


@dataclass(frozen=True)
class Bucket:
    number: int  # its place in the output; route files name the bucket of each batch by it
    start: int  # output positions [start, end), the splits one after another
    end: int


@dataclass(frozen=True)
class ShardPlan:
    split: str
    name: str  # the shard's path in the artifact
    row_groups: list[tuple[int, int]]  # [(start, end)] output positions
    buckets: list[Bucket]  # consecutive, covering the row groups


class Layout:
    """Where the written rows go: each split's shards (in artifact order); their row groups, cut
    as `write_split` cuts them (every `row_group_rows` from the shard's start); and the spill
    buckets: consecutive row groups of at most BUCKET_ROWS rows together (or one bigger row
    group), never across a shard, so that a shard task reads its own buckets only."""

    def __init__(self, split_rows: dict[str, int], shard_rows: int, row_group_rows: int):
        self.shards: list[ShardPlan] = []
        self.buckets: list[Bucket] = []
        start = 0
        for split, n in split_rows.items():
            cuts = art.shard_row_groups(n, shard_rows, row_group_rows)
            for name, in_split in zip(art.shard_names(split, n, shard_rows), cuts):
                groups = [(start + g0, start + g1) for g0, g1 in in_split]
                z = groups[-1][1] if groups else start  # the shard's end (an empty split: one empty shard)
                buckets, b0 = [], groups[0][0] if groups else start
                for g0, g1 in groups:
                    if g1 - b0 > BUCKET_ROWS and g0 > b0:
                        buckets.append(Bucket(len(self.buckets) + len(buckets), b0, g0))
                        b0 = g0
                if z > b0:
                    buckets.append(Bucket(len(self.buckets) + len(buckets), b0, z))
                self.buckets += buckets
                self.shards.append(ShardPlan(split, name, groups, buckets))
            start += n
        self.starts = np.array([b.start for b in self.buckets], np.int64)
        self.sizes = np.array([b.end - b.start for b in self.buckets], np.int64)


def route_blocks(segments: list[SegmentInfo], selected: list[int]) -> SegmentBlocks:
    """The route blocks for `selected` rows per source (an upper bound of the rows written)."""
    return SegmentBlocks.spread([seg.rows for seg in segments], selected, [ROUTE_ROWS] * len(segments))


@dataclass(frozen=True)
class RouteTask:
    """A route block's written rows, to route into the spill."""

    number: int  # its block: names its route files
    directory: Path  # the build's exchange, where route files go too
    files: list[str]  # the ranges' files (its rows: a batch in some)
    rows: int  # the written rows sent to the block
    segment: SegmentInfo
    parts_dir: str  # its source's rendered store
    starts: np.ndarray  # per order range: its first output position
    bucket_starts: np.ndarray  # the first output position of every bucket
    form: RowFormat


def route_rows(task: RouteTask) -> dict[str, dict[int, int]]:
    """A route task: its artifact rows, sorted by output position, into route files,
    `ROUTE_FLUSH_BYTES` of rows at a time (a task's memory is bounded in bytes, not only in rows:
    tokenised rows with long tool catalogues are tens of KB each). Returns {route file: {bucket:
    rows}}, each file's buckets in the order of its record batches."""
    t = exchange.received(task.directory, task.files, task.number, ROUTE_SCHEMA, task.rows)
    t = t.take(pc.sort_indices(t, sort_keys=[("part", "ascending"), ("part_pos", "ascending")]))  # reads in order
    position = task.starts[t.column("range").to_numpy()] + t.column("rank").to_numpy()
    seg_rows, part_pos = t.column("seg").to_numpy(), t.column("part_pos").to_numpy()
    suffix = t.column("suffix").to_numpy(zero_copy_only=False)
    part = t.column("part").to_numpy(zero_copy_only=False)
    runs = [0, *(np.flatnonzero(part[1:] != part[:-1]) + 1).tolist(), len(part)]
    schema = task.form.schema
    ren_columns = [f.name for f in schema if f.name not in SEGMENT_COLUMNS] + ["messages"]
    routed: dict[str, dict[int, int]] = {}
    pending: list[pa.Table] = []
    with task.segment.open_rows(SEGMENT_COLUMNS) as segment:
        for r0, r1 in zip(runs, runs[1:]):
            with ArrowFile(Path(task.parts_dir) / part[r0], ren_columns) as rendered:
                for a in range(r0, r1, CHUNK_ROWS):  # read a few MB at a time
                    z = min(a + CHUNK_ROWS, r1)
                    rows = output_table(schema, segment.take(seg_rows[a:z]), rendered.take(part_pos[a:z]), suffix[a:z])
                    pending.append(rows.append_column(_POS, pa.array(position[a:z], pa.int64())))
                    if sum(p.nbytes for p in pending) >= ROUTE_FLUSH_BYTES or z >= len(part):
                        name = f"route-{task.number:06d}-{len(routed):04d}"
                        routed[f"{name}.arrow"] = _write_route_file(task, pa.concat_tables(pending), name)
                        pending = []
    resources.hand_back_freed()  # a worker's next task (a shard's) must not stack on this one's rows
    return routed


def _write_route_file(task: RouteTask, table: pa.Table, name: str) -> dict[int, int]:
    """Rows of a route task, sorted by position, a record batch per bucket, placed by rename (a
    task run again writes the same name with the same bytes). {bucket: rows}, in batch order."""
    positions = table.column(_POS).to_numpy()
    order = np.argsort(positions, kind="stable")
    bucket = np.searchsorted(task.bucket_starts, positions[order], side="right") - 1
    sent = exchange.send(task.directory, name, exchange.by_partition(table.take(pa.array(order)), bucket), table.schema)
    return sent.rows  # type: ignore[return-value]


@dataclass(frozen=True)
class ShardTask:
    number: int  # the shard's place in the artifact
    shard: ShardPlan
    directory: Path  # the build's exchange
    files: list[str]  # the route files (each bucket of the shard: a batch in some)
    out: Path  # the staged artifact
    form: RowFormat
    row_group_rows: int
    group_parts: int  # partitions of the groups' hash, for counting them (`count_groups`)


@dataclass(frozen=True)
class ShardWritten:
    name: str  # the shard's path in the artifact
    sha256: str
    stats: ArtifactStats  # the card's counts of its rows, counted as they were written (not its groups)
    groups: exchange.Sent  # its distinct groups, sent to their partitions


def write_shard_file(task: ShardTask) -> ShardWritten:
    """A shard task: the shard from its buckets, written to a temporary name beside it and
    renamed into place; its distinct groups go to their partitions (the driver never holds
    every group)."""
    stats = ArtifactStats(tokenised=task.form.tokenized)
    final = task.out / task.shard.name
    temp = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
    art.write_shard(temp, task.form.schema, _counted(_row_groups(task), stats, task.shard.split),
                    task.row_group_rows)
    os.replace(temp, final)
    groups = send_groups(task.directory, f"groups-{task.number:06d}", stats.distinct_groups(), task.group_parts)
    stats.groups = {}
    resources.hand_back_freed()  # as after a route task
    return ShardWritten(task.shard.name, sha256_file(final), stats, groups)


GROUPS_SCHEMA = pa.schema([("split", pa.string()), ("group", pa.string())])


def send_groups(directory: Path, name: str, distinct: dict[str, pa.Array], parts: int) -> exchange.Sent:
    """Each split's distinct groups, by partition of a hash of the group, into one exchange file."""
    if not distinct:
        return exchange.Sent(None, {})
    t = pa.concat_tables([pa.table({"split": pa.array([split] * len(groups), pa.string()),
                                    "group": groups.cast(pa.string())}) for split, groups in distinct.items()])
    part = (id_hashes(t.column("group").to_pylist()) % np.uint64(parts)).astype(np.int64)
    return exchange.send(directory, name, exchange.by_partition(t, part), GROUPS_SCHEMA)  # type: ignore[arg-type]


@dataclass(frozen=True)
class GroupTask:
    directory: Path
    files: list[str]  # the shards' group files
    part: int
    rows: int  # the groups sent to it


def count_groups(task: GroupTask) -> GroupCounts:
    """A partition of the groups: each split's distinct groups, and those in two splits."""
    t = exchange.received(task.directory, task.files, task.part, GROUPS_SCHEMA, task.rows)
    split = t.column("split")
    distinct = {s: pc.unique(t.column("group").filter(pc.equal(split, s))) for s in pc.unique(split).to_pylist()}
    return GroupCounts.of(distinct)


def _row_groups(task: ShardTask) -> Iterator[pa.Table]:
    """The shard's rows in output order, a row group per table."""
    groups, g = task.shard.row_groups, 0
    # file-name order, not the order the route tasks finished in: the same table on every run
    found = exchange.find(task.directory, task.files, [b.number for b in task.shard.buckets])
    for bucket in task.shard.buckets:
        parts = found.pop(bucket.number)
        table = pa.Table.from_batches([_read_batch(task.directory / name, i) for name, i in parts]).combine_chunks()
        order = np.argsort(table.column(_POS).to_numpy(), kind="stable")
        table = table.drop_columns([_POS])
        assert table.num_rows == bucket.end - bucket.start, "every row of a bucket is routed once"
        while g < len(groups) and groups[g][1] <= bucket.end:
            a, z = groups[g]
            yield table.take(pa.array(order[a - bucket.start:z - bucket.start]))
            g += 1
        del table  # before the next bucket is read: one bucket in memory at a time


def _read_batch(path: Path, i: int) -> pa.RecordBatch:
    # a file at a time, not all kept open: a shard may need a file of every route task
    with pa.OSFile(str(path)) as f:
        return pa.ipc.open_file(f).get_batch(i).replace_schema_metadata()  # the file's destinations


def _counted(tables: Iterator[pa.Table], stats: ArtifactStats, split: str) -> Iterator[pa.Table]:
    for table in tables:
        for batch in table.to_batches():
            stats.add_batch(split, batch)
        yield table


def output_table(schema: pa.Schema, seg: pa.Table, ren: pa.Table, suffix: np.ndarray) -> pa.Table:
    """Artifact rows from segment columns and rendered columns (copies and escaped contents applied)."""
    ids, meta, messages = seg.column("id"), seg.column("meta"), seg.column("messages")
    if any(suffix):  # copies: `<id>#k` and a `copy:k` provenance step each
        ids = pa.array([i + s for i, s in zip(ids.to_pylist(), suffix)], pa.string())
        metas = meta.to_pylist()
        for m, s in zip(metas, suffix):
            m["provenance"]["steps"] = list(m["provenance"]["steps"]) + [f"copy:{k}" for k in s.split("#")[1:]]
        meta = pa.array(metas, art.META_TYPE)
    escaped = ren.column("messages")
    if escaped.null_count < len(escaped):
        messages = pa.array([e if e is not None else m for e, m in zip(escaped.to_pylist(), messages.to_pylist())],
                            schema.field("messages").type)
    columns = {"id": ids, "group": seg.column("group"), "messages": messages, "tools": seg.column("tools"),
               "meta": meta}
    columns.update({n: ren.column(n) for n in ren.column_names if n != "messages"})
    return pa.Table.from_arrays([_one_chunk(columns[f.name]) for f in schema], schema=schema)


def _one_chunk(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def write_rows(tmp: Path, spec: Spec, ctx: BuildContext, read_segments: list[SegmentInfo], parts_dirs: list[str],
               tallied: Tallied, blocks: SegmentBlocks, directory: Path, ex: Executor, progress: Progress
               ) -> tuple[dict[str, str], ArtifactStats]:
    """The shards of every split, into the staged artifact `tmp`, by tasks on `ex`: the written
    rows are routed into route files in the build's exchange `directory`, then each shard is
    written from its buckets; progress in two stages, "route rows" (rows) and "write shards"
    (shards). ({file: sha256}, the card's counts)."""
    form = RowFormat(ctx.tokenizer is not None, ctx.weighted)
    counts = tallied.counts
    layout = Layout(counts.written, spec.output.shard_rows, spec.output.row_group_rows)
    routes = []
    for b, rows in tallied.to_route.items():
        s = blocks.source(b)
        routes.append(RouteTask(b, directory, tallied.files, rows, read_segments[s], parts_dirs[s], tallied.starts,
                                layout.starts, form))
    routed = np.zeros(len(layout.buckets), np.int64)
    route_files: list[str] = []
    progress.start("route rows", int(layout.sizes.sum()))
    for done in ex.map(route_rows, routes):
        for name, held in done.items():
            route_files.append(name)
            for b, n in held.items():
                routed[b] += n
            progress.advance(sum(held.values()))
    progress.done()
    del routes
    exchange.remove(directory, tallied.files)
    assert np.array_equal(routed, layout.sizes), "every written row is routed once"

    stats = ArtifactStats(tokenised=form.tokenized)
    for name in sorted(counts.written, key=split_sort_key):
        stats.start_split(name)
    files: dict[str, str] = {}
    group_parts = exchange.partitions(int(layout.sizes.sum()), ex.workers)
    shards = [ShardTask(i, plan, directory, route_files, tmp, form, spec.output.row_group_rows, group_parts)
              for i, plan in enumerate(layout.shards)]
    progress.start("write shards", len(shards))
    mail = exchange.Mailroom()
    for done in ex.map(write_shard_file, shards):
        files[done.name] = done.sha256
        stats.merge(done.stats)  # in artifact order: the counts of one pass over the rows
        mail.add(done.groups, "groups")
        progress.advance()
    stats.counted_groups = GroupCounts()
    group_files, group_rows = mail.take("groups")
    exchange.remove(directory, route_files)
    for counted in ex.map(count_groups, [GroupTask(directory, group_files, p, n) for p, n in group_rows.items()]):
        stats.counted_groups.merge(counted)
    progress.done()
    exchange.remove(directory, group_files)
    # A shard task killed mid-write (then retried) leaves its temporary behind.
    for stray in (tmp / DATA_DIR).glob(".*.tmp"):
        stray.unlink()
    return files, stats
