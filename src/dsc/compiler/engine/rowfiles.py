"""On-disk files between the build's stages (Arrow IPC).

- **Normalised segment** (stage 1, one per source): `rows.arrow` holds every row the source's
  rows became after normalisation and the row transforms, in read order, in the artifact's row
  shape (id, group, messages, tools, meta; JSON strings keep their keys in the data's order, as
  the artifact stores them and templates render them); `keys.arrow` holds the compact
  selection keys of the rows kept after in-source exact-duplicate removal (`row` points into
  rows.arrow); `quarantine.jsonl` the source's rejected rows; `segment.json` its counts.
- **Rendered parts** (stage 3, per source): render + tokenise results per row of a normalised
  segment (`row`), immutable files that later builds add to (see `dsc.compiler.engine.cache`).

Nothing here holds a whole source as Python objects: rows come in and go out in record batches,
and files are read a record batch at a time (`ArrowFile`), so reading a large segment does not
grow the process's memory.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsc.compiler.stages.select.mix import KeyTable, RowClass
from dsc.compiler.stages.write import artifact as art
from dsc.core.canonical import canonical_json
from dsc.record import Conversation

SEGMENT_FORMAT = 1
ROWS_FILE = "rows.arrow"
KEYS_FILE = "keys.arrow"
QUARANTINE_FILE = "quarantine.jsonl"
META_FILE = "segment.json"
# Rows per record batch of rows.arrow: a read costs the whole batches it touches (readers go in
# row order, so each once), and the writer buffers one batch (a few MB).
SEGMENT_BATCH_ROWS = 4096

_ROW_FIELDS = ("id", "group", "messages", "tools", "meta")


def segment_schema() -> pa.Schema:
    base = art.row_schema(False)
    return pa.schema([base.field(n) for n in _ROW_FIELDS])


KEYS_SCHEMA = pa.schema([
    ("row", pa.int64()),  # index into rows.arrow
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
        rows = np.asarray(rows, np.int64)
        offsets = self.offsets()
        chunk = np.searchsorted(offsets, rows, side="right") - 1
        by_chunk = np.argsort(chunk, kind="stable")
        sorted_chunks = chunk[by_chunk]
        bounds = np.flatnonzero(np.r_[True, sorted_chunks[1:] != sorted_chunks[:-1], True]) if len(rows) else []
        pieces = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            c = int(sorted_chunks[a])
            pieces.append(self.batch(c).take(pa.array(rows[by_chunk[a:b]] - offsets[c])))
        if not pieces:
            return self.schema.empty_table()
        table = pa.Table.from_batches(pieces).combine_chunks()
        if np.all(by_chunk[1:] > by_chunk[:-1]):
            return table
        inverse = np.empty(len(rows), np.int64)
        inverse[by_chunk] = np.arange(len(rows))
        return table.take(pa.array(inverse))


def read_conversations(segment: ArrowFile, rows: np.ndarray) -> list[Conversation]:
    """Rows of a normalised segment as Conversations, exactly as stage 1 produced them."""
    part = segment.take(rows)
    return [Conversation.from_dict(d) for d in part.to_pylist()]


def segment_row(conv: Conversation) -> dict[str, Any]:
    """A Conversation as a row of rows.arrow (the artifact's row shape)."""
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


@dataclass
class SegmentInfo:
    """A finished normalised segment: counts, and where its files are."""

    dir: Path
    source: str
    rows_read: int
    rows: int  # rows in rows.arrow
    live: int  # rows kept (keys.arrow)
    duplicates: int
    dropped: dict[str, int]
    classes: list[RowClass]
    batch_rows: list[int]  # rows per record batch of rows.arrow

    @property
    def rows_path(self) -> Path:
        return self.dir / ROWS_FILE

    def open_rows(self, columns: list[str] | None = None) -> ArrowFile:
        return ArrowFile(self.rows_path, columns, self.batch_rows)

    def to_json(self) -> dict[str, Any]:
        return {"format": SEGMENT_FORMAT, "source": self.source, "rows_read": self.rows_read, "rows": self.rows,
                "live": self.live, "duplicates": self.duplicates, "dropped": self.dropped,
                "classes": [list(c) for c in self.classes], "batch_rows": self.batch_rows}

    @classmethod
    def load(cls, d: Path) -> "SegmentInfo":
        meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != SEGMENT_FORMAT:
            raise ValueError(f"segment format {meta.get('format')!r}")
        return cls(d, meta["source"], meta["rows_read"], meta["rows"], meta["live"], meta["duplicates"],
                   meta["dropped"], [RowClass(*c) for c in meta["classes"]], meta["batch_rows"])

    def keys(self) -> tuple[KeyTable, np.ndarray]:
        """The selection keys of the kept rows and their row numbers in rows.arrow."""
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
            return [QuarantineEntry.from_json(json.loads(line)) for line in f if line.strip()]


def _one_chunk(col: pa.ChunkedArray) -> pa.Array:
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)


