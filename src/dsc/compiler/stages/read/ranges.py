"""Input ranges: how a source's files are cut into pieces that workers read independently.

A range is a whole file, a newline-aligned byte range of a JSONL file, or a run of row groups of
a Parquet file; sources with a hub dataset or a `limit` are one range (the whole source, read in
order). Each range knows the index of its first row in its file, so a worker that reads it gives
its rows the provenance (file, row) a serial read would, and the pieces laid end to end are the
source's rows in read order: the build's bytes never depend on where the cuts fall.

Ranges are planned by the driver with one pass over each JSONL file (counting newlines up to each
cut, as cheap as the hash the manifest needs) and Parquet's footer; other formats (JSON arrays,
CSV, `datasets` directories) cannot be entered mid-file and are read whole.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dsc.compiler.stages.read.sources import (
    InputFile,
    RawRow,
    iter_raw_rows,
    open_parquet,
    read_file,
    read_jsonl_range,
    read_parquet_row_groups,
    resolve_files,
)
from dsc.spec.sources import SourceSpec

# A range is about a quarter of a worker's share of the source (so that workers finish together),
# within these bounds: small enough that one task's memory stays flat, large enough that a task's
# fixed cost (a worker's start on a range, a piece file) stays small against its rows.
MIN_RANGE_BYTES = 1 << 20
MAX_RANGE_BYTES = 64 << 20
_SCAN_BLOCK = 16 << 20

RangeKind = Literal["source", "file", "lines", "row_groups"]


@dataclass(frozen=True)
class InputRange:
    """Rows of one source that one task reads: the whole source, a file, the lines of a JSONL
    file in bytes [start, end), or the row groups [start, end) of a Parquet file."""

    source: str
    kind: RangeKind
    file: InputFile | None = None
    sha256: str = ""
    start: int = 0
    end: int = 0
    first_row: int = 0  # index in the file of the range's first row
    hashes: tuple[tuple[str, str], ...] = ()  # kind "source": (file, sha256) of each, not hashed again

    def describe(self) -> str:
        if self.file is None:
            return f"source '{self.source}'"
        if self.kind == "lines":
            return f"{self.file.display} bytes {self.start}–{self.end}"
        if self.kind == "row_groups":
            return f"{self.file.display} row groups {self.start}–{self.end - 1}"
        return self.file.display


def range_bytes(total: int, workers: int) -> int:
    """The size a source's ranges aim at: about four per worker, within the bounds above."""
    return int(min(MAX_RANGE_BYTES, max(MIN_RANGE_BYTES, total // max(1, 4 * workers))))


def plan_ranges(name: str, spec: SourceSpec, base_dir: Path, sha256: Mapping[str, str], workers: int,
                target_bytes: int | None = None) -> list[InputRange]:
    """The ranges of a source, in read order. `sha256`: each file's hash (as the manifest has it)."""
    if spec.hub is not None or spec.limit is not None:  # a limit counts rows across files, in order
        return [InputRange(name, "source", hashes=tuple(sorted(sha256.items())))]
    files = resolve_files(spec, base_dir, name)
    sizes = {f.display: f.size() if f.type != "arrow" else 0 for f in files}
    target = target_bytes if target_bytes is not None else range_bytes(sum(sizes.values()), workers)
    out: list[InputRange] = []
    for f in files:
        sha, size = sha256[f.display], sizes[f.display]
        if f.type == "jsonl" and size > target:
            out += [InputRange(name, "lines", f, sha, a, z, row) for a, z, row in jsonl_ranges(f, size, target)]
        elif f.type == "parquet" and size:
            out += [InputRange(name, "row_groups", f, sha, a, z, row)
                    for a, z, row in parquet_ranges(name, f, target)] or [InputRange(name, "file", f, sha)]
        else:
            out.append(InputRange(name, "file", f, sha))
    return out


def jsonl_ranges(f: InputFile, size: int, target: int) -> list[tuple[int, int, int]]:
    """(start, end, first line) of newline-aligned byte ranges of about `target` bytes of a file of
    `size` bytes: each cut is just after the first newline at or past a multiple of `target` from
    the last cut."""
    out: list[tuple[int, int, int]] = []
    start = start_row = 0
    pos = lines = 0  # the block's offset in the file, and the newlines before it
    with f.open() as fh:
        while block := fh.read(_SCAN_BLOCK):
            lo = 0
            while True:
                want = start + target  # the next cut is at or after this offset
                if want > pos + len(block):
                    break
                i = block.find(b"\n", max(want - 1 - pos, lo))
                if i < 0 or pos + i + 1 >= size:
                    break  # no newline in this block past the mark (or only the file's last one)
                end = pos + i + 1
                out.append((start, end, start_row))
                start, start_row = end, lines + block.count(b"\n", 0, i + 1)
                lo = i + 1
            lines += block.count(b"\n")
            pos += len(block)
    out.append((start, size, start_row))
    return out


def parquet_ranges(name: str, f: InputFile, target: int) -> list[tuple[int, int, int]]:
    """(first row group, end row group, first row) of runs of row groups of about `target`
    bytes (uncompressed, as the footer gives them)."""
    with open_parquet(name, f) as pf:
        meta = pf.metadata
        groups = [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]
    out: list[tuple[int, int, int]] = []
    start = row = first_row = size = 0
    for i, (rows, nbytes) in enumerate(groups):
        size += nbytes
        row += rows
        if size >= target or i == len(groups) - 1:
            out.append((start, i + 1, first_row))
            start, first_row, size = i + 1, row, 0
    return out


def read_range(r: InputRange, spec: SourceSpec, base_dir: Path) -> Iterator[RawRow]:
    """The raw rows of a range, JSONL lines unparsed (`RawRow.parsed()`)."""
    if r.kind == "source":
        yield from iter_raw_rows(r.source, spec, base_dir, defer_parsing=True, known_sha256=dict(r.hashes))
        return
    assert r.file is not None
    if r.kind == "lines":
        yield from read_jsonl_range(r.source, r.file, r.sha256, r.start, r.end, r.first_row)
    elif r.kind == "row_groups":
        yield from read_parquet_row_groups(r.source, r.file, r.sha256, list(range(r.start, r.end)), r.first_row)
    else:
        yield from read_file(r.source, r.file, r.sha256, defer_parsing=True)
