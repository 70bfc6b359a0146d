"""Stage 3: the selected rows → rendered parts (special-token policy, rendering with loss
spans, then tokenisation when the spec tokenises).

`render_part` is the per-row work, run by the executor's workers over a range of one segment's
rows; `render_selected` runs it for the selected rows the build cache has no rendered result
for and gathers every source's results (`RenderedRows`) from its rendered parts.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsc.chat.render import apply_special_token_policy, render
from dsc.compiler.engine import resources
from dsc.compiler.engine.cache import BuildCache, rendered_key, write_part
from dsc.compiler.engine.executors.base import Executor, worker_context
from dsc.compiler.engine.normalise import CHUNK_ROWS, NormalisedSources
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.rowfiles import ArrowFile, RenderStatus, SegmentInfo, read_conversations, rendered_schema
from dsc.compiler.engine.selected import SelectedRows
from dsc.record import BadRow, Conversation
from dsc.spec.model import Spec

if TYPE_CHECKING:
    from dsc.compiler.engine.context import BuildContext

RENDER_TASK_ROWS = 4096  # most rows per render task (one rendered part file)


@dataclass
class RenderTask:
    segment: SegmentInfo  # a normalised segment
    rows: np.ndarray  # row numbers in it, ascending
    parts_dir: str  # the rendered store to add a part to


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


def render_part(task: RenderTask) -> str:
    """A worker task: render (and tokenise) rows of a segment into a new rendered part; returns its path."""
    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(task.rows), CHUNK_ROWS):
            rows = task.rows[start:start + CHUNK_ROWS]
            yield render_batch(rows, read_conversations(segment, rows))

    ctx: BuildContext = worker_context()
    with task.segment.open_rows() as segment:
        part = write_part(Path(task.parts_dir), rendered_schema(ctx.tokenizer is not None, ctx.weighted), batches())
    resources.hand_back_freed()
    return str(part)


@dataclass
class RenderedRows:
    """Render results of one source's segment rows, gathered from its rendered parts."""

    parts: list[str]
    part: np.ndarray  # int32 per segment row: index into `parts`, -1 not rendered
    # int32 where int64 would do: a build's driver holds these for every row of every source
    pos: np.ndarray  # int32 row within that part (a part has at most RENDER_TASK_ROWS)
    status: np.ndarray  # int8
    span_chars: np.ndarray  # int32 supervised characters (a row's: under 2**31)
    sup_tokens: np.ndarray  # int32 supervised tokens
    truncated: np.ndarray
    special: dict[int, list[str]] = field(default_factory=dict)  # segment row → control tokens found
    reason: dict[int, str] = field(default_factory=dict)
    n_tokens: dict[int, int] = field(default_factory=dict)
    reused: int = 0  # selected rows whose results came from the cache
    computed: int = 0  # selected rows rendered (and tokenised) by this build

    @classmethod
    def empty(cls, n: int) -> "RenderedRows":
        return cls([], np.full(n, -1, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int8),
                   np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, bool))

    INDEX_COLUMNS = ["row", "status", "span_chars", "sup_tokens", "truncated", "special", "reason", "n_tokens"]

    def add(self, path: str) -> None:
        with ArrowFile(path, self.INDEX_COLUMNS) as f:
            t = f.read_all()
        rows = t.column("row").to_numpy()
        new = self.part[rows] < 0  # a row two parts hold is the same row: keep the first
        if not new.any():
            return
        index = len(self.parts)
        self.parts.append(path)
        at = np.flatnonzero(new)
        r = rows[at]
        self.part[r], self.pos[r] = index, at
        self.status[r] = t.column("status").to_numpy()[at]
        self.span_chars[r] = t.column("span_chars").to_numpy()[at]
        self.sup_tokens[r] = t.column("sup_tokens").to_numpy()[at]
        self.truncated[r] = t.column("truncated").to_numpy(zero_copy_only=False)[at]
        lengths = pc.list_value_length(t.column("special")).to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(new & (lengths > 0)).tolist():
            self.special[int(rows[i])] = t.column("special")[i].as_py()
        for name, target in (("reason", self.reason), ("n_tokens", self.n_tokens)):
            c = t.column(name)
            if c.null_count < len(c):
                valid = c.is_valid().to_numpy(zero_copy_only=False)
                for i in np.flatnonzero(new & valid).tolist():
                    target[int(rows[i])] = c[i].as_py()


@dataclass
class RowsInFlight:
    """What a build holds in memory between selecting and writing: the selected rows and every
    source's render results. `release()` lets both go once the rows are spilled in output order
    (past that point only counts are needed)."""

    chosen: SelectedRows
    rendered: list[RenderedRows]

    def release(self) -> None:
        del self.chosen, self.rendered
        resources.release_memory()


def render_task_rows(rows: int, workers: int) -> int:
    """Rows per render task: about four tasks per worker, so that workers finish together
    (one task more or less is a quarter of a worker's share), within [CHUNK_ROWS, RENDER_TASK_ROWS]."""
    return int(min(RENDER_TASK_ROWS, max(CHUNK_ROWS, math.ceil(rows / (4 * workers)))))


def render_selected(spec: Spec, read: NormalisedSources, chosen: SelectedRows, store: BuildCache, ex: Executor,
                    progress: Progress, ctx: BuildContext) -> RowsInFlight:
    """Stage 3: render + tokenise the selected rows the cache does not have; the selected rows
    with every source's results, gathered from its rendered parts."""
    rendered: list[RenderedRows] = []
    tasks: list[RenderTask] = []
    task_source: list[int] = []
    for s, seg in enumerate(read.segments):
        rstore = store.rendered(rendered_key(spec, read.keys[s], template=ctx.template, tokenizer=ctx.tokenizer))
        r = RenderedRows.empty(seg.rows)
        for p in rstore.parts():
            r.add(str(p))
        rendered.append(r)
        need = np.unique(chosen.seg[chosen.src == s])
        missing = need[r.part[need] < 0]
        r.reused, r.computed = int(len(need) - len(missing)), int(len(missing))
        size = render_task_rows(len(missing), ex.workers)
        for start in range(0, len(missing), size):
            tasks.append(RenderTask(seg, missing[start:start + size], str(rstore.dir)))
            task_source.append(s)
    if ex.parallel and tasks:  # this process only waits while workers render
        from dsc.compiler.stages.write.card import preload_in_background

        preload_in_background()
    progress.start("render + tokenise", sum(len(t.rows) for t in tasks))
    for t, s, part in zip(tasks, task_source, ex.map(render_part, tasks)):
        rendered[s].add(part)
        progress.advance(len(t.rows))
    progress.done()
    resources.release_memory()
    return RowsInFlight(chosen, rendered)
