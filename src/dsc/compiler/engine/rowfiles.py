"""On-disk files between the build's stages (Arrow IPC).

- **Normalised segment** (stage 1, one per source): pieces `rows-NNNNNN.arrow`, one per input
  range (`stages.read.ranges`), written by the workers that read the ranges; laid end to end
  they hold every row the source's rows became after normalisation and the row transforms, in
  read order, in the artifact's row shape (id, group, messages, tools, meta; JSON strings keep
  their keys in the data's order, as the artifact stores them and templates render them).
  `keys.arrow` holds the compact selection keys of the rows kept after in-source exact-duplicate
  removal (`row` numbers the rows across the pieces); `quarantine.jsonl` the source's rejected
  rows; `segment.json` its counts and pieces. A worker writes a piece with its keys and
  quarantine beside it (`PieceWriter`); a task per source merges them (`finish_segment`), and
  the driver removes them once the merge is in place (`remove_piece_files`).
- **Rendered parts** (stage 3, per source): render + tokenise results per row of a normalised
  segment (`row`), immutable files that later builds add to (see `dsc.compiler.engine.cache`).

Nothing here holds a whole source as Python objects: rows come in and go out in record batches,
and files are read a record batch at a time (`ArrowFile`, `SegmentRows`), so reading a large
segment does not grow the process's memory. Workers write each file under a temporary name and
rename it into place, so a task run twice (a retry) leaves what one run leaves.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsc.compiler.stages.select.mix import KeyTable, RowClass, merge_classes
from dsc.compiler.stages.write import artifact as art
from dsc.core.canonical import canonical_json
from dsc.record import Conversation

SEGMENT_FORMAT = 2
KEYS_FILE = "keys.arrow"
QUARANTINE_FILE = "quarantine.jsonl"
META_FILE = "segment.json"
# Rows per record batch of a piece: a read costs the whole batches it touches (readers go in
# row order, so each once), and the writer buffers one batch (a few MB).
SEGMENT_BATCH_ROWS = 4096

_ROW_FIELDS = ("id", "group", "messages", "tools", "meta")


def segment_schema() -> pa.Schema:
    base = art.row_schema(False)
    return pa.schema([base.field(n) for n in _ROW_FIELDS])


KEYS_SCHEMA = pa.schema([
    ("row", pa.int64()),  # the row's number across the pieces
    ("id", pa.string()),
    ("group", pa.string()),  # null where the group is the id
    ("cls", pa.int32()),  # index into segment.json `classes`
    ("dedup", pa.uint64()),
    ("chars", pa.int64()),
    ("tokens", pa.float64()),
])


def rendered_schema(tokenized: bool, weighted: bool = False) -> pa.Schema:
    base = art.row_schema(tokenized, weighted)
    fields = [
        pa.field("row", pa.int64()),
        pa.field("status", pa.int8()),  # RenderStatus
        pa.field("reason", pa.string()),
        pa.field("n_tokens", pa.int64()),
        base.field("text"), base.field("loss_spans"),
        pa.field("span_chars", pa.int64()),
        pa.field("sup_tokens", pa.int64()),
        pa.field("truncated", pa.bool_()),
        pa.field("special", pa.list_(pa.string())),
        pa.field("messages", base.field("messages").type),  # escaped contents; null when unchanged
    ]
    if weighted:
        fields.append(base.field("loss_weights"))
    if tokenized:
        fields += [base.field("input_ids"), base.field("labels")]
        if weighted:
            fields.append(base.field("weights"))
    return pa.schema(fields)


class RenderStatus:
    OK = 0
    RENDER_FAILED = 1  # BadRow while applying the special-token policy or rendering
    TOO_LONG = 2  # overflow: drop (recorded, not a bad row)
    UNSUPERVISED = 3  # nothing supervised after truncation
    TOO_LONG_ERROR = 4  # overflow: error (the build fails naming the first such row)


# ---------------------------------------------------------------------------------------------
# Files: checksummed writing, memory-mapped reading
# ---------------------------------------------------------------------------------------------


class ChecksumFile:
    """A write-only file that keeps the CRC-32 and size of what was written (for `entry.json`)."""

    def __init__(self, path: Path):
        self._f: BinaryIO = open(path, "wb")
        self.crc = 0
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        mv = memoryview(data)
        self.crc = zlib.crc32(mv, self.crc)
        self.size += mv.nbytes
        return self._f.write(mv)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            self.closed = True


def file_crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 23), b""):
            crc = zlib.crc32(chunk, crc)
    return crc


# Intermediate files (segments, rendered parts, the output spill) are written once and read once
# or twice, a whole batch at a time. LZ4 makes them ~2× smaller at a fraction of zstd's cost
# (measured on 20k output rows, 200 MiB: zstd writes in 5.1 s and reads in 3.3 s, LZ4 in 1.35 s
# and 0.4 s, for 95 MiB against zstd's 62 MiB); the artifact itself is zstd parquet.
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


class ArrowFileWriter:
    """An Arrow IPC file (zstd-compressed buffers) written through a ChecksumFile."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.file = ChecksumFile(path)
        self._sink = pa.PythonFile(self.file, mode="w")
        self._writer = pa.ipc.new_file(self._sink, schema, options=IPC_OPTIONS)

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows:
            if isinstance(batch, pa.Table):
                self._writer.write_table(batch)
            else:
                self._writer.write_batch(batch)

    def close(self) -> tuple[int, int]:
        """(size, crc32) of the finished file."""
        self._writer.close()
        self._sink.close()
        self.file.close()
        return self.file.size, self.file.crc


