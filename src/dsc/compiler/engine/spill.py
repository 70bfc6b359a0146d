"""Writing the artifact's splits in output order from rows spread over many files.

Rows come from their segments and rendered parts in storage order, but the artifact wants them
in output order (a seeded hash). `distribute` gathers every written row (segment columns +
rendered columns, copies and escaped contents applied) into `Spill` buckets, each a range of
output positions laid out by `Layout` along the shards' row groups; `write_splits` then reads
the buckets back one at a time and writes each split's shards. An external distribution sort:
memory holds a bucket, never the corpus.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dsc.artifact.inspection import ArtifactStats
from dsc.artifact.reader import split_sort_key
from dsc.compiler.engine.context import BuildContext
from dsc.compiler.engine.normalise import CHUNK_ROWS
from dsc.compiler.engine.rendering import RenderedRows, RowsInFlight
from dsc.compiler.engine.rowfiles import IPC_OPTIONS, ArrowFile
from dsc.compiler.engine.selected import SelectedRows
from dsc.compiler.engine.tally import Tally
from dsc.compiler.stages.write import artifact as art
from dsc.core.hashing import sha256_file
from dsc.spec.model import Spec

BUCKET_ROWS = 4096  # rows per spill bucket (a few row groups; tens of MB)
# Output rows gathered before they are distributed to the buckets (whichever limit comes first).
SPILL_FLUSH_ROWS = 8192
SPILL_FLUSH_BYTES = 48 << 20
_POS = "__pos"


class Layout:
    """Where each written row goes: its position in the output (splits one after another), the
    row groups (shards cut row groups as write_split does) and the spill buckets over them."""

    def __init__(self, split_rows: dict[str, np.ndarray], shard_rows: int, row_group_rows: int):
        self.split_rows = split_rows  # split → selected rows written, in output order
        self.row_groups: dict[str, list[tuple[int, int]]] = {}  # split → [(start, end)] output positions
        self.buckets: list[tuple[str, int, int]] = []  # (split, start, end)
        start = 0
        for name, rows in split_rows.items():
            groups, at = [], 0
            while at < len(rows):
                end = min(len(rows), at + min(row_group_rows, shard_rows - at % shard_rows))
                groups.append((start + at, start + end))
                at = end
            self.row_groups[name] = groups
            b0 = None
            for a, b in groups:
                if b0 is None:
                    b0 = a
                elif b - b0 > BUCKET_ROWS:
                    self.buckets.append((name, b0, a))
                    b0 = a
            if b0 is not None:
                self.buckets.append((name, b0, start + len(rows)))
            start += len(rows)
        self.starts = np.array([b[1] for b in self.buckets], np.int64)


class Spill:
    """Output rows distributed into files by output position (each file a range of positions),
    then read back a file at a time in order: an external distribution sort, so that writing in
    output order never reads the segments out of order."""

    def __init__(self, tmp_root: Path, layout: Layout, tokenized: bool, weighted: bool):
        self.layout = layout
        self.schema = art.row_schema(tokenized, weighted)
        self.dir = Path(tempfile.mkdtemp(prefix="spill-", dir=tmp_root))
        self._writers: dict[int, tuple[Any, Any]] = {}
        self._pending: list[pa.Table] = []  # rows added but not yet distributed
        self._pending_rows = self._pending_bytes = 0

    def __enter__(self) -> "Spill":
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self._pending = []  # failed: nothing more to write
        self._close_writers()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _close_writers(self) -> None:
        self._flush()
        for w, f in self._writers.values():
            w.close()
            f.close()
        self._writers.clear()

    def add(self, table: pa.Table, positions: np.ndarray) -> None:
        self._pending.append(table.append_column(_POS, pa.array(positions, pa.int64())))
        self._pending_rows += table.num_rows
        self._pending_bytes += table.nbytes
        if self._pending_rows >= SPILL_FLUSH_ROWS or self._pending_bytes >= SPILL_FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        """Distribute the pending rows: one sorted pass, one slice per bucket. Rows arrive in
        seeded-hash order, so a small batch would touch every bucket with a row or two each:
        writes (and batches to read back) would grow with rows × buckets."""
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        bucket = np.searchsorted(self.layout.starts, table.column(_POS).to_numpy(), side="right") - 1
        order = np.argsort(bucket, kind="stable")
        table, bucket = table.take(pa.array(order)), bucket[order]
        cuts = np.flatnonzero(np.diff(bucket)) + 1
        for a, z in zip([0, *cuts.tolist()], [*cuts.tolist(), len(bucket)]):
            b = int(bucket[a])
            if b not in self._writers:
                f = pa.OSFile(str(self.dir / f"{b:06d}.arrows"), "wb")
                self._writers[b] = (pa.ipc.new_stream(f, table.schema, options=IPC_OPTIONS), f)
            self._writers[b][0].write_table(table.slice(a, z - a))

    def tables(self, split: str) -> Iterator[pa.Table]:
        """The split's rows in output order, a row group per table."""
        self._close_writers()
        groups = self.layout.row_groups.get(split, [])
        g = 0
        for b, (name, start, end) in enumerate(self.layout.buckets):
            if name != split:
                continue
            path = self.dir / f"{b:06d}.arrows"
            with pa.OSFile(str(path)) as f:
                table = pa.ipc.open_stream(f).read_all().combine_chunks()
            path.unlink()
            order = np.argsort(table.column(_POS).to_numpy(), kind="stable")
            table = table.drop_columns([_POS])
            assert table.num_rows == end - start, "every row of a bucket is written once"
            while g < len(groups) and groups[g][1] <= end:
                a, z = groups[g]
                yield table.take(pa.array(order[a - start:z - start]))
                g += 1
            del table


