"""The compiler driver: spec → sources → records → selection → render → artifact.

Stages, each over data on disk, never over a whole corpus in memory:

1. **normalise** (per source): read, normalise, row transforms — in worker processes, a chunk of
   raw rows at a time — into a normalised segment: the rows (Arrow IPC) and their compact
   selection keys (`dsc.compiler.engine.rowfiles`). In-source exact duplicates are found here.
2. **select** (main process): dedup, mix, capability ratios over the keys of all sources
   (`dsc.compiler.stages.select.mix`), then split by group hash and order by a seeded id hash.
3. **render + tokenise** (workers): the selected rows, read from the memory-mapped segment by
   row number, into rendered parts; then the artifact is written row group by row group in
   final order, gathered from the segments and parts.

Segments and rendered parts live in the build cache (`dsc.compiler.engine.cache`), so a rebuild reads,
renders and tokenises only what changed; with `cache=False` they live in a temporary directory.
Every per-row stage is a pure function of (row, spec, seed) and output order is a seeded hash of
each row's id, so the bytes never depend on the worker count, the cache, or the order of input
files.
"""
from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsc import __version__
from dsc.compiler.stages.write import artifact as art
from dsc.compiler.engine.cache import BuildCache, normalised_key, rendered_key, write_part
from dsc.compiler.core.errors import BuildError
from dsc.compiler.engine.executors import ContextRecipe, Executor, ExecutorChoice, open_executor, worker_context
from dsc.compiler.artifacts.inspection import ArtifactStats, quarantine_group, split_sort_key
from dsc.compiler.stages.select import mix as selection_stage
from dsc.compiler.stages.select.mix import KeyTable, RowClass, Rows, copy_of, dedup_hash, hash_prefixes, iter_ids, row_groups
from dsc.compiler.core.plugins import manifest_plugins
from dsc.compiler.record import BadRow, Conversation, canonical_json
from dsc.compiler.stages.render.render import apply_special_token_policy, is_weighted, render
from dsc.compiler.engine.rowfiles import (
    IPC_OPTIONS,
    ArrowFile,
    NormalisedChunk,
    QuarantineEntry,
    RenderStatus,
    SegmentInfo,
    SegmentWriter,
    id_hash,
    read_conversations,
    rendered_schema,
    segment_row,
    segment_schema,
)
from dsc.compiler.stages.read.sources import RawRow, input_fingerprints, iter_raw_rows, normalise_row
from dsc.compiler.spec.model import LoadedSpec, Spec, load_spec
from dsc.compiler.stages.render.templating import ChatTemplate, load_template
from dsc.compiler.stages.transforms.capabilities import supervised_chars
from dsc.compiler.stages.transforms.pipeline import Transforms, build_transforms, process_row
from dsc.compiler.stages.transforms.pipeline import inference as inference_block

CHUNK_ROWS = 512  # raw rows per normalise task; rows per render batch
RENDER_TASK_ROWS = 4096  # most rows per render task (one rendered part file)
SPLITS = ("train", "validation", "test")
_STAGE3_SEQ = 1 << 50  # rendering quarantines come after every reading one of their source


# ---------------------------------------------------------------------------------------------
# Progress reporting (the CLI plugs a rich progress bar in; the library stays silent)
# ---------------------------------------------------------------------------------------------