class ArrowFile:
    """An Arrow IPC file read a record batch at a time with positioned reads.

    Not memory-mapped on purpose: a scattered read through a mapping makes the kernel map the
    pages around every row touched (fault-around), which counts as this process's memory;
    reading whole batches costs the batches touched and nothing stays resident after."""

    def __init__(self, path: Path | str, columns: list[str] | None = None, batch_rows: list[int] | None = None):
        self.path = Path(path)
        self._file = pa.OSFile(str(self.path))
        schema = pa.ipc.open_file(self._file).schema
        self._full_schema = schema
        self.columns = list(columns) if columns is not None else schema.names
        options = pa.ipc.IpcReadOptions(included_fields=[schema.get_field_index(c) for c in self.columns])
        self._reader = pa.ipc.open_file(self._file, options=options)
        self.schema = pa.schema([schema.field(c) for c in self.columns])
        self._offsets = np.cumsum([0] + batch_rows).astype(np.int64) if batch_rows is not None else None
        self._last: tuple[int, pa.RecordBatch] | None = None

    def __enter__(self) -> "ArrowFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._last = None
        self._file.close()

    @property
    def num_batches(self) -> int:
        return self._reader.num_record_batches

    def batch(self, i: int) -> pa.RecordBatch:
        # the last batch read is kept: readers go in row order, often several times into one batch
        if self._last is None or self._last[0] != i:
            self._last = (i, self._reader.get_batch(i))
        return self._last[1]

    def offsets(self) -> np.ndarray:
        """First row of each batch, and the row count at the end."""
        if self._offsets is None:  # count rows reading only the first column
            reader = pa.ipc.open_file(self._file, options=pa.ipc.IpcReadOptions(included_fields=[0]))
            sizes = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
            self._offsets = np.cumsum([0] + sizes).astype(np.int64)
        return self._offsets

    def read_all(self) -> pa.Table:
        return self._reader.read_all()

    def take(self, rows: np.ndarray) -> pa.Table:
        """Rows by number, in the order given, as one table; each batch holding some is read once."""
        return take_grouped(rows, self.offsets(), lambda c, r: pa.Table.from_batches([self.batch(c).take(r)]),
                            self.schema)


def take_grouped(rows: np.ndarray, starts: np.ndarray, take_part: Any, schema: pa.Schema) -> pa.Table:
    """Rows by number from parts laid end to end (`starts`: each part's first row, then the
    total), in the order given (`take_by_part`)."""
    rows = np.asarray(rows, np.int64)
    part = np.searchsorted(starts, rows, side="right") - 1
    return take_by_part(part, rows - starts[part], take_part, schema)


def take_by_part(part: np.ndarray, pos: np.ndarray, take_part: Any, schema: pa.Schema) -> pa.Table:
    """Rows given as (part, row within it), in the order given: `take_part(part, rows within
    it)` is called once per part holding some, in part order, so that every part is read once
    and in order."""
    by_part = np.argsort(part, kind="stable")
    sorted_parts = part[by_part]
    bounds = np.flatnonzero(np.r_[True, sorted_parts[1:] != sorted_parts[:-1], True]) if len(part) else []
    pieces = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        pieces.append(take_part(int(sorted_parts[a]), np.asarray(pos[by_part[a:b]], np.int64)))
    if not pieces:
        return schema.empty_table()
    table = pa.concat_tables(pieces)  # chunks kept as they are: no second copy of a huge row
    if np.all(by_part[1:] > by_part[:-1]):
        return table
    inverse = np.empty(len(part), np.int64)
    inverse[by_part] = np.arange(len(part))
    return table.take(pa.array(inverse))


