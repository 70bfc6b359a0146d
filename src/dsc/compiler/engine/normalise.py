"""Stage 1: each emitted source's raw rows → normalised rows (read, normalise, row transforms)
and their compact selection keys, written as a normalised segment (`dsc.compiler.engine.rowfiles`).

The driver plans each source's input ranges (`stages.read.ranges`); `read_piece`, run by the
executor's workers one range per task, reads its range, normalises and transforms it a chunk of
rows at a time (`normalise_chunk`) and writes the segment's piece for it, returning only counts.
A task per source then merges the pieces' keys (`merge_pieces`: in-source exact duplicates are
found there) and the driver puts the segment in the build cache. Rows and keys never pass through
the driver.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa

from dsc.compiler.engine import resources
from dsc.compiler.engine.cache import BuildCache, normalised_key
from dsc.compiler.engine.executors.base import Executor, worker_context
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.rowfiles import (
    NormalisedChunk,
    PieceResult,
    PieceWriter,
    QuarantineEntry,
    SegmentInfo,
    finish_segment,
    id_hash,
    remove_piece_files,
    segment_row,
    segment_schema,
)
from dsc.compiler.stages.read.ranges import InputRange, Inputs, plan_ranges, read_range
from dsc.compiler.stages.read.sources import RawRow, normalise_row
from dsc.compiler.stages.select.mix import RowClass, dedup_hash
from dsc.compiler.stages.transforms.capabilities import supervised_chars
from dsc.record import BadRow, Conversation
from dsc.spec.model import LoadedSpec

if TYPE_CHECKING:
    from dsc.compiler.engine.context import BuildContext

CHUNK_ROWS = 512  # raw rows normalised at a time; rows per render batch

T = TypeVar("T")


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last one shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class ReadTask:
    """One input range of a source, to be written as piece `index` of the segment in `directory`."""

    range: InputRange
    index: int
    directory: str


def read_piece(task: ReadTask) -> PieceResult:
    """A worker task: read a range, normalise and transform its rows, write its piece."""
    ctx: BuildContext = worker_context()
    r = task.range
    writer = PieceWriter(Path(task.directory), task.index)
    for chunk in chunks(read_range(r, ctx.spec.sources[r.source], ctx.base_dir), CHUNK_ROWS):
        writer.add(normalise_chunk(chunk))
    piece = writer.close()
    resources.hand_back_freed()
    return piece


def normalise_chunk(chunk: list[RawRow]) -> NormalisedChunk:
    """Raw rows → normalised (and transformed) rows with their keys; bad rows go to the
    quarantine with the stage that rejected them."""
    ctx: BuildContext = worker_context()
    rows: list[Conversation] = []
    tokens: list[float] = []
    quarantined: list[tuple[int, QuarantineEntry]] = []
    dropped: Counter[str] = Counter()
    read = 0
    for deferred in chunk:
        raw = deferred.parsed()
        if raw is None:  # a line of Unicode whitespace only: no row
            continue
        read += 1
        stage = "read" if raw.error else "normalise"
        try:
            conv = normalise_row(raw, raw.source, ctx.spec.sources[raw.source])
            if not ctx.pipeline.steps:
                rows.append(conv)
                tokens.append(math.nan)
                continue
            stage = "transform"
            outcome = ctx.pipeline.run(conv, dropped)
        except BadRow as e:
            quarantined.append((len(rows), QuarantineEntry.make(
                raw.source, raw.file, raw.row, stage, e.reason, _as_read(raw))))
            continue
        for r in outcome.rows:
            rows.append(r)
            tokens.append(outcome.weights.get(r.id, math.nan))
    batch = pa.RecordBatch.from_pylist([segment_row(c) for c in rows], schema=segment_schema())
    return NormalisedChunk(
        rows=batch, classes=[RowClass.of(c) for c in rows], dedup=[dedup_hash(c) for c in rows],
        chars=[supervised_chars(c) for c in rows], tokens=tokens, prov_rows=[c.meta.provenance.row for c in rows],
        id_hashes=[id_hash(c.id) for c in rows], quarantined=quarantined, dropped=dropped, read=read)


def _as_read(raw: RawRow) -> Any:
    """What the quarantine keeps of a rejected row: its data, or the line that could not be parsed."""
    if raw.data is not None:
        return raw.data
    return raw.text if raw.text is not None else raw.error


@dataclass
class NormalisedSources:
    """Stage 1 of every emitted source: its segment, and what reading it reported."""

    names: list[str]
    segments: list[SegmentInfo] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # each segment's cache key
    cached: list[bool] = field(default_factory=list)  # each segment came from the cache
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    read_counts: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)  # filter / decontamination reasons

    @property
    def rows_read(self) -> int:
        return sum(self.read_counts.values())

    def empty_sources(self) -> list[str]:
        return [name for name in self.names if not self.read_counts.get(name)]


def normalise_sources(loaded: LoadedSpec, inputs: Inputs, store: BuildCache, ex: Executor,
                      progress: Progress, ctx: BuildContext) -> NormalisedSources:
    """Stage 1: read + normalise each emitted source, unless the cache has its segment."""
    spec, base = loaded.spec, loaded.base_dir
    read = NormalisedSources(sorted(spec.emitted_sources()))
    progress.start("read + normalise")
    for name in read.names:
        key = normalised_key(spec, name, inputs.entries, base, template=ctx.template, tokenizer=ctx.tokenizer)
        seg = store.normalised(key)
        read.cached.append(seg is not None)
        if seg is None:
            seg = _normalise_source(loaded, name, key, store, ex, progress, inputs)
        else:
            progress.advance(seg.rows_read)
        read.segments.append(seg)
        read.keys.append(key)
        read.read_counts[name] = seg.rows_read  # an empty source is named with its 0 rows
        if seg.duplicates:
            read.duplicates[name] = seg.duplicates
        read.dropped.update(seg.dropped)
        read.quarantine.extend(seg.quarantine())
    progress.done()
    resources.release_memory()
    return read


def _normalise_source(loaded: LoadedSpec, name: str, key: str, store: BuildCache, ex: Executor,
                      progress: Progress, inputs: Inputs) -> SegmentInfo:
    with loaded.at("sources", name):
        ranges = plan_ranges(name, loaded.spec.sources[name], inputs.files.get(name, []))
    with store.new_normalised() as tmp:
        pieces = []
        for piece in ex.map(read_piece, [ReadTask(r, i, str(tmp)) for i, r in enumerate(ranges)]):
            pieces.append(piece)
            progress.advance(piece.rows_read)
        [files] = list(ex.map(merge_pieces, [MergeTask(str(tmp), name, pieces)]))
        remove_piece_files(tmp, pieces)
        return store.commit_normalised(tmp, key, files)


@dataclass(frozen=True)
class MergeTask:
    """A source's pieces, read, to merge into its segment (in `directory`)."""

    directory: str
    source: str
    pieces: list[PieceResult]


def merge_pieces(task: MergeTask) -> dict[str, tuple[int, int]]:
    """A worker task: the segment from its pieces (`rowfiles.finish_segment`: the keys of every
    row of the source, in-source duplicates found); {file: (size, crc32)}."""
    _, files = finish_segment(Path(task.directory), task.source, task.pieces)
    resources.hand_back_freed()
    return files