class Progress:
    def start(self, stage: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def done(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Values passed between stages
# ---------------------------------------------------------------------------------------------


@dataclass
class BuildContext:
    """Everything a worker needs; inherited by forked workers, never mutated."""

    spec: Spec
    base_dir: Path
    template: ChatTemplate
    tokenizer: Any = None  # dsc.compiler.stages.tokenize.tokenize.RowTokenizer when the spec tokenises
    transforms: Transforms | None = None  # label/assemble/convert/... (None: the spec uses none)
    built_transforms: Transforms | None = None  # as built, active or not (the manifest's inference block)

    @property
    def weighted(self) -> bool:
        """The spec has loss weight rules: rows get `loss_weights` (and `weights` when tokenised)."""
        return is_weighted(self.spec)


@dataclass
class SourceCacheReport:
    """What a build took from the cache for one source."""

    normalised: str  # "hit": read from the cache; "miss": read and normalised now
    rendered_reused: int = 0  # selected rows whose render + tokenise results came from the cache
    rendered_new: int = 0  # selected rows rendered (and tokenised) now

    def to_dict(self) -> dict[str, Any]:
        return {"normalised": self.normalised, "rendered_reused": self.rendered_reused,
                "rendered_new": self.rendered_new}


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict[str, Any]
    quarantined: int
    written: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    cache: dict[str, SourceCacheReport] = field(default_factory=dict)  # per emitted source
    cache_dir: Path | None = None  # None: built without the cache
    tokenizer_paths: str | None = None  # RowTokenizer.fast_paths() when tokenised


# ---------------------------------------------------------------------------------------------
# Stage 1 (workers): raw rows → normalised rows and their keys
# ---------------------------------------------------------------------------------------------


def _normalise_chunk(chunk: list[RawRow]) -> NormalisedChunk:
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
            if ctx.transforms is None:
                rows.append(conv)
                tokens.append(math.nan)
                continue
            stage = "transform"
            outcome = process_row(conv, ctx.transforms)
        except BadRow as e:
            quarantined.append((len(rows), QuarantineEntry.make(
                raw.source, raw.file, raw.row, stage, e.reason, raw.data if raw.data is not None else raw.error)))
            continue
        if outcome.dropped is not None:
            dropped[": ".join(outcome.dropped.split(": ")[:2])] += 1
        for r in outcome.rows:
            rows.append(r)
            tokens.append(outcome.weights.get(r.id, math.nan))
    batch = pa.RecordBatch.from_pylist([segment_row(c) for c in rows], schema=segment_schema())
    return NormalisedChunk(
        rows=batch, classes=[RowClass.of(c) for c in rows], dedup=[dedup_hash(c) for c in rows],
        chars=[supervised_chars(c) for c in rows], tokens=tokens, prov_rows=[c.meta.provenance.row for c in rows],
        id_hashes=[id_hash(c.id) for c in rows], quarantined=quarantined, dropped=dropped, read=read)


# ---------------------------------------------------------------------------------------------
# Stage 3 (workers): normalised rows → rendered parts
# ---------------------------------------------------------------------------------------------


@dataclass
class RenderTask:
    segment: str  # rows.arrow of a normalised segment
    batch_rows: list[int]  # its record batches' sizes
    rows: np.ndarray  # row numbers in it, ascending
    parts_dir: str  # the rendered store to add a part to


def _render_batch(rows: np.ndarray, convs: list[Conversation]) -> pa.RecordBatch:
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
            r = render(shown, ctx.template, ctx.spec.loss)
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


def _finish_chunk(task: RenderTask) -> str:
    """Render (and tokenise) rows of a segment into a new rendered part; returns its path."""
    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(task.rows), CHUNK_ROWS):
            rows = task.rows[start:start + CHUNK_ROWS]
            yield _render_batch(rows, read_conversations(segment, rows))

    ctx: BuildContext = worker_context()
    with ArrowFile(task.segment, batch_rows=task.batch_rows) as segment:
        return str(write_part(Path(task.parts_dir), rendered_schema(ctx.tokenizer is not None, ctx.weighted),
                              batches()))


# ---------------------------------------------------------------------------------------------
# Selection helpers (main process, over compact keys)
# ---------------------------------------------------------------------------------------------


def _unit_hash(*parts: Any) -> float:
    """A seeded, order-independent uniform number in [0, 1) for a key."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(spec: Spec, conv: Conversation) -> str:
    key = conv.group if spec.split.by == "group" else conv.id
    return SPLITS[_split_code(spec, np.array([_unit_hash(spec.seed, "split", key)]))[0]]


def _split_code(spec: Spec, u: np.ndarray) -> np.ndarray:
    """0 train, 1 validation, 2 test for uniform numbers u."""
    code = np.zeros(len(u), np.int8)
    code[u < spec.split.validation + spec.split.test] = 2
    code[u < spec.split.validation] = 1
    return code


def order_key(spec: Spec, conv_id: str) -> str:
    return hashlib.sha256(f"{spec.seed}\x1forder\x1f{conv_id}".encode("utf-8")).hexdigest()


def _final_order(spec: Spec, table: KeyTable, sel: Rows) -> tuple[np.ndarray, np.ndarray]:
    """(split code per selected row, the selected rows' positions in output order: split by
    split, each by `order_key`; equal keys keep selection order)."""
    n = len(sel)
    split_keys = row_groups(table, sel) if spec.split.by == "group" else iter_ids(table, sel)
    u = hash_prefixes(split_keys, f"{spec.seed}\x1fsplit\x1f", n).astype(np.float64) / 2.0**64
    split = _split_code(spec, u)
    prefix = hash_prefixes(iter_ids(table, sel), f"{spec.seed}\x1forder\x1f", n)
    order = np.lexsort((prefix, split))  # stable; split codes are in SPLITS order
    sp, sr = prefix[order], split[order]
    tied = np.flatnonzero((sp[1:] == sp[:-1]) & (sr[1:] == sr[:-1]))
    if tied.size:  # equal 64-bit prefixes: order these runs by the whole key (stable)
        i = 0
        while i < len(tied):
            s = e = tied[i]
            while i < len(tied) and tied[i] == e:
                e += 1
                i += 1
            run = order[s:e + 1]
            ids = next(iter_ids(table, sel[run]))
            keys = [order_key(spec, x) for x in ids]
            order[s:e + 1] = run[sorted(range(len(run)), key=keys.__getitem__)]
    return split, order


def _selection_weight(spec: Spec, table: KeyTable) -> np.ndarray | None:
    """The measure capability ratios count in, per row (None: rows; copies weigh what their
    original does)."""
    caps = spec.capabilities
    measure = caps.measure if caps is not None else "rows"
    if measure == "chars":
        return table.chars.astype(np.float64)
    if measure == "tokens":
        return np.nan_to_num(table.tokens, nan=0.0)
    return None


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def release_memory() -> None:
    """Hand memory freed by a finished stage back to the system (Arrow's pool and the C heap keep
    it otherwise), so that the next stage's peak does not stack on the last one's."""
    import ctypes

    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _bad_row_limit(spec: Spec, rows_read: int) -> int:
    limit = spec.max_bad_rows
    if isinstance(limit, float):
        return int(limit * rows_read)
    return int(limit)


def _check_bad_rows(spec: Spec, bad: int, rows_read: int, where: str, sample: list[QuarantineEntry]) -> None:
    limit = _bad_row_limit(spec, rows_read)
    if bad > limit:
        examples = "; ".join(q.example() for q in sample[:3])
        raise BuildError(
            f"{bad} of {rows_read} rows were quarantined {where}, more than max_bad_rows allows ({limit}); "
            f"e.g. {examples}. Fix the data, or raise max_bad_rows in the spec.")


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"dsc": __version__}
    # matplotlib draws the dataset card's charts (part of the artifact's bytes).
    for name in ("pyarrow", "jinja2", "tokenizers", "pydantic", "ruamel.yaml", "matplotlib"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def default_out_dir(loaded: LoadedSpec) -> Path:
    return loaded.base_dir / "build" / loaded.spec.name


def build(spec_path: str | Path, out_dir: str | Path | None = None, *, workers: int = 1,
          executor: ExecutorChoice | None = None, progress: Progress | None = None,
          before_place: Callable[[dict[str, Any]], None] | None = None,
          cache: bool = True, cache_dir: str | Path | None = None) -> BuildResult:
    """Compile a spec into an artifact directory. Raises SpecError (exit 2) or BuildError (exit 1).

    `before_place(manifest)` runs when the new artifact is complete but not yet in place; if it
    raises, the previous artifact stays (`dsc build --locked` checks the version there).
    `cache`: reuse and keep normalised and rendered rows in `cache_dir` (default `$DSC_CACHE_DIR`,
    else ~/.cache/dsc); the artifact's bytes are the same either way.
    `executor`: where the per-row stages run (default: the local executor with `workers`); the
    artifact's bytes are the same on every backend."""
    loaded = load_spec(spec_path)
    return build_loaded(loaded, out_dir, workers=workers, executor=executor, progress=progress,
                        before_place=before_place, cache=cache, cache_dir=cache_dir)


def resolve_inputs(loaded: LoadedSpec) -> list[dict[str, Any]]:
    """`{source, path, size, sha256}` of every input the spec reads, in a stable order (the
    manifest's `inputs`; `dsc.lock` pins them)."""
    spec, base = loaded.spec, loaded.base_dir
    inputs: list[dict[str, Any]] = []
    for name in sorted(spec.sources):
        with loaded.at("sources", name):
            for fp in input_fingerprints(name, spec.sources[name], base):
                inputs.append({"source": name, **fp})
    return inputs


@dataclass
class _Rendered:
    """Render results of one source's segment rows, gathered from its rendered parts."""

    parts: list[str]
    part: np.ndarray  # int32 per segment row: index into `parts`, -1 not rendered
    pos: np.ndarray  # int64 row within that part
    status: np.ndarray  # int8
    span_chars: np.ndarray
    sup_tokens: np.ndarray
    truncated: np.ndarray
    special: dict[int, list[str]] = field(default_factory=dict)  # segment row → control tokens found
    reason: dict[int, str] = field(default_factory=dict)
    n_tokens: dict[int, int] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int) -> "_Rendered":
        return cls([], np.full(n, -1, np.int32), np.zeros(n, np.int64), np.zeros(n, np.int8),
                   np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool))

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
class _Sources:
    """The emitted sources' segments and the global key table over them."""

    names: list[str]
    segments: list[SegmentInfo]
    table: KeyTable
    source: np.ndarray  # per key: index into names
    seg_row: np.ndarray  # per key: row number in its source's rows.arrow