class SegmentRows:
    """The rows of a normalised segment's pieces, numbered across them; each piece opened when
    first read."""

    def __init__(self, paths: list[Path], batch_rows: list[list[int]], columns: list[str] | None = None):
        self.paths = paths
        self.batch_rows = batch_rows
        self.columns = columns
        self.starts = np.cumsum([0] + [sum(b) for b in batch_rows]).astype(np.int64)
        base = segment_schema()
        self.schema = pa.schema([base.field(c) for c in columns]) if columns is not None else base
        self._open: dict[int, ArrowFile] = {}

    def __enter__(self) -> "SegmentRows":
        return self

    def __exit__(self, *exc: Any) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()

    def _piece(self, i: int) -> ArrowFile:
        if i not in self._open:
            self._open[i] = ArrowFile(self.paths[i], self.columns, self.batch_rows[i])
        return self._open[i]

    def take(self, rows: np.ndarray) -> pa.Table:
        """Rows by number, in the order given, as one table."""
        return take_grouped(rows, self.starts, lambda i, r: self._piece(i).take(r), self.schema)


def read_conversations(segment: SegmentRows, rows: np.ndarray) -> list[Conversation]:
    """Rows of a normalised segment as Conversations, exactly as stage 1 produced them."""
    part = segment.take(rows)
    return [Conversation.from_dict(d) for d in part.to_pylist()]


def segment_row(conv: Conversation) -> dict[str, Any]:
    """A Conversation as a row of a segment piece (the artifact's row shape)."""
    return conv.to_dict()


# ---------------------------------------------------------------------------------------------
# Stage 1 output
# ---------------------------------------------------------------------------------------------


@dataclass
class QuarantineEntry:
    """A rejected row as the build reports it: the sort key and the quarantine.jsonl object."""

    source: str
    file: str
    row: int  # 0-based record index (the sort key); the quarantine line holds the 1-based row
    stage: str
    reason: str
    line: str  # canonical JSON of {source, file, row (1-based: a JSONL file's line), stage, reason, raw}
    bad: bool  # counts against max_bad_rows
    seq: int = 0  # insertion order among entries with the same sort key

    def sort_key(self) -> tuple[Any, ...]:
        return (self.source, self.file, self.row, self.stage, self.reason, self.seq)

    def example(self) -> str:
        return f"{self.file}:{self.row + 1}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "file": self.file, "row": self.row, "stage": self.stage,
                "reason": self.reason, "line": self.line, "bad": self.bad, "seq": self.seq}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "QuarantineEntry":
        return cls(**d)

    def json_line(self) -> str:
        """The entry as a line of a segment's (or a piece's) quarantine file."""
        return json.dumps(self.to_json(), ensure_ascii=False) + "\n"

    @classmethod
    def make(cls, source: str, file: str, row: int, stage: str, reason: str, raw: Any, *, bad: bool = True,
             seq: int = 0) -> "QuarantineEntry":
        line = canonical_json({"source": source, "file": file, "row": row + 1, "stage": stage, "reason": reason,
                               "raw": raw})
        return cls(source, file, row, stage, reason, line, bad, seq)


@dataclass
class NormalisedChunk:
    """What a worker returns for one chunk of a source's raw rows."""

    rows: pa.RecordBatch  # segment_schema(), the rows produced, in order
    classes: list[RowClass]
    dedup: list[int]
    chars: list[int]
    tokens: list[float]  # NaN where not computed
    prov_rows: list[int]  # provenance row of each produced row (duplicate messages name it)
    id_hashes: list[int]  # id_hash of each produced row's id
    quarantined: list[tuple[int, QuarantineEntry]]  # (rows produced before it in this chunk, entry)
    dropped: Counter[str] = field(default_factory=Counter)
    read: int = 0  # raw rows in the chunk


@dataclass(frozen=True)
class Piece:
    """One rows file of a segment and its record batches' sizes."""

    name: str
    batch_rows: list[int]