def distribute(spill: Spill, layout: Layout, chosen: SelectedRows, rendered: list[RenderedRows]) -> None:
    """Every written row, assembled from its segment and its rendered part, into the spill.

    Reads go part by part, each part's rows in order, so segments and parts are read in order."""
    position = np.full(len(chosen.rows), -1, np.int64)
    at = 0
    for rows in layout.split_rows.values():
        position[rows] = np.arange(at, at + len(rows))
        at += len(rows)
    written = np.flatnonzero(position >= 0)
    seg_columns = ["id", "group", "messages", "tools", "meta"]
    ren_columns = [f.name for f in spill.schema if f.name not in seg_columns] + ["messages"]
    src, seg_row, suffix = chosen.src, chosen.seg, chosen.rows.suffix
    for s in np.unique(src[written]).tolist():
        mine = written[src[written] == s]
        r = rendered[s]
        part = r.part[seg_row[mine]]
        with chosen.sources.segments[s].open_rows(seg_columns) as segment:
            for p in np.unique(part).tolist():
                rows = mine[part == p]
                rows = rows[np.argsort(r.pos[seg_row[rows]], kind="stable")]
                with ArrowFile(r.parts[p], ren_columns) as f:
                    for start in range(0, len(rows), CHUNK_ROWS):  # a few MB at a time
                        some = rows[start:start + CHUNK_ROWS]
                        out = output_table(spill.schema, segment.take(seg_row[some]), f.take(r.pos[seg_row[some]]),
                                            suffix[some])
                        spill.add(out, position[some])


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


def write_splits(tmp: Path, spill: Spill, written: dict[str, int], spec: Spec, *, tokenized: bool,
                 weighted: bool) -> tuple[dict[str, str], ArtifactStats]:
    """Every split's shards from the spill, into the staged artifact `tmp`: ({file: sha256},
    the card's counts, taken from the rows as they are written, not read back)."""
    files: dict[str, str] = {}
    stats = ArtifactStats(tokenised=tokenized)
    for name in sorted(written, key=split_sort_key):
        stats.start_split(name)
    for name, n_rows in written.items():
        names = art.write_split(tmp, name, _counted(spill.tables(name), stats, name), n_rows,
                                tokenized=tokenized, weighted=weighted, shard_rows=spec.output.shard_rows,
                                row_group_rows=spec.output.row_group_rows)
        for n in names:
            files[n] = sha256_file(tmp / n)
    return files, stats


def write_rows(tmp: Path, spill_dir: Path, spec: Spec, ctx: BuildContext, rows: RowsInFlight, counts: Tally
               ) -> tuple[dict[str, str], ArtifactStats, dict[str, Any]]:
    """The shards of every split, into the staged artifact `tmp`: the rows are spilled in output
    order, then let go (`rows.release()`), then written. ({file: sha256}, the card's counts, the
    selection report for the manifest)."""
    tokenized = ctx.tokenizer is not None
    layout = Layout(counts.split_rows, spec.output.shard_rows, spec.output.row_group_rows)
    with Spill(spill_dir, layout, tokenized, ctx.weighted) as spill:
        distribute(spill, layout, rows.chosen, rows.rendered)
        selection_report = rows.chosen.selection.report
        rows.release()
        counts.split_rows.clear()
        files, stats = write_splits(tmp, spill, counts.written, spec, tokenized=tokenized, weighted=ctx.weighted)
    return files, stats, selection_report