def _normalise_source(loaded: LoadedSpec, name: str, key: str, store: BuildCache, ex: Executor,
                      progress: Progress, inputs: list[dict[str, Any]]) -> SegmentInfo:
    spec, base = loaded.spec, loaded.base_dir
    hashed = {i["path"]: i["sha256"] for i in inputs if i["source"] == name}

    def raw_rows() -> Iterator[RawRow]:
        with loaded.at("sources", name):
            yield from iter_raw_rows(name, spec.sources[name], base, defer_parsing=True, known_sha256=hashed)

    with store.new_normalised() as tmp:
        writer = SegmentWriter(tmp, name)
        for chunk in ex.map(_normalise_chunk, _chunks(raw_rows(), CHUNK_ROWS)):
            writer.add(chunk)
            progress.advance(chunk.read)
        _, files = writer.close()
        return store.commit_normalised(tmp, key, files)


def _conversations(sources: _Sources, src: np.ndarray, seg_row: np.ndarray, suffix: np.ndarray
                   ) -> list[Conversation]:
    """Selected rows as Conversations (copies included), in the order given."""
    out: list[Conversation | None] = [None] * len(src)
    for s in np.unique(src).tolist():
        at = np.flatnonzero(src == s)
        with sources.segments[s].open_rows() as f:
            convs = read_conversations(f, seg_row[at])
        for i, conv in zip(at.tolist(), convs):
            for k in suffix[i].split("#")[1:]:
                conv = copy_of(conv, int(k))
            out[i] = conv
    return out  # type: ignore[return-value]