def id_hash(row_id: str) -> int:
    """64 bits of a row id's hash: equal ids have equal hashes (the converse is checked)."""
    return int.from_bytes(hashlib.blake2b(row_id.encode("utf-8"), digest_size=8).digest(), "big")


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


class SegmentWriter:
    """Writes one source's normalised segment from worker chunks, in order (main process)."""

    def __init__(self, directory: Path, source: str):
        self.dir = directory
        self.source = source
        self._rows = ArrowFileWriter(directory / ROWS_FILE, segment_schema())
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._batch_rows: list[int] = []
        self.n_rows = 0
        self.read = 0
        self._classes: dict[RowClass, int] = {}
        self._ids: list[pa.Array] = []
        self._groups: list[pa.Array] = []
        self._file_codes: dict[str, int] = {}
        self._files: list[np.ndarray] = []  # provenance file of each row, as a code
        self._cls: list[np.ndarray] = []
        self._dedup: list[np.ndarray] = []
        self._chars: list[np.ndarray] = []
        self._tokens: list[np.ndarray] = []
        self._prov_rows: list[np.ndarray] = []
        self._id_hashes: list[np.ndarray] = []
        self.quarantined: list[QuarantineEntry] = []
        self.dropped: Counter[str] = Counter()
        self.sizes: dict[str, tuple[int, int]] = {}

    def add(self, chunk: NormalisedChunk) -> None:
        offset = self.n_rows
        for before, q in chunk.quarantined:
            q.seq = 2 * (offset + before)  # before the row produced next (see close: duplicates)
            self.quarantined.append(q)
        self.dropped.update(chunk.dropped)
        self.read += chunk.read
        batch = chunk.rows
        n = batch.num_rows
        if n:
            self._pending.append(batch)
            self._pending_rows += n
            if self._pending_rows >= SEGMENT_BATCH_ROWS:
                self._flush()
            ids = batch.column("id")
            groups = batch.column("group")
            self._ids.append(ids)
            self._groups.append(pc.if_else(pc.equal(groups, ids), pa.scalar(None, pa.string()), groups))
            files = pc.struct_field(batch.column("meta"), ["provenance", "file"]).to_pylist()
            self._files.append(np.array([self._file_codes.setdefault(f, len(self._file_codes)) for f in files],
                                        np.int32))
            self._cls.append(np.array([self._classes.setdefault(c, len(self._classes)) for c in chunk.classes],
                                      np.int32))
            self._dedup.append(np.array(chunk.dedup, np.uint64))
            self._chars.append(np.array(chunk.chars, np.int64))
            self._tokens.append(np.array(chunk.tokens, np.float64))
            self._prov_rows.append(np.array(chunk.prov_rows, np.int64))
            self._id_hashes.append(np.array(chunk.id_hashes, np.uint64))
        self.n_rows += n

    def _flush(self) -> None:
        if self._pending:
            self._rows.write(pa.Table.from_batches(self._pending).combine_chunks())
            self._batch_rows.append(self._pending_rows)
            self._pending, self._pending_rows = [], 0

    def close(self) -> tuple[SegmentInfo, dict[str, tuple[int, int]]]:
        """Finish the files; returns the segment and {file: (size, crc32)}."""
        self._flush()
        self.sizes[ROWS_FILE] = self._rows.close()
        n = self.n_rows
        ids = pa.concat_arrays(self._ids) if n else pa.array([], pa.string())
        tokens = np.concatenate(self._tokens) if n else np.zeros(0)
        first_of = _first_with_same_id(ids, np.concatenate(self._id_hashes) if n else np.zeros(0, np.uint64))
        duplicates = np.flatnonzero(first_of != np.arange(n))
        if duplicates.size:
            firsts = first_of[duplicates]
            # weights are recorded per id: the last row with that id wins
            for f, d in zip(firsts.tolist(), duplicates.tolist()):
                tokens[f] = tokens[d]
            names = list(self._file_codes)
            files = np.concatenate(self._files)
            prov_rows = np.concatenate(self._prov_rows)
            dup_ids = ids.take(pa.array(duplicates)).to_pylist()
            dup_files = [names[c] for c in files[duplicates].tolist()]
            first_files = [names[c] for c in files[firsts].tolist()]
            for i, d, f, ff, fr in zip(duplicates.tolist(), dup_ids, dup_files, first_files,
                                       prov_rows[firsts].tolist()):
                # Identical content within a source: keep the first, record the others.
                self.quarantined.append(QuarantineEntry.make(
                    self.source, f, int(prov_rows[i]), "dedup", f"exact duplicate: of {ff}:{fr + 1}", {"id": d},
                    bad=False, seq=2 * i + 1))
        first = first_of == np.arange(n)
        self.quarantined.sort(key=lambda q: q.seq)
        live = np.flatnonzero(first)
        every = len(live) == n

        def kept(arrays: list[Any], empty: Any) -> Any:
            if not n:
                return empty
            whole = pa.concat_arrays(arrays) if isinstance(arrays[0], pa.Array) else np.concatenate(arrays)
            if every:
                return whole
            return whole.take(pa.array(live)) if isinstance(whole, pa.Array) else whole[live]

        keys = pa.table({
            "row": pa.array(live, pa.int64()),
            "id": ids if every else ids.take(pa.array(live)),
            "group": kept(self._groups, pa.array([], pa.string())),
            "cls": pa.array(kept(self._cls, np.zeros(0, np.int32)), pa.int32()),
            "dedup": pa.array(kept(self._dedup, np.zeros(0, np.uint64)), pa.uint64()),
            "chars": pa.array(kept(self._chars, np.zeros(0, np.int64)), pa.int64()),
            "tokens": pa.array(tokens if every else tokens[live], pa.float64()),
        }, schema=KEYS_SCHEMA)
        kw = ArrowFileWriter(self.dir / KEYS_FILE, KEYS_SCHEMA)
        kw.write(keys)
        self.sizes[KEYS_FILE] = kw.close()
        qf = ChecksumFile(self.dir / QUARANTINE_FILE)
        for q in self.quarantined:
            qf.write((json.dumps(q.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
        qf.close()
        self.sizes[QUARANTINE_FILE] = (qf.size, qf.crc)
        info = SegmentInfo(self.dir, self.source, self.read, n, int(live.size), int(duplicates.size),
                           dict(sorted(self.dropped.items())), list(self._classes), self._batch_rows)
        mf = ChecksumFile(self.dir / META_FILE)
        mf.write(json.dumps(info.to_json(), sort_keys=True).encode("utf-8"))
        mf.close()
        self.sizes[META_FILE] = (mf.size, mf.crc)
        return info, dict(self.sizes)


__all__ = ["ArrowFile", "ArrowFileWriter", "ChecksumFile", "NormalisedChunk", "QuarantineEntry",
           "RenderStatus", "SegmentInfo", "SegmentWriter", "file_crc", "read_conversations", "rendered_schema",
           "segment_row", "segment_schema"]
