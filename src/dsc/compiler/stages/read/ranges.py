"""Input ranges: how a source's files are cut into pieces that workers read independently.

A range is a whole file, a newline-aligned byte range of a JSONL file, or a run of row groups of
a Parquet file; sources with a hub dataset or a `limit` are one range (the whole source, read in
order). Each range knows the index of its first row in its file, so a worker that reads it gives
its rows the provenance (file, row) a serial read would, and the pieces laid end to end are the
source's rows in read order: the build's bytes never depend on where the cuts fall.

Every input file is scanned once, by a task (`scan_file`: in parallel across files, on the
build's executor): its sha256 for the manifest and, for a JSONL file larger than the source's
range size, the cuts (counting newlines up to each), from the same bytes. The driver then plans
the ranges from the scans and Parquet footers; other formats (JSON arrays, CSV, `datasets`
directories) cannot be entered mid-file and are read whole.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dsc.compiler.stages.read.sources import (
    InputFile,
    RawRow,
    is_url,
    iter_raw_rows,
    open_parquet,
    read_file,
    read_jsonl_range,
    read_errors,
    read_parquet_row_groups,
    resolve_files,
)
from dsc.core.errors import BuildError
from dsc.core.hashing import sha256_stream
from dsc.spec.sources import SourceSpec

if TYPE_CHECKING:
    from dsc.spec.model import LoadedSpec

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]

# A range is about a quarter of a worker's share of the source (so that workers finish together),
# within these bounds: small enough that one task's memory stays flat, large enough that a task's
# fixed cost (a worker's start on a range, a piece file) stays small against its rows.
MIN_RANGE_BYTES = 1 << 20
MAX_RANGE_BYTES = 64 << 20

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


# ---------------------------------------------------------------------------------------------
# Scanning inputs: each file's hash and its JSONL cuts in one pass, a task per file
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScannedFile:
    """An input file after one pass over its bytes: its size and sha256 and, for a JSONL file
    larger than the range size it was scanned for, the (start, end, first line) of its ranges."""

    file: InputFile
    size: int
    sha256: str
    target: int | None = None  # the range size the source aims at (None: it is read whole)
    lines: tuple[tuple[int, int, int], ...] = ()

    def fingerprint(self) -> dict[str, Any]:
        """As the manifest's `inputs` and `dsc.lock` pin the file."""
        return {"path": self.file.display, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class ScanTask:
    source: str
    file: InputFile
    size: int  # as listed
    target: int | None


def scan_file(task: ScanTask) -> ScannedFile:
    """A task: hash one input file and, when it is a JSONL file to cut, find its cuts from the same
    bytes: one pass over each input (a remote one is downloaded once by the scan)."""
    f = task.file
    with read_errors(task.source, f.display, f.remote):
        if f.type == "arrow":  # a directory: its hash is over its files
            return ScannedFile(f, task.size, f.sha256(), task.target)
        cuts = _LineCuts(task.size, task.target) if f.type == "jsonl" and task.target is not None \
            and task.size > task.target else None
        seen = [0]

        def each_block(block: bytes) -> None:
            seen[0] += len(block)
            if cuts is not None:
                cuts.feed(block)

        with f.open() as fh:
            sha256 = sha256_stream(fh, each_block)
    if seen[0] != task.size:  # the cuts and the size would not be those of the bytes hashed
        raise BuildError(f"source '{task.source}': {f.display} changed while it was read ({task.size} bytes "
                         f"when listed, {seen[0]} read); build again once it is complete")
    return ScannedFile(f, task.size, sha256, task.target, cuts.finish() if cuts is not None else ())


class _LineCuts:
    """Newline-aligned ranges of about `target` bytes, from a file's blocks in order: each cut is
    just after the first newline at or past `target` bytes from the last cut."""

    def __init__(self, size: int, target: int):
        self.size, self.target = size, target
        self.out: list[tuple[int, int, int]] = []
        self.start = self.start_row = 0  # the open range: its first byte and line
        self.pos = self.lines = 0  # the next block's offset in the file, and the newlines before it

    def feed(self, block: bytes) -> None:
        lo = 0
        while True:
            want = self.start + self.target  # the next cut is at or after this offset
            if want > self.pos + len(block):
                break
            i = block.find(b"\n", max(want - 1 - self.pos, lo))
            if i < 0 or self.pos + i + 1 >= self.size:
                break  # no newline in this block past the mark (or only the file's last one)
            end = self.pos + i + 1
            self.out.append((self.start, end, self.start_row))
            self.start, self.start_row = end, self.lines + block.count(b"\n", 0, i + 1)
            lo = i + 1
        self.lines += block.count(b"\n")
        self.pos += len(block)

    def finish(self) -> tuple[tuple[int, int, int], ...]:
        return (*self.out, (self.start, self.size, self.start_row))


def scan_tasks(name: str, spec: SourceSpec, base_dir: Path | str, workers: int | None,
               target_bytes: int | None = None) -> list[ScanTask]:
    """A scan per file of a `path` source, sorted. With `workers` and no `limit`, each also
    finds the cuts for ranges of `target_bytes` (default: `range_bytes` of the source's size)."""
    files = resolve_files(spec, base_dir, name)
    sizes = [f.size() for f in files]
    target = None
    if workers is not None and spec.limit is None:
        total = sum(s for f, s in zip(files, sizes) if f.type != "arrow")
        target = target_bytes if target_bytes is not None else range_bytes(total, workers)
    return [ScanTask(name, f, s, target) for f, s in zip(files, sizes)]


@dataclass
class Inputs:
    """Every input of a spec: as the manifest pins them, and each path source's scanned files."""

    entries: list[dict[str, Any]]  # {source, path, size, sha256}, sources by name, files sorted
    files: dict[str, list[ScannedFile]]


def resolve_inputs(loaded: LoadedSpec, *, workers: int | None = None, map_fn: MapFn = map) -> Inputs:
    """Hash every input the spec reads (the manifest's `inputs`; `dsc.lock` pins them), a task
    per file on `map_fn`. With `workers`, each emitted source read in ranges also gets its
    range size and its JSONL cuts (`plan_ranges`), from the same pass over the bytes."""
    spec, base = loaded.spec, loaded.base_dir
    emitted = set(spec.emitted_sources())
    tasks: list[ScanTask] = []
    for name in sorted(spec.sources):
        if spec.sources[name].hub is None:
            with loaded.at("sources", name):
                tasks += scan_tasks(name, spec.sources[name], base, workers if name in emitted else None)
    scanned: dict[str, list[ScannedFile]] = {}
    results = list(map_fn(scan_file, tasks))  # one map: the files of every source in parallel
    for task, done in zip(tasks, results):
        scanned.setdefault(task.source, []).append(done)
    entries: list[dict[str, Any]] = []
    for name in sorted(spec.sources):
        hub = spec.sources[name].hub
        if hub is not None:  # the revision pins the content
            entries.append({"source": name, "path": hub.display(), "size": None, "sha256": hub.revision})
        entries += [{"source": name, **s.fingerprint()} for s in scanned.get(name, [])]
    return Inputs(entries, scanned)


def plan_ranges(name: str, spec: SourceSpec, files: list[ScannedFile]) -> list[InputRange]:
    """The ranges of a source, in read order, from its scanned files (`resolve_inputs` with
    `workers`). A hub source, a source with a `limit` (it counts rows across files, in order) and
    one scanned without a range size are one range."""
    if spec.hub is not None or spec.limit is not None or not files or files[0].target is None:
        return [InputRange(name, "source", hashes=tuple(sorted((s.file.display, s.sha256) for s in files)))]
    out: list[InputRange] = []
    for s in files:
        f, sha = s.file, s.sha256
        if s.lines:
            out += [InputRange(name, "lines", f, sha, a, z, row) for a, z, row in s.lines]
        elif f.type == "parquet" and s.size:
            out += [InputRange(name, "row_groups", f, sha, a, z, row)
                    for a, z, row in parquet_ranges(name, f, s.target)] or [InputRange(name, "file", f, sha)]
        else:
            out.append(InputRange(name, "file", f, sha))
    return out


def parquet_ranges(name: str, f: InputFile, target: int) -> list[tuple[int, int, int]]:
    """(first row group, end row group, first row) of runs of row groups of about `target`
    bytes (uncompressed, as the footer gives them)."""
    with read_errors(name, f.display, f.remote), open_parquet(name, f) as pf:
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
    """The raw rows of a range, JSONL lines unparsed (`RawRow.parsed()`). A read that fails is a
    BuildError naming the range (what the caller does with the rows is not covered)."""
    remote = r.file.remote if r.file is not None else any(is_url(p) for p in spec.patterns())
    with read_errors(r.source, r.describe(), remote):
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