@dataclass
class _Read:
    """Stage 1 of every emitted source: its segment, and what reading it reported."""

    names: list[str]
    segments: list[SegmentInfo]
    keys: list[str]  # each segment's cache key
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    read_counts: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    dropped: Counter[str] = field(default_factory=Counter)  # filter / decontamination reasons

    @property
    def rows_read(self) -> int:
        return sum(self.read_counts.values())


def _read(loaded: LoadedSpec, inputs: list[dict[str, Any]], store: BuildCache, ex: Executor, progress: Progress,
          template: ChatTemplate, tokenizer: Any, report: dict[str, SourceCacheReport]) -> _Read:
    """Stage 1: read + normalise each source, unless the cache has its segment."""
    spec, base = loaded.spec, loaded.base_dir
    read = _Read(sorted(spec.emitted_sources()), [], [])
    progress.start("read + normalise")
    for name in read.names:
        key = normalised_key(spec, name, inputs, base, template=template, tokenizer=tokenizer)
        seg = store.normalised(key)
        report[name] = SourceCacheReport("hit" if seg is not None else "miss")
        if seg is None:
            seg = _normalise_source(loaded, name, key, store, ex, progress, inputs)
        else:
            progress.advance(seg.rows_read)
        read.segments.append(seg)
        read.keys.append(key)
        if seg.rows_read:
            read.read_counts[name] = seg.rows_read
        if seg.duplicates:
            read.duplicates[name] = seg.duplicates
        read.dropped.update(seg.dropped)
        read.quarantine.extend(seg.quarantine())
    progress.done()
    return read


@dataclass
class _Chosen:
    """Stage 2: the selected rows (`rows`: keys and copy suffixes), where each is, its split and
    the output order."""

    sources: _Sources
    selection: Any  # mix.SelectionResult (its report goes to the manifest)
    rows: Rows
    split: np.ndarray  # split code per selected row
    order: np.ndarray  # selected rows in output order
    src: np.ndarray  # per selected row: source index
    seg: np.ndarray  # per selected row: row number in the source's segment