@dataclass
class SegmentInfo:
    """A finished normalised segment: counts, and where its files are."""

    dir: Path
    source: str
    rows_read: int
    rows: int  # rows in the pieces
    live: int  # rows kept (keys.arrow)
    duplicates: int
    dropped: dict[str, int]
    classes: list[RowClass]
    pieces: list[Piece]

    def open_rows(self, columns: list[str] | None = None) -> SegmentRows:
        return SegmentRows([self.dir / p.name for p in self.pieces], [p.batch_rows for p in self.pieces], columns)

    def to_json(self) -> dict[str, Any]:
        return {"format": SEGMENT_FORMAT, "source": self.source, "rows_read": self.rows_read, "rows": self.rows,
                "live": self.live, "duplicates": self.duplicates, "dropped": self.dropped,
                "classes": [list(c) for c in self.classes], "pieces": [[p.name, p.batch_rows] for p in self.pieces]}

    @classmethod
    def load(cls, d: Path) -> "SegmentInfo":
        meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != SEGMENT_FORMAT:
            raise ValueError(f"segment format {meta.get('format')!r}")
        return cls(d, meta["source"], meta["rows_read"], meta["rows"], meta["live"], meta["duplicates"],
                   meta["dropped"], [RowClass(*c) for c in meta["classes"]], [Piece(*p) for p in meta["pieces"]])

    def keys(self) -> tuple[KeyTable, np.ndarray]:
        """The selection keys of the kept rows and their row numbers in the segment."""
        with pa.OSFile(str(self.dir / KEYS_FILE)) as f:  # read into memory: small, kept for the build
            t = pa.ipc.open_file(f).read_all().combine_chunks()

        def col(name: str, dtype: Any) -> np.ndarray:
            return t.column(name).to_numpy(zero_copy_only=False).astype(dtype, copy=True)

        keys = KeyTable(ids=_one_chunk(t.column("id")), groups=_one_chunk(t.column("group")),
                        cls=col("cls", np.int32), classes=list(self.classes), dedup=col("dedup", np.uint64),
                        chars=col("chars", np.int64), tokens=col("tokens", np.float64))
        return keys, col("row", np.int64)

    def quarantine(self) -> list[QuarantineEntry]:
        with open(self.dir / QUARANTINE_FILE, encoding="utf-8") as f:
            return read_quarantine(f)


def read_quarantine(lines: Iterable[str]) -> list[QuarantineEntry]:
    """The entries of a quarantine file's lines (`QuarantineEntry.json_line`)."""
    return [QuarantineEntry.from_json(json.loads(line)) for line in lines if line.strip()]


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def id_hash(row_id: str) -> int:
    """64 bits of a row id's hash: equal ids have equal hashes (the converse is checked)."""
    return int.from_bytes(hashlib.blake2b(row_id.encode("utf-8"), digest_size=8).digest(), "big")


def id_hashes(values: list[str | None]) -> np.ndarray:
    """`id_hash` of each value (None: 0), as uint64."""
    return np.fromiter((0 if v is None else id_hash(v) for v in values), np.uint64, len(values))


