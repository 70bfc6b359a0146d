"""Stage 3: the selected rows → rendered parts (special-token policy, rendering with loss
spans, then tokenisation when the spec tokenises), as a task per render block (a run of
consecutive rows of one source's segment).

A block's task receives the selected rows the order step sent it (`selecting.Selection`), finds
the rows the build cache has rendered already (parts whose names cover the block's rows), renders
the others into a new part, and sends every selected row's render result, with where its
rendered columns are, to its range of the output order (`engine.tally`). The driver keeps counts.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from dsc.chat.render import apply_special_token_policy, render
from dsc.compiler.engine import exchange, resources
from dsc.compiler.engine.cache import BuildCache, RenderedPart, rendered_key, write_part
from dsc.compiler.engine.exchange import SegmentBlocks
from dsc.compiler.engine.executors.base import Executor, worker_context
from dsc.compiler.engine.normalise import CHUNK_ROWS, NormalisedSources
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.rowfiles import (
    ArrowFile,
    RenderStatus,
    SegmentInfo,
    read_conversations,
    rendered_schema,
    take_by_part,
)
from dsc.compiler.engine.selecting import RENDER, SELECTED_SCHEMA, Selection
from dsc.record import BadRow, Conversation
from dsc.spec.model import Spec

if TYPE_CHECKING:
    from dsc.compiler.engine.context import BuildContext

RENDER_TASK_ROWS = 4096  # most segment rows per render block (one rendered part file)

# What a render block sends each selected row's output range: the row (as selected), where its
# rendered columns are (part file, row in it) and what rendering found
RESULT_COLUMNS = ["status", "span_chars", "sup_tokens", "truncated", "special", "reason", "n_tokens"]
RENDERED_SCHEMA = pa.schema([*SELECTED_SCHEMA, pa.field("part", pa.string()), pa.field("part_pos", pa.int32()),
                             *(rendered_schema(False).field(c) for c in RESULT_COLUMNS)])


def render_batch(rows: np.ndarray, convs: list[Conversation]) -> pa.RecordBatch:
    """Special-token policy, rendering with loss spans, then (optionally) tokenisation; token
    arrays go to Arrow as flat buffers, never as a Python list per row."""
    ctx: BuildContext = worker_context()
    n = len(convs)
    col: dict[str, Any] = {k: [None] * n for k in ("reason", "n_tokens", "text", "loss_spans", "loss_weights",
                                                     "messages", "input_ids", "labels", "weights")}
    status = np.full(n, RenderStatus.OK, np.int8)
    span_chars, sup_tokens, truncated = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
    special: list[list[str]] = [[] for _ in range(n)]
    rendered: list[Any] = []
    at: list[int] = []  # batch position of each rendered row
    for i, conv in enumerate(convs):
        try:
            shown, found = apply_special_token_policy(conv, ctx.template, ctx.spec.special_tokens)
            r = render(shown, ctx.template, ctx.spec.loss, ctx.parts_dialect)
        except BadRow as e:
            status[i], col["reason"][i] = RenderStatus.RENDER_FAILED, e.reason
            continue
        if shown is not conv:  # contents escaped: the artifact shows them so
            col["messages"][i] = [m.to_dict() for m in shown.messages]
        col["text"][i] = r.text
        col["loss_spans"][i] = [[a, b] for a, b in r.spans]
        if r.weights is not None:
            col["loss_weights"][i] = [w._asdict() for w in r.weights]
        span_chars[i] = sum(b - a for a, b in r.spans)
        special[i] = found
        rendered.append(r)
        at.append(i)
    if ctx.tokenizer is not None and rendered:
        # overflow: error marks every too-long row instead of raising, so that the build can
        # name the first such row in output order.
        enc = ctx.tokenizer.encode_arrays(rendered, raise_too_long=False)
        pos = np.asarray(at, np.int64)
        status[pos[enc.dropped]] = (RenderStatus.TOO_LONG_ERROR if ctx.tokenizer.overflow == "error"
                                    else RenderStatus.TOO_LONG)
        kept = pos[~enc.dropped]
        sup_tokens[pos] = enc.n_supervised
        truncated[pos] = enc.truncated
        status[kept[enc.n_supervised[~enc.dropped] == 0]] = RenderStatus.UNSUPERVISED
        if ctx.tokenizer.overflow == "error":
            for k in np.flatnonzero(enc.too_long).tolist():
                col["n_tokens"][at[k]] = int(enc.n_tokens[k])
        col["input_ids"], col["labels"] = enc.arrow_columns(at=pos, length=n)
        if ctx.weighted:
            col["weights"] = enc.arrow_weights(at=pos, length=n)
    schema = rendered_schema(ctx.tokenizer is not None, ctx.weighted)
    data = {"row": rows, "status": status, "span_chars": span_chars, "sup_tokens": sup_tokens,
            "truncated": truncated, "special": special, **col}
    return pa.RecordBatch.from_arrays([pa.array(data[f.name], f.type) if not isinstance(data[f.name], pa.Array)
                                       else data[f.name] for f in schema], schema=schema)


def render_block_rows(selected: int, workers: int) -> int:
    """Selected rows per render block of a source that has `selected`: about four blocks per
    worker, so that workers finish together (a block more or less is a quarter of a worker's
    share), within [CHUNK_ROWS, RENDER_TASK_ROWS]."""
    return int(min(RENDER_TASK_ROWS, max(CHUNK_ROWS, math.ceil(selected / (4 * workers)))))


def render_blocks(segments: list[SegmentInfo], workers: int, selected: list[int]) -> SegmentBlocks:
    """The render blocks for `selected` rows per source."""
    return SegmentBlocks.spread([seg.rows for seg in segments], selected,
                                [render_block_rows(k, workers) for k in selected])


@dataclass(frozen=True)
class RenderTask:
    directory: Path  # the build's exchange
    block: int
    files: list[str]  # the order step's files (the block's selected rows: a batch in some)
    rows: int  # the selected rows sent to the block
    segment: SegmentInfo  # its source's normalised segment
    parts_dir: str  # its source's rendered store
    cached: list[str]  # the store's parts that may hold rows of the block, in name order


@dataclass(frozen=True)
class RenderDone:
    sent: exchange.Sent  # to the output ranges
    rows: int  # selected rows (copies included) the block received
    reused: int  # distinct segment rows whose results the cache had
    computed: int  # ... rendered (and tokenised) here


def render_block(task: RenderTask) -> RenderDone:
    """A render block: its selected rows' results, from the cache or rendered into a new part,
    sent to their ranges of the output order."""
    t = exchange.received(task.directory, task.files, (RENDER, task.block), SELECTED_SCHEMA, task.rows)
    seg = t.column("seg").to_numpy()
    need = np.unique(seg)
    parts: list[str] = []
    part_of, pos_of = np.full(len(need), -1, np.int32), np.zeros(len(need), np.int32)
    for name in task.cached:  # a row two parts hold is the same row: the first is read
        with ArrowFile(Path(task.parts_dir) / name, ["row"]) as f:
            held = f.read_all().column("row").to_numpy()
        at = np.minimum(np.searchsorted(need, held), len(need) - 1)
        new = (need[at] == held) & (part_of[at] < 0)
        if new.any():
            part_of[at[new]], pos_of[at[new]] = len(parts), np.flatnonzero(new)
            parts.append(name)
    missing = np.flatnonzero(part_of < 0)
    if missing.size:
        parts.append(render_part(task.segment, need[missing], Path(task.parts_dir)).name)
        part_of[missing], pos_of[missing] = len(parts) - 1, np.arange(missing.size)
    k = np.searchsorted(need, seg)
    row_part, row_pos = part_of[k], pos_of[k]
    results = _results(Path(task.parts_dir), parts, row_part, row_pos)
    out = pa.table([*t.columns, pa.array([parts[i] for i in row_part.tolist()], pa.string()),
                    pa.array(row_pos, pa.int32()), *(results.column(c) for c in RESULT_COLUMNS)], schema=RENDERED_SCHEMA)
    by_range = exchange.by_partition(out, t.column("range").to_numpy().astype(np.int64))
    sent = exchange.send(task.directory, f"render-{task.block:06d}", by_range, RENDERED_SCHEMA)  # type: ignore[arg-type]
    resources.hand_back_freed()
    return RenderDone(sent, t.num_rows, int(len(need) - missing.size), int(missing.size))


def _results(parts_dir: Path, parts: list[str], part: np.ndarray, pos: np.ndarray) -> pa.Table:
    """The render results of rows (`part`, `pos`: where each is), in the order given; each part
    is read once."""
    def take(p: int, rows: np.ndarray) -> pa.Table:
        with ArrowFile(parts_dir / parts[p], RESULT_COLUMNS) as f:
            return f.take(rows)

    return take_by_part(part, pos, take, pa.schema([RENDERED_SCHEMA.field(c) for c in RESULT_COLUMNS]))


def render_part(segment: SegmentInfo, rows: np.ndarray, parts_dir: Path) -> Path:
    """Render (and tokenise) rows of a segment (ascending) into a new rendered part."""
    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(rows), CHUNK_ROWS):
            some = rows[start:start + CHUNK_ROWS]
            yield render_batch(some, read_conversations(f, some))

    ctx: BuildContext = worker_context()
    with segment.open_rows() as f:
        return write_part(parts_dir, rows, rendered_schema(ctx.tokenizer is not None, ctx.weighted), batches())


class _Overlaps:
    """A store's parts (in name order: by first row) that overlap ascending runs of rows, each
    part looked at about once however many blocks there are."""

    def __init__(self, parts: list[RenderedPart]):
        self.parts, self.next = parts, 0
        self.open: list[RenderedPart] = []  # parts begun before the last run's end

    def overlapping(self, first: int, last: int) -> list[str]:
        while self.next < len(self.parts) and self.parts[self.next].first <= last:
            self.open.append(self.parts[self.next])
            self.next += 1
        self.open = [p for p in self.open if p.last >= first]
        return [p.name for p in self.open]


@dataclass
class RenderedRanges:
    """Stage 3's result: the render blocks' files, and the rows each range of the output order
    (its partition) got in them; per source, what the cache had and what was rendered."""

    files: list[str]
    to_tally: dict[int, int]
    parts_dirs: list[str]  # per source: its rendered store
    reused: list[int]  # per source: distinct selected rows whose results came from the cache
    computed: list[int]  # ... rendered (and tokenised) by this build


def render_selected(spec: Spec, read: NormalisedSources, chosen: Selection, store: BuildCache, ex: Executor,
                    progress: Progress, ctx: BuildContext) -> RenderedRanges:
    """Stage 3: a task per render block holding selected rows (a progress stage, "render +
    tokenise", counted in selected rows)."""
    blocks = chosen.render_blocks
    stores = [store.rendered(rendered_key(spec, read.keys[s], template=ctx.template, tokenizer=ctx.tokenizer))
              for s in range(len(read.segments))]
    cached = [_Overlaps(rs.parts()) for rs in stores]
    tasks = []
    for b, rows in chosen.to_render.items():  # blocks ascend
        s, first, last = blocks.span(b)
        tasks.append(RenderTask(chosen.directory, b, chosen.files, rows, read.segments[s], str(stores[s].dir),
                                cached[s].overlapping(first, last)))
    if ex.parallel and tasks:  # this process only waits while workers render
        from dsc.compiler.stages.write.card import preload_in_background

        preload_in_background()
    reused, computed = [0] * len(stores), [0] * len(stores)
    mail = exchange.Mailroom()
    progress.start("render + tokenise", chosen.rows)
    for t, done in zip(tasks, ex.map(render_block, tasks)):
        s = blocks.source(t.block)
        reused[s] += done.reused
        computed[s] += done.computed
        mail.add(done.sent, "tally")
        progress.advance(done.rows)
    progress.done()
    exchange.remove(chosen.directory, chosen.files)
    files, to_tally = mail.take("tally")
    return RenderedRanges(files, to_tally, [str(rs.dir) for rs in stores], reused, computed)