def _choose(spec: Spec, read: _Read) -> _Chosen:
    """Stage 2: dedup, mix, capability ratios over keys; split by group hash, order by id hash."""
    keys = [seg.keys() for seg in read.segments]
    sources = _Sources(read.names, read.segments, KeyTable.concat([k for k, _ in keys]),
                       np.repeat(np.arange(len(read.names), dtype=np.int32), [len(k) for k, _ in keys]),
                       np.concatenate([r for _, r in keys]) if keys else np.zeros(0, np.int64))
    del keys
    table = sources.table
    selection = selection_stage.select(table, seed=spec.seed, dedup_rows=spec.dedup, mix=spec.mix,
                                       capabilities=spec.capabilities, weight=_selection_weight(spec, table))
    rows: Rows = selection.rows
    split, order = _final_order(spec, table, rows)
    return _Chosen(sources, selection, rows, split, order, sources.source[rows.base], sources.seg_row[rows.base])


def _render_task_rows(rows: int, workers: int) -> int:
    """Rows per render task: about four tasks per worker, so that workers finish together
    (one task more or less is a quarter of a worker's share), within [CHUNK_ROWS, RENDER_TASK_ROWS]."""
    return int(min(RENDER_TASK_ROWS, max(CHUNK_ROWS, math.ceil(rows / (4 * workers)))))


def _render(spec: Spec, read: _Read, chosen: _Chosen, store: BuildCache, ex: Executor, progress: Progress,
            template: ChatTemplate, tokenizer: Any, report: dict[str, SourceCacheReport]) -> list[_Rendered]:
    """Stage 3: render + tokenise the selected rows the cache does not have."""
    rendered: list[_Rendered] = []
    tasks: list[RenderTask] = []
    task_source: list[int] = []
    for s, (name, seg) in enumerate(zip(read.names, read.segments)):
        rstore = store.rendered(rendered_key(spec, read.keys[s], template=template, tokenizer=tokenizer))
        r = _Rendered.empty(seg.rows)
        for p in rstore.parts():
            r.add(str(p))
        rendered.append(r)
        need = np.unique(chosen.seg[chosen.src == s])
        missing = need[r.part[need] < 0]
        report[name].rendered_reused = int(len(need) - len(missing))
        report[name].rendered_new = int(len(missing))
        size = _render_task_rows(len(missing), ex.workers)
        for start in range(0, len(missing), size):
            tasks.append(RenderTask(str(seg.rows_path), seg.batch_rows, missing[start:start + size], str(rstore.dir)))
            task_source.append(s)
    if ex.parallel and tasks:  # this process only waits while workers render
        from dsc.compiler.stages.write.card import preload_in_background

        preload_in_background()
    progress.start("render + tokenise", sum(len(t.rows) for t in tasks))
    for t, s, part in zip(tasks, task_source, ex.map(_finish_chunk, tasks)):
        rendered[s].add(part)
        progress.advance(len(t.rows))
    progress.done()
    return rendered


@dataclass
class _Tally:
    """What rendering did to the selected rows, counted per split for the manifest."""

    written: dict[str, int] = field(default_factory=dict)
    split_rows: dict[str, np.ndarray] = field(default_factory=dict)  # split → selected rows written, in order
    supervised_chars: Counter[str] = field(default_factory=Counter)
    supervised_tokens: Counter[str] = field(default_factory=Counter)
    per_source: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_label: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_capability: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    special_found: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    failed: list[int] = field(default_factory=list)  # selected rows rendering rejected, in output order