def _first_with_same_id(ids: pa.Array, hashes: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same id (itself when it is the first)."""
    n = len(hashes)
    first_of = np.arange(n)
    order = np.argsort(hashes, kind="stable")  # equal hashes keep row order
    sorted_hashes = hashes[order]
    tied = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
    if not tied.size:
        return first_of
    starts = tied[np.r_[True, np.diff(tied) > 1]]
    for s in starts.tolist():
        e = s + 1
        while e < n and sorted_hashes[e] == sorted_hashes[s]:
            e += 1
        rows = order[s:e]
        seen: dict[str, int] = {}
        for r, i in zip(rows.tolist(), ids.take(pa.array(rows)).to_pylist()):
            first_of[r] = seen.setdefault(i, r)
    return first_of


PIECE_KEYS_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("group", pa.string()),  # null where the group is the id
    ("cls", pa.int32()),  # index into the piece's `classes`
    ("dedup", pa.uint64()),
    ("chars", pa.int64()),
    ("tokens", pa.float64()),
    ("prov_row", pa.int64()),  # provenance row (a duplicate's quarantine line names it)
    ("file", pa.string()),  # provenance file
    ("id_hash", pa.uint64()),
])


def piece_name(kind: str, index: int) -> str:
    return f"{kind}-{index:06d}.{'jsonl' if kind == 'quarantine' else 'arrow'}"


@dataclass
class PieceResult:
    """What a worker returns for the piece it wrote: counts, never rows."""

    index: int
    rows_read: int
    rows: int
    piece: Piece
    classes: list[RowClass]
    dropped: Counter[str]
    size: tuple[int, int]  # (size, crc32) of the rows file


class PieceWriter:
    """Writes one piece of a source's segment from its normalised chunks, in order (a worker):
    the rows, their keys and the piece's quarantine entries, each renamed into place at `close`."""

    def __init__(self, directory: Path, index: int):
        self.dir = directory
        self.index = index
        self._tag = f".tmp-{uuid.uuid4().hex}-"
        self._rows = ArrowFileWriter(self._tmp("rows"), segment_schema())
        self._keys = ArrowFileWriter(self._tmp("keys"), PIECE_KEYS_SCHEMA)
        self._quarantine = open(self._tmp("quarantine"), "w", encoding="utf-8")
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._batch_rows: list[int] = []
        self.n_rows = 0
        self.read = 0
        self._classes: dict[RowClass, int] = {}
        self.dropped: Counter[str] = Counter()

    def _tmp(self, kind: str) -> Path:
        return self.dir / f"{self._tag}{piece_name(kind, self.index)}"

    def add(self, chunk: NormalisedChunk) -> None:
        for before, q in chunk.quarantined:
            q.seq = 2 * (self.n_rows + before)  # before the row produced next (see finish_segment)
            self._quarantine.write(q.json_line())
        self.dropped.update(chunk.dropped)
        self.read += chunk.read
        batch = chunk.rows
        n = batch.num_rows
        if not n:
            return
        self._pending.append(batch)
        self._pending_rows += n
        if self._pending_rows >= SEGMENT_BATCH_ROWS:
            self._flush()
        ids, groups = batch.column("id"), batch.column("group")
        cls = [self._classes.setdefault(c, len(self._classes)) for c in chunk.classes]
        self._keys.write(pa.record_batch([
            ids, pc.if_else(pc.equal(groups, ids), pa.scalar(None, pa.string()), groups),
            pa.array(cls, pa.int32()), pa.array(chunk.dedup, pa.uint64()), pa.array(chunk.chars, pa.int64()),
            pa.array(chunk.tokens, pa.float64()), pa.array(chunk.prov_rows, pa.int64()),
            pc.struct_field(batch.column("meta"), ["provenance", "file"]), pa.array(chunk.id_hashes, pa.uint64()),
        ], schema=PIECE_KEYS_SCHEMA))
        self.n_rows += n

    def _flush(self) -> None:
        if self._pending:
            self._rows.write(pa.Table.from_batches(self._pending).combine_chunks())
            self._batch_rows.append(self._pending_rows)
            self._pending, self._pending_rows = [], 0

    def close(self) -> PieceResult:
        self._flush()
        size = self._rows.close()
        self._keys.close()
        self._quarantine.close()
        for kind in ("keys", "quarantine", "rows"):  # the rows last: a piece whose rows are there is whole
            os.replace(self._tmp(kind), self.dir / piece_name(kind, self.index))  # a retry: the same bytes
        return PieceResult(self.index, self.read, self.n_rows, Piece(piece_name("rows", self.index), self._batch_rows),
                           list(self._classes), self.dropped, size)


def finish_segment(directory: Path, source: str, pieces: list[PieceResult]) -> tuple[SegmentInfo, dict[str, tuple[int, int]]]:
    """The segment of a source from its pieces (in read order): exact duplicates by id across
    the whole source (the first kept, the others quarantined), `keys.arrow` of the kept rows,
    the merged quarantine and `segment.json`, each renamed into place; returns the segment and
    {file: (size, crc32)}. The pieces' keys and quarantine files stay (`remove_piece_files`),
    so that a merge run twice (a retried task) merges the same files."""
    pieces = sorted(pieces, key=lambda p: p.index)
    classes, remaps = merge_classes(p.classes for p in pieces)
    tables, quarantined = [], []
    offset = 0
    for p, remap in zip(pieces, remaps):
        path = directory / piece_name("keys", p.index)
        with pa.OSFile(str(path)) as f:
            t = pa.ipc.open_file(f).read_all()
        if t.num_rows:
            t = t.set_column(t.schema.get_field_index("cls"), "cls",
                             pa.array(remap[t.column("cls").to_numpy()], pa.int32()))
            tables.append(t)
        path = directory / piece_name("quarantine", p.index)
        with open(path, encoding="utf-8") as f:
            for q in read_quarantine(f):
                q.seq += 2 * offset
                quarantined.append(q)
        offset += p.rows
    keys = pa.concat_tables(tables).combine_chunks() if tables else PIECE_KEYS_SCHEMA.empty_table()
    n = keys.num_rows
    ids = _one_chunk(keys.column("id"))
    tokens = keys.column("tokens").to_numpy().copy() if n else np.zeros(0)
    first_of = _first_with_same_id(ids, keys.column("id_hash").to_numpy() if n else np.zeros(0, np.uint64))
    duplicates = np.flatnonzero(first_of != np.arange(n))
    if duplicates.size:
        firsts = first_of[duplicates]
        for f, d in zip(firsts.tolist(), duplicates.tolist()):
            tokens[f] = tokens[d]  # weights are recorded per id: the last row with that id wins
        files = _one_chunk(keys.column("file"))
        prov_rows = keys.column("prov_row").to_numpy()
        for i, d, file, first_file, first_row in zip(
                duplicates.tolist(), ids.take(pa.array(duplicates)).to_pylist(),
                files.take(pa.array(duplicates)).to_pylist(), files.take(pa.array(firsts)).to_pylist(),
                prov_rows[firsts].tolist()):
            # Identical content within a source: keep the first, record the others.
            quarantined.append(QuarantineEntry.make(
                source, file, int(prov_rows[i]), "dedup", f"exact duplicate: of {first_file}:{first_row + 1}",
                {"id": d}, bad=False, seq=2 * i + 1))
    quarantined.sort(key=lambda q: q.seq)
    live = np.flatnonzero(first_of == np.arange(n))
    kept = keys if len(live) == n else keys.take(pa.array(live))
    sizes: dict[str, tuple[int, int]] = {p.piece.name: p.size for p in pieces}
    tag = f".merge-{uuid.uuid4().hex}-"  # a merge run twice at once: each writes its own
    kw = ArrowFileWriter(directory / f"{tag}{KEYS_FILE}", KEYS_SCHEMA)
    kw.write(pa.table({
        "row": pa.array(live, pa.int64()), "id": kept.column("id"), "group": kept.column("group"),
        "cls": kept.column("cls"), "dedup": kept.column("dedup"), "chars": kept.column("chars"),
        "tokens": pa.array(tokens[live], pa.float64()),
    }, schema=KEYS_SCHEMA))
    sizes[KEYS_FILE] = kw.close()
    qf = ChecksumFile(directory / f"{tag}{QUARANTINE_FILE}")
    for q in quarantined:
        qf.write(q.json_line().encode("utf-8"))
    qf.close()
    sizes[QUARANTINE_FILE] = (qf.size, qf.crc)
    dropped: Counter[str] = Counter()
    for p in pieces:
        dropped.update(p.dropped)
    info = SegmentInfo(directory, source, sum(p.rows_read for p in pieces), n, int(live.size), int(duplicates.size),
                       dict(sorted(dropped.items())), classes, [p.piece for p in pieces])
    mf = ChecksumFile(directory / f"{tag}{META_FILE}")
    mf.write(json.dumps(info.to_json(), sort_keys=True).encode("utf-8"))
    mf.close()
    sizes[META_FILE] = (mf.size, mf.crc)
    for name in (KEYS_FILE, QUARANTINE_FILE, META_FILE):  # segment.json last: it says the merge is done
        os.replace(directory / f"{tag}{name}", directory / name)
    return info, sizes


def remove_piece_files(directory: Path, pieces: list[PieceResult]) -> None:
    """After the merge: the pieces' keys and quarantine files (merged into the segment's), and
    temporaries of task attempts that died before renaming their files."""
    for p in pieces:
        for kind in ("keys", "quarantine"):
            (directory / piece_name(kind, p.index)).unlink(missing_ok=True)
    for stray in [*directory.glob(".tmp-*"), *directory.glob(".merge-*")]:
        stray.unlink()


__all__ = ["ArrowFile", "ArrowFileWriter", "ChecksumFile", "NormalisedChunk", "PieceResult", "PieceWriter",
           "QuarantineEntry", "RenderStatus", "SegmentInfo", "SegmentRows", "file_crc", "finish_segment",
           "read_conversations", "remove_piece_files", "rendered_schema", "segment_row", "segment_schema"]