def _tally(spec: Spec, chosen: _Chosen, rendered: list[_Rendered]) -> tuple[_Tally, np.ndarray]:
    """(the tally, each selected row's RenderStatus); overflow: error fails here, naming the
    first too-long row in output order."""
    offsets = np.cumsum([0] + [len(r.part) for r in rendered])
    flat = offsets[chosen.src] + chosen.seg  # index into the sources' rows laid end to end

    def per_row(attr: str) -> np.ndarray:
        return np.concatenate([getattr(r, attr) for r in rendered])[flat] if rendered else np.zeros(0)

    status = per_row("status")
    order = chosen.order
    error_rows = np.flatnonzero(status[order] == RenderStatus.TOO_LONG_ERROR)
    if error_rows.size:
        i = int(order[error_rows[0]])
        conv = _conversations(chosen.sources, chosen.src[[i]], chosen.seg[[i]], chosen.rows.suffix[[i]])[0]
        prov = conv.meta.provenance
        n_tokens = rendered[int(chosen.src[i])].n_tokens[int(chosen.seg[i])]
        raise BuildError(f"{prov.file}:{prov.row + 1}: {n_tokens} tokens is more than tokenize.max_length="
                         f"{spec.tokenize.max_length} (tokenize.overflow: error; use drop or truncate "
                         f"to build anyway)")
    span_chars, sup_tokens, truncated = per_row("span_chars"), per_row("sup_tokens"), per_row("truncated")
    table = chosen.sources.table
    any_special = any(r.special for r in rendered)
    t = _Tally()
    ordered_split = chosen.split[order]
    for code, name in enumerate(SPLITS):
        rows = order[ordered_split == code]
        if not len(rows):
            continue
        ok = status[rows] == RenderStatus.OK
        good = rows[ok]
        t.failed.extend(rows[~ok].tolist())
        t.split_rows[name] = good
        t.written[name] = int(len(good))
        if not len(good):
            continue
        t.supervised_chars[name] += int(span_chars[good].sum())
        t.supervised_tokens[name] += int(sup_tokens[good].sum())
        t.truncated += int(truncated[good].sum())
        classes, counts = np.unique(table.cls[chosen.rows.base[good]], return_counts=True)
        for c, k in zip(classes.tolist(), counts.tolist()):
            rc = table.classes[c]
            t.per_source[rc.source][name] += k
            t.per_label[str(rc.label)][name] += k
            t.per_capability[str(rc.capability)][name] += k
        if any_special:
            for i in good.tolist():
                found = rendered[int(chosen.src[i])].special.get(int(chosen.seg[i]))
                if found:
                    t.special_found.update(found)
    return t, status


def _rendering_quarantine(spec: Spec, template: ChatTemplate, chosen: _Chosen, rendered: list[_Rendered],
                          tally: _Tally, status: np.ndarray) -> list[QuarantineEntry]:
    """The rows rendering or tokenising rejected, as the quarantine reports them."""
    if not tally.failed:
        return []
    at = np.array(tally.failed, np.int64)
    convs = _conversations(chosen.sources, chosen.src[at], chosen.seg[at], chosen.rows.suffix[at])
    position = np.empty(len(chosen.order), np.int64)
    position[chosen.order] = np.arange(len(chosen.order))
    out = []
    for i, conv in zip(tally.failed, convs):
        st = int(status[i])
        prov = conv.meta.provenance
        seq = _STAGE3_SEQ + int(position[i])
        if st == RenderStatus.RENDER_FAILED:
            try:
                conv, _ = apply_special_token_policy(conv, template, spec.special_tokens)
            except BadRow:
                pass  # the policy itself rejected the row: the row as read is reported
            reason = rendered[int(chosen.src[i])].reason[int(chosen.seg[i])]
            out.append(QuarantineEntry.make(conv.meta.source, prov.file, prov.row, "render", reason, conv.to_dict(),
                                            seq=seq))
        elif st == RenderStatus.TOO_LONG:
            out.append(QuarantineEntry.make(
                conv.meta.source, prov.file, prov.row, "tokenize",
                f"longer than tokenize.max_length={spec.tokenize.max_length} tokens (overflow: drop)",
                {"id": conv.id}, bad=False, seq=seq))
        else:
            out.append(QuarantineEntry.make(conv.meta.source, prov.file, prov.row, "tokenize",
                                            "nothing supervised after truncation", {"id": conv.id}, seq=seq))
    return out


@contextlib.contextmanager
def _rare_cycle_collection() -> Iterator[None]:
    """The build allocates millions of short-lived containers (rows, messages, token lists) that
    reference counting frees; at the default thresholds the cyclic collector would walk the
    growing heap again and again (≈6% of a build's time). Forked workers inherit the setting."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def build_loaded(loaded: LoadedSpec, out_dir: str | Path | None = None, *, workers: int = 1,
                 executor: ExecutorChoice | None = None, progress: Progress | None = None,
                 before_place: Callable[[dict[str, Any]], None] | None = None,
                 cache: bool = True, cache_dir: str | Path | None = None) -> BuildResult:
    out = Path(out_dir) if out_dir is not None else default_out_dir(loaded)
    choice = executor if executor is not None else ExecutorChoice("local", workers)
    with art.output_lock(out), _rare_cycle_collection():
        return _build_loaded(loaded, out, executor=choice, progress=progress, before_place=before_place,
                             cache=cache, cache_dir=cache_dir)


def build_context(loaded: LoadedSpec) -> BuildContext:
    """What the per-row stages need: the template, the tokenizer and the transforms, loaded once
    per process (the driver; a Ray actor rebuilds it the same way from the spec)."""
    spec, base = loaded.spec, loaded.base_dir
    with loaded.at("template"):
        template = load_template(spec.template, base)
    tokenizer = None
    if spec.tokenize is not None:
        from dsc.compiler.stages.tokenize.tokenize import RowTokenizer

        with loaded.at("tokenize", "tokenizer"):
            tokenizer = RowTokenizer.load(spec.tokenize, base)
    with loaded.at():  # prompt/tool files are checked by load_spec; this names any left (exit 2)
        transforms = build_transforms(spec, base, template=template, tokenizer=tokenizer)
    return BuildContext(spec=spec, base_dir=base, template=template, tokenizer=tokenizer,
                        transforms=transforms if transforms.active() else None, built_transforms=transforms)


def _build_loaded(loaded: LoadedSpec, out: Path, *, executor: ExecutorChoice,
                  progress: Progress | None, before_place: Callable[[dict[str, Any]], None] | None, cache: bool,
                  cache_dir: str | Path | None) -> BuildResult:
    spec = loaded.spec
    progress = progress or Progress()
    ctx = build_context(loaded)
    template, tokenizer, transforms = ctx.template, ctx.tokenizer, ctx.built_transforms
    inputs = resolve_inputs(loaded)
    cache_report: dict[str, SourceCacheReport] = {}

    with BuildCache.open(cache, cache_dir) as store:
        with open_executor(executor, ctx, ContextRecipe(str(loaded.path))) as ex:
            read = _read(loaded, inputs, store, ex, progress, template, tokenizer, cache_report)
            bad = [q for q in read.quarantine if q.bad]
            _check_bad_rows(spec, len(bad), read.rows_read, "while reading", bad)
            release_memory()
            chosen = _choose(spec, read)
            release_memory()
            rendered = _render(spec, read, chosen, store, ex, progress, template, tokenizer, cache_report)
        release_memory()
        tally, status = _tally(spec, chosen, rendered)
        quarantine = read.quarantine + _rendering_quarantine(spec, template, chosen, rendered, tally, status)
        del status
        bad = [q for q in quarantine if q.bad]
        _check_bad_rows(spec, len(bad), read.rows_read, "in total", bad)
        if not tally.written.get("train"):
            raise BuildError("the build produced no train rows (see quarantine reasons with --out and the summary)")

        quarantine.sort(key=QuarantineEntry.sort_key)
        reasons: Counter[str] = Counter(quarantine_group(q.stage, q.reason) for q in quarantine)
        dropped_long = sum(1 for q in quarantine if q.stage == "tokenize" and not q.bad)
        bad_rows = sum(1 for q in quarantine if q.bad)
        warnings = []
        if tally.special_found:
            warnings.append("special-token strings found inside message content: "
                            + ", ".join(f"{t!r} ×{n}" for t, n in sorted(tally.special_found.items()))
                            + f" (special_tokens: {spec.special_tokens.value})")

        progress.start("write artifact")
        layout = _Layout(tally.split_rows, spec.output.shard_rows, spec.output.row_group_rows)
        with art.staged_directory(out) as tmp, _Spill(store.tmp, layout, tokenizer is not None,
                                                                  ctx.weighted) as spill:
            _distribute(spill, layout, chosen, rendered)
            # Past this point only counts are needed: the keys and per-row arrays go.
            selection_report = chosen.selection.report
            del chosen, rendered
            tally.split_rows.clear()
            release_memory()
            files: dict[str, str] = {}
            # The card's counts, taken from the rows as they are written (not read back).
            stats = ArtifactStats(tokenised=tokenizer is not None)
            for name in sorted(tally.written, key=split_sort_key):
                stats.start_split(name)
            for name, n_rows in tally.written.items():
                names_ = art.write_split(tmp, name, _counted(spill.tables(name), stats, name), n_rows,
                                         tokenized=tokenizer is not None, weighted=ctx.weighted,
                                         shard_rows=spec.output.shard_rows,
                                         row_group_rows=spec.output.row_group_rows)
                for n in names_:
                    files[n] = art.sha256_file(tmp / n)
            art.write_jsonl(tmp / art.QUARANTINE, (json.loads(q.line) for q in quarantine))
            (tmp / art.TEMPLATE_FILE).write_text(template.source, encoding="utf-8")
            manifest: dict[str, Any] = {
                "format": art.ARTIFACT_FORMAT,
                "name": spec.name,
                "dsc_version": __version__,
                "spec": spec.model_dump(mode="json"),
                "spec_sha256": hashlib.sha256(loaded.text.encode("utf-8")).hexdigest(),
                "inputs": inputs,
                "template": {"ref": spec.template, "sha256": template.sha256, "end_of_turn": template.end_of_turn},
                "tokenizer": ({"ref": spec.tokenize.tokenizer, "sha256": tokenizer.sha256,
                               "max_length": spec.tokenize.max_length, "overflow": spec.tokenize.overflow}
                              if tokenizer is not None else None),
                "libraries": library_versions(),
                "inference": inference_block(spec, transforms),
                "selection": selection_report,
                "counts": {
                    "read": dict(sorted(read.read_counts.items())),
                    "quarantined": len(quarantine),
                    "bad_rows": bad_rows,
                    "quarantine_reasons": dict(sorted(reasons.items())),
                    "duplicates_removed": dict(sorted(read.duplicates.items())),
                    "written": dict(tally.written),
                    "per_source": {s: dict(sorted(c.items())) for s, c in sorted(tally.per_source.items())},
                    "per_label": {s: dict(sorted(c.items())) for s, c in sorted(tally.per_label.items())},
                    "per_capability": {s: dict(sorted(c.items())) for s, c in sorted(tally.per_capability.items())
                                       if s != "None"},
                    "dropped": dict(sorted(read.dropped.items())),
                    "supervised_chars": dict(tally.supervised_chars),
                    "supervised_tokens": dict(tally.supervised_tokens) if tokenizer is not None else None,
                    "dropped_too_long": dropped_long,
                    "truncated": tally.truncated,
                    "special_tokens_in_content": dict(sorted(tally.special_found.items())),
                },
                "files": dict(sorted(files.items())),
            }
            plugins = manifest_plugins(spec, loaded.plugins, loaded.base_dir)
            if plugins:  # absent without user code, so plugin-free specs keep their versions
                manifest["plugins"] = [m.to_dict() for m in plugins]
            manifest = art.write_manifest(tmp, manifest).to_dict()
            from dsc.compiler.stages.write.card import write_card

            write_card(tmp, manifest, stats)
            progress.done()
            if before_place is not None:
                before_place(manifest)
    return BuildResult(out_dir=out, manifest=manifest, quarantined=len(quarantine), written=dict(tally.written),
                       warnings=warnings, cache=cache_report, cache_dir=store.root if store.persistent else None,
                       tokenizer_paths=tokenizer.fast_paths() if tokenizer is not None else None)


BUCKET_ROWS = 4096  # rows per spill bucket (a few row groups; tens of MB)
# Output rows gathered before they are distributed to the buckets (whichever limit comes first).
SPILL_FLUSH_ROWS = 8192
SPILL_FLUSH_BYTES = 48 << 20
_POS = "__pos"


class _Layout:
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


class _Spill:
    """Output rows distributed into files by output position (each file a range of positions),
    then read back a file at a time in order: an external distribution sort, so that writing in
    output order never reads the segments out of order."""

    def __init__(self, tmp_root: Path, layout: _Layout, tokenized: bool, weighted: bool):
        import tempfile

        self.layout = layout
        self.schema = art.row_schema(tokenized, weighted)
        self.dir = Path(tempfile.mkdtemp(prefix="spill-", dir=tmp_root))
        self._writers: dict[int, tuple[Any, Any]] = {}
        self._pending: list[pa.Table] = []  # rows added but not yet distributed
        self._pending_rows = self._pending_bytes = 0

    def __enter__(self) -> "_Spill":
        return self

    def __exit__(self, *exc: Any) -> None:
        import shutil

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


def _distribute(spill: _Spill, layout: _Layout, chosen: _Chosen, rendered: list[_Rendered]) -> None:
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
                        out = _output_table(spill.schema, segment.take(seg_row[some]), f.take(r.pos[seg_row[some]]),
                                            suffix[some])
                        spill.add(out, position[some])


def _counted(tables: Iterator[pa.Table], stats: ArtifactStats, split: str) -> Iterator[pa.Table]:
    for table in tables:
        for batch in table.to_batches():
            stats.add_batch(split, batch)
        yield table


def _output_table(schema: pa.Schema, seg: pa.Table, ren: pa.Table, suffix: np.ndarray) -> pa.Table:
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


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


__all__ = ["build", "build_loaded", "BuildResult", "Progress", "SourceCacheReport", "assign_split", "order_key",
           "canonical_json"]
