"""Stage 2 as tasks: dedup, mix, capability ratios, split and output order over partitions of
the selection keys, with the same rows in the same order as `mix.select` + `order.final_order`
over the keys of all sources in one process (`engine.selected.select_rows`, the definition).

Every step runs one definition (`stages.select.mix` / `order`) over a partition that holds
every row the step compares with each other, in the order the one-process selection would hand
them over, so each partition's result is that selection's result restricted to it:

1. **scatter** (a task per source): its segment's keys → the first step's partitions.
2. **dedup** (`dedup: true`; a task per partition of the dedup hash): rows sorted by (id,
   source, row), the first of each dedup key kept (the smallest id).
3. **mix** (a task per partition of a bucket's groups, two rounds, then a boundary task per
   bucket): the partition's rows, capped per group and ranked, with their pool's size and a
   histogram of its ranks; the driver resolves every bucket's target from the pools' sizes
   (`mix.plan_mix`, counts only) and where its take ends (whole passes over the pool, copies
   past the first, then the rank bins taken whole, then some rows of one bin); each partition
   sends its share on, and the rows of that one bin go to the bucket's boundary task, which
   takes the first of them in rank order. Rows in no bucket pass on.
4. **capability ratios** (a task per rebalanced capability, two rounds): what each has (in the
   spec's measure), the driver's targets (`mix.capability_targets`), then each takes its rows.
   Untagged rows pass on.
5. **order** (a task per (split, range of the order hash)): each row's split and order hash
   are computed as it is routed; a range task sorts its rows (ties: selection order). Ranges
   are concatenated split by split: the output order.

A row carries its place in the one-process selection order as sort keys: (id, source, row) after
dedup, the bucket, the pass over its pool and its rank in it before that (a take's order), the
capability and place in its take before that.
A partition sorts by them before it compares anything, so what it computes (ranks, ties,
weight sums in Python floats) is what the one-process selection computes.

Rows move between tasks through files (`engine.exchange`); the driver keeps counts only. The
order step sends the selected rows, each with its range and place in it, on to the render
blocks (`Selection`): no step after selection gathers the rows in one process either.
A capability is one task (its weights are added in selection order, one float after another, so
its memory grows with it); dedup, mix and order partitions grow in number with the corpus.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsc.compiler.engine import exchange
from dsc.compiler.engine.exchange import SegmentBlocks
from dsc.compiler.engine.executors.base import Executor, worker_context
from dsc.compiler.engine.normalise import NormalisedSources
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.rowfiles import SegmentInfo, id_hashes
from dsc.compiler.engine.selected import selection_weight
from dsc.compiler.stages.select import mix
from dsc.compiler.stages.select.mix import CapabilityTally, KeyTable, RowClass, Rows
from dsc.compiler.stages.select.order import (
    order_prefixes,
    sorted_order,
    split_codes,
)
from dsc.spec.model import Spec

DEDUP, MIX, CAPS, ORDER, RENDER, MIX_BOUNDARY = range(6)  # the steps, in the order rows go through them
STEP_NAMES = ("dedup", "mix", "capabilities", "order", "render", "mix-boundary")  # render: `engine.rendering`'s
RANK_BITS = 12  # a mix pool's rank histogram: 4,096 bins of the rank's first bits

EXCHANGE_SCHEMA = pa.schema([
    ("src", pa.int32()),  # source index
    ("seg", pa.int64()),  # row in the source's segment
    ("id", pa.string()),
    ("group", pa.string()),  # null where the group is the id
    ("cls", pa.int32()),  # class code over all sources
    ("dedup", pa.uint64()),
    ("chars", pa.int64()),
    ("tokens", pa.float64()),
    ("suffix", pa.string()),  # copy suffix
    ("b_idx", pa.int32()),  # mix bucket (number of buckets: in none)
    ("b_pass", pa.int32()),  # the bucket's pass over its pool that took it (copies: past the first)
    ("b_rank", pa.binary()),  # its rank in the bucket's pool: sha256 of the seeded mix key
    ("c_idx", pa.int32()),  # rebalanced capability (number of them: untagged)
    ("c_pos", pa.int64()),  # place in the capability's take
    ("split", pa.int8()),  # set as a row is routed to its order range
    ("oprefix", pa.uint64()),  # first 64 bits of its order key, likewise
])
# Selection order after each step: what the one-process selection's row list is sorted by
ORDER_AFTER_DEDUP = ["id", "src", "seg"]
ORDER_AFTER_MIX = ["b_idx", "b_pass", "b_rank", *ORDER_AFTER_DEDUP]  # a take's order: pass, then rank
ORDER_AFTER_CAPS = ["c_idx", "c_pos", *ORDER_AFTER_MIX]
# The selected rows as the order step sends them to the render blocks: each row's range of the
# output order and place in it
SELECTED_SCHEMA = pa.schema([("src", pa.int32()), ("seg", pa.int64()), ("suffix", pa.string()), ("cls", pa.int32()),
                             ("range", pa.int32()), ("pos", pa.int64())])

Dest = tuple[int, int]  # (step, partition)


@dataclass(frozen=True)
class SelectPlan:
    """What every selection task knows: the steps this spec runs, the partitions, the classes
    of all sources and which bucket and capability each class belongs to."""

    dir: str  # the exchange directory
    steps: tuple[int, ...]  # in order; ORDER always last
    dedup_parts: int  # partitions of the dedup hash, and of each mix bucket's groups
    order_bits: int  # log2 of the order ranges per split
    classes: list[RowClass]
    bucket_of: np.ndarray  # per class code (and a trailing -1): bucket index, -1 none
    cap_of: np.ndarray  # per class code (and a trailing -1): capability index, -1 none
    buckets: int
    caps: int
    render_blocks: SegmentBlocks | None = None  # where the order step sends the selected rows (set before it)

    def after(self, step: int) -> int:
        return next(s for s in self.steps if s > step)


def make_plan(spec: Spec, read: NormalisedSources, directory: Path, workers: int
              ) -> tuple[SelectPlan, list[np.ndarray]]:
    """(the plan, per source: its class codes → codes over all sources, merged in source order
    as the one-process selection merges them)."""
    classes, remaps = mix.merge_classes(seg.classes for seg in read.segments)
    caps = spec.capabilities
    rebalance = caps is not None and (caps.rates is not None or caps.proportions is not None)
    steps = tuple(s for s, on in ((DEDUP, spec.dedup), (MIX, bool(spec.mix)), (CAPS, rebalance), (ORDER, True)) if on)
    n = sum(seg.live for seg in read.segments)
    parts = exchange.partitions(n, workers)
    plan = SelectPlan(
        str(directory), steps, parts, max(0, math.ceil(math.log2(parts))), classes,
        mix.bucket_codes(classes, spec.mix) if spec.mix else np.full(len(classes) + 1, -1, np.int64),
        mix.capability_codes(classes, caps) if rebalance else np.full(len(classes) + 1, -1, np.int64),  # type: ignore[arg-type]
        len(spec.mix or {}), len(caps.requested()) if rebalance else 0)  # type: ignore[union-attr]
    return plan, remaps


# ---------------------------------------------------------------------------------------------
# Rows between tasks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MixPool:
    """A bucket's rows, what its group cap dropped, and its pool (what it takes from)."""

    available: int = 0
    dropped: int = 0
    pool: int = 0
    ranks: np.ndarray | None = None  # the pool's rows per bin of the rank's first RANK_BITS bits

    def __add__(self, other: MixPool) -> MixPool:
        return MixPool(self.available + other.available, self.dropped + other.dropped, self.pool + other.pool,
                       self.ranks + other.ranks)  # type: ignore[operator]


@dataclass(frozen=True)
class MixCut:
    """Where a bucket's take ends (from the pools' rank histograms): whole passes over its pool,
    then the rows of its last pass ranked in a bin below `bin`, then `more` rows of bin `bin`
    (in rank order, by the bucket's boundary task)."""

    passes: int
    bin: int
    more: int


@dataclass(frozen=True)
class MixTaken:
    selected: int
    copies: int


@dataclass
class Done:
    """A selection task's result: what it sent on, and what it counted."""

    sent: exchange.Sent
    passed: Counter[int] = field(default_factory=Counter)  # step → rows in none of its partitions
    ordered: Counter[int] = field(default_factory=Counter)  # source → rows sent to the order step
    counted: MixPool | MixTaken | CapabilityTally | int | None = None  # the step's count (order: rows)
    removed: Counter[str] = field(default_factory=Counter)  # dedup: rows removed, per source


Runner = Callable[[Callable[[Any], Done], Iterable[Any]], list[Done]]


def _keys(t: pa.Table, classes: list[RowClass]) -> tuple[KeyTable, Rows]:
    """The rows of an exchange table as a KeyTable and Rows over it (copy suffixes included)."""
    def arr(name: str) -> pa.Array:
        return t.column(name).combine_chunks()

    table = KeyTable(ids=arr("id"), groups=arr("group"), cls=t.column("cls").to_numpy().astype(np.int32),
                     classes=classes, dedup=t.column("dedup").to_numpy().astype(np.uint64),
                     chars=t.column("chars").to_numpy().astype(np.int64),
                     tokens=t.column("tokens").to_numpy().astype(np.float64))
    rows = Rows.of(np.arange(t.num_rows, dtype=np.int64))
    at, suffixes = _copy_suffixes(t)
    if suffixes:
        rows.suffix[at] = suffixes
    return table, rows


def _copy_suffixes(t: pa.Table) -> tuple[np.ndarray, list[str]]:
    """(the rows that are copies, their suffixes): most rows are none, and get no Python string."""
    at = np.flatnonzero(pc.binary_length(t.column("suffix")).to_numpy() > 0)
    return at, t.column("suffix").take(pa.array(at)).to_pylist() if at.size else []


def _with(t: pa.Table, **columns: Any) -> pa.Table:
    for name, values in columns.items():
        i = t.schema.get_field_index(name)
        t = t.set_column(i, EXCHANGE_SCHEMA.field(name), pa.array(values, EXCHANGE_SCHEMA.field(name).type))
    return t


def _sorted(t: pa.Table, keys: list[str]) -> pa.Table:
    return t.take(pc.sort_indices(t, sort_keys=[(k, "ascending") for k in keys])) if t.num_rows else t


def _route(t: pa.Table, step: int, plan: SelectPlan, spec: Spec) -> tuple[dict[Dest, pa.Table], Counter[int]]:
    """The rows that go to `step` next, by partition; rows in none of its partitions pass on to
    the step after it (counted)."""
    out: dict[Dest, pa.Table] = {}
    passed: Counter[int] = Counter()
    while t.num_rows:
        if step == DEDUP:
            part = (t.column("dedup").to_numpy() % np.uint64(plan.dedup_parts)).astype(np.int64)
        elif step in (MIX, CAPS):
            part = (plan.bucket_of if step == MIX else plan.cap_of)[t.column("cls").to_numpy()]
            if step == MIX:  # a bucket's partitions by group: a group cap sees its group whole
                part = np.where(part >= 0, part * plan.dedup_parts + _group_parts(t, plan.dedup_parts), -1)
            kept = part >= 0
            if not kept.all():
                rest = t.filter(pa.array(~kept))
                passed[step] += rest.num_rows
                if step == MIX:
                    rest = _with(rest, b_idx=np.full(rest.num_rows, plan.buckets, np.int32))
                else:
                    rest = _with(rest, c_idx=np.full(rest.num_rows, plan.caps, np.int32))
                t, part = t.filter(pa.array(kept)), part[kept]
                _split_by(out, t, step, part)
                t, step = rest, plan.after(step)
                continue
        else:
            table, rows = _keys(t, plan.classes)
            split = split_codes(spec, table, rows)
            prefix = order_prefixes(spec, table, rows)
            t = _with(t, split=split, oprefix=prefix)
            ranges = (prefix >> np.uint64(64 - plan.order_bits)).astype(np.int64) if plan.order_bits else 0
            part = split.astype(np.int64) * (1 << plan.order_bits) + ranges
        _split_by(out, t, step, part)
        break
    return out, passed


def _group_parts(t: pa.Table, parts: int) -> np.ndarray:
    """Each row's partition of `parts` by a hash of its group (its id where it has none)."""
    groups = id_hashes(pc.coalesce(t.column("group"), t.column("id")).to_pylist())
    return (groups % np.uint64(parts)).astype(np.int64)


def _split_by(out: dict[Dest, pa.Table], t: pa.Table, step: int, part: np.ndarray) -> None:
    for p, rows in exchange.by_partition(t, part).items():
        out[(step, p)] = pa.concat_tables([out[(step, p)], rows]) if (step, p) in out else rows


def _send(plan: SelectPlan, name: str, out: dict[Dest, pa.Table], passed: Counter[int], **counts: Any) -> Done:
    ordered: Counter[int] = Counter()
    for (step, _), t in out.items():
        if step == ORDER:  # the selected rows per source: how the driver sizes the render blocks
            src, n = np.unique(t.column("src").to_numpy(), return_counts=True)
            ordered.update(dict(zip(src.tolist(), n.tolist())))
    return Done(exchange.send(Path(plan.dir), name, out, EXCHANGE_SCHEMA), passed, ordered, **counts)  # type: ignore[arg-type]


def _received(task: "PartTask") -> pa.Table:
    return exchange.received(Path(task.plan.dir), task.files, (task.step, task.part), EXCHANGE_SCHEMA, task.rows)


# ---------------------------------------------------------------------------------------------
# The tasks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScatterTask:
    plan: SelectPlan
    src: int
    segment: SegmentInfo
    remap: np.ndarray  # the segment's class codes → codes over all sources


def scatter_keys(task: ScatterTask) -> Done:
    """A source's selection keys → the first step's partitions."""
    keys, seg_rows = task.segment.keys()
    n = len(keys)
    t = pa.Table.from_arrays([
        pa.array(np.full(n, task.src, np.int32)), pa.array(seg_rows, pa.int64()), keys.ids, keys.groups,
        pa.array(task.remap[keys.cls] if n else np.zeros(0, np.int32), pa.int32()), pa.array(keys.dedup, pa.uint64()),
        pa.array(keys.chars, pa.int64()), pa.array(keys.tokens, pa.float64()), pa.array([""] * n, pa.string()),
        *(pa.array([b""] * n, f.type) if f.type == pa.binary() else pa.array(np.zeros(n, f.type.to_pandas_dtype()), f.type)
          for f in list(EXCHANGE_SCHEMA)[9:])],
        schema=EXCHANGE_SCHEMA)
    out, passed = _route(t, task.plan.steps[0], task.plan, worker_context().spec)
    return _send(task.plan, f"scatter-{task.src:05d}", out, passed)


@dataclass(frozen=True)
class PartTask:
    """A partition of one step; `target` and `tally` (second rounds of mix and capabilities)
    come from the driver."""

    plan: SelectPlan
    step: int
    part: int
    files: list[str]  # the files sent to the step (the partition's batch in some)
    rows: int = 0  # the rows sent to the partition
    target: float = 0.0
    tally: CapabilityTally | None = None
    cut: MixCut | None = None

    @property
    def name(self) -> str:
        return f"{STEP_NAMES[self.step]}-{self.part:05d}"

    def pool(self) -> Path:
        return Path(self.plan.dir) / f"pool-{self.name}.arrow"


def dedup_part(task: PartTask) -> Done:
    """Rows sorted as the one-process selection sorts them (by id); the first of each dedup key."""
    plan = task.plan
    t = _sorted(_received(task), ORDER_AFTER_DEDUP)
    kept, removed = mix.dedup(*_keys(t, plan.classes))
    out, passed = _route(t.take(pa.array(kept.base)), plan.after(DEDUP), plan, worker_context().spec)
    return _send(plan, task.name, out, passed, removed=removed)


def mix_pool_part(task: PartTask) -> Done:
    """A partition of a bucket's groups: its rows (in id order), capped per group and ranked into
    its part of the bucket's pool (kept for the second round); their counts and a histogram of
    their ranks."""
    spec: Spec = worker_context().spec
    t = _sorted(_received(task), ORDER_AFTER_DEDUP)
    bucket = list(spec.mix.values())[task.part // task.plan.dedup_parts]  # type: ignore[union-attr]
    table, rows = _keys(t, task.plan.classes)
    pool, dropped = mix.mix_pool(table, rows, bucket, spec.seed)
    ranks = mix.rank_digests(table, pool, spec.seed, "mix")
    t = _with(t.take(pa.array(pool.base)), b_rank=ranks)
    exchange.write_table(task.pool(), t)
    hist = np.bincount(_rank_bins(ranks), minlength=1 << RANK_BITS)
    return Done(exchange.Sent(None, {}), counted=MixPool(len(rows), dropped, len(pool), hist))


def _rank_bins(ranks: list[bytes]) -> np.ndarray:
    return (np.frombuffer(b"".join(r[:8] for r in ranks), ">u8") >> np.uint64(64 - RANK_BITS)).astype(np.int64)


def _passes(rows: Rows, first: int, last: int) -> tuple[Rows, np.ndarray]:
    """Passes first..last - 1 over `rows` (pass 0: the rows, pass p: their copies `#p+1`) and
    each row's pass."""
    taken = [rows if p == 0 else rows.copies(p + 1) for p in range(first, last)]
    return Rows.concat(taken), np.repeat(np.arange(first, last, dtype=np.int32), len(rows))


def _taken(t: pa.Table, chosen: Rows, passes: np.ndarray, bucket: int) -> pa.Table:
    """A bucket's rows `chosen` from its pool `t`, each marked with its pass."""
    return _with(t.take(pa.array(chosen.base)), suffix=chosen.suffix.tolist(),
                 b_idx=np.full(len(chosen), bucket, np.int32), b_pass=passes)


def mix_take_part(task: PartTask) -> Done:
    """A partition's share of its bucket's take, for the driver's cut: its pool rows in every
    whole pass and in the last pass's bins below the cut; those in the cut's bin go to the
    bucket's boundary task."""
    plan, cut = task.plan, task.cut
    assert cut is not None
    bucket = task.part // plan.dedup_parts
    t = exchange.read_table(task.pool())
    table, rows = _keys(t, plan.classes)
    bins = _rank_bins(t.column("b_rank").to_pylist())
    chosen, passes = _passes(rows, 0, cut.passes)
    last, last_pass = _passes(rows[bins < cut.bin], cut.passes, cut.passes + 1)
    chosen, passes = Rows.concat([chosen, last]), np.concatenate([passes, last_pass])
    out, passed = _route(_taken(t, chosen, passes, bucket), plan.after(MIX), plan, worker_context().spec)
    edge, edge_pass = _passes(rows[bins == cut.bin], cut.passes, cut.passes + 1)
    if cut.more and len(edge):
        out[(MIX_BOUNDARY, bucket)] = _taken(t, edge, edge_pass, bucket)
    return _send(plan, f"{task.name}-take", out, passed, counted=MixTaken(len(chosen), mix.copy_count(table, chosen)))


def mix_boundary_part(task: PartTask) -> Done:
    """A bucket's rows in the bin its take ends in, from all its partitions: the first `more` in
    rank order (ties: id, source, row)."""
    plan, cut = task.plan, task.cut
    assert cut is not None
    t = _sorted(_received(task), ["b_rank", *ORDER_AFTER_DEDUP]).slice(0, cut.more)
    table, rows = _keys(t, plan.classes)
    out, passed = _route(t, plan.after(MIX), plan, worker_context().spec)
    return _send(plan, f"{task.name}-take", out, passed, counted=MixTaken(t.num_rows, mix.copy_count(table, rows)))


def caps_pool_part(task: PartTask) -> Done:
    """A capability's rows in selection order (kept for the second round) and what they weigh."""
    spec: Spec = worker_context().spec
    t = _sorted(_received(task), ORDER_AFTER_MIX)
    exchange.write_table(task.pool(), t)
    table, rows = _keys(t, task.plan.classes)
    return Done(exchange.Sent(None, {}), counted=mix.capability_available(rows, selection_weight(spec, table)))


def caps_take_part(task: PartTask) -> Done:
    """A capability's take for the driver's target."""
    spec: Spec = worker_context().spec
    plan = task.plan
    t = exchange.read_table(task.pool())
    table, rows = _keys(t, plan.classes)
    tally = task.tally or CapabilityTally()
    chosen = mix.capability_take(table, rows, task.target, spec.seed, selection_weight(spec, table), tally)
    out_t = _with(t.take(pa.array(chosen.base)), suffix=chosen.suffix.tolist(),
                  c_idx=np.full(len(chosen), task.part, np.int32), c_pos=np.arange(len(chosen), dtype=np.int64))
    out, passed = _route(out_t, ORDER, plan, spec)
    return _send(plan, f"{task.name}-take", out, passed, counted=tally)


def order_part(task: PartTask) -> Done:
    """A range of one split's order hashes, sorted (ties: selection order): the selected rows of
    that range of the output, each with its place in it, sent to the render blocks."""
    spec: Spec = worker_context().spec
    plan = task.plan
    t = _sorted(_received(task), ORDER_AFTER_CAPS)
    table, rows = _keys(t, plan.classes)
    order = sorted_order(spec, table, rows, t.column("split").to_numpy(), t.column("oprefix").to_numpy())
    t = t.take(pa.array(order))
    out = pa.table([t.column("src"), t.column("seg"), t.column("suffix"), t.column("cls"),
                    pa.array(np.full(t.num_rows, task.part, np.int32)), pa.array(np.arange(t.num_rows), pa.int64())],
                   schema=SELECTED_SCHEMA)
    blocks = plan.render_blocks.block(t.column("src").to_numpy(), t.column("seg").to_numpy())  # type: ignore[union-attr]
    sent = exchange.send(Path(plan.dir), task.name, {(RENDER, b): rows for b, rows in exchange.by_partition(out, blocks).items()},
                         SELECTED_SCHEMA)
    return Done(sent, counted=t.num_rows)


# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------


class _Inbox:
    """The files sent to each step, the rows each partition got, the rows each step passed by,
    the rows sent to the order step per source."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.mail = exchange.Mailroom()
        self.passed: Counter[int] = Counter()
        self.ordered: Counter[int] = Counter()
        self.taken: dict[int, list[str]] = {}

    def add(self, done: Done) -> None:
        self.mail.add(done.sent)
        self.passed.update(done.passed)
        self.ordered.update(done.ordered)

    def tasks(self, plan: SelectPlan, step: int) -> list[PartTask]:
        """A task per partition of `step` that rows were sent to, in partition order."""
        files, parts = self.mail.take(step)
        self.taken[step] = files
        return [PartTask(plan, step, p, files, n) for p, n in parts.items()]

    def read(self, step: int) -> None:
        """`step`'s tasks are done: the files no other step reads go."""
        exchange.remove(self.directory, self.mail.read(step, self.taken.pop(step, [])))


@dataclass(frozen=True)
class SelectedRange:
    """A range of the output order: one split's rows whose order hash falls in it."""

    part: int  # its order partition: split << order_bits | range
    split: int  # split code
    rows: int  # selected rows in it
    before: int  # selected rows in the ranges before it


@dataclass
class Selection:
    """Stage 2's result as its tasks left it: the selected rows in the exchange directory, sent
    on to the render blocks; the driver holds counts."""

    directory: Path
    classes: list[RowClass]
    report: dict[str, Any]  # what selection did, for the manifest
    ranges: list[SelectedRange]  # in output order
    render_blocks: SegmentBlocks
    files: list[str]  # the order step's files, a batch per render block it sent rows to
    to_render: dict[int, int]  # render block → the selected rows sent to it
    per_source: list[int]  # selected rows per source

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.ranges)


def select_partitioned(spec: Spec, read: NormalisedSources, directory: Path, ex: Executor, progress: Progress,
                       render_blocks: Callable[[list[int]], SegmentBlocks]) -> Selection:
    """Stage 2 as tasks on `ex` (a progress stage, "select", counted in tasks), its files in the
    build's exchange `directory` (every worker must see it). `render_blocks`: the blocks the
    order step sends the rows to, from the selected rows per source."""
    plan, remaps = make_plan(spec, read, directory, ex.workers)
    inbox = _Inbox(directory)
    report: dict[str, Any] = {}
    progress.start("select")

    def run(fn: Callable[[Any], Done], tasks: Iterable[Any]) -> list[Done]:
        done = []
        for d in ex.map(fn, list(tasks)):
            inbox.add(d)
            done.append(d)
            progress.advance()
        return done

    run(scatter_keys, [ScatterTask(plan, s, seg, remaps[s]) for s, seg in enumerate(read.segments)])
    if DEDUP in plan.steps:
        removed: Counter[str] = Counter()
        for d in run(dedup_part, inbox.tasks(plan, DEDUP)):
            removed.update(d.removed)
        inbox.read(DEDUP)
        report["dedup_removed"] = dict(sorted(removed.items()))
    if MIX in plan.steps:
        report["mix"] = _mix(spec, plan, inbox, run)
    if CAPS in plan.steps:
        report["capabilities"] = _capabilities(spec, plan, inbox, run)
    per_source = [inbox.ordered[s] for s in range(len(read.segments))]
    plan = replace(plan, render_blocks=render_blocks(per_source))
    orders = inbox.tasks(plan, ORDER)
    ranges, before = [], 0
    for t, d in zip(orders, run(order_part, orders)):
        ranges.append(SelectedRange(t.part, t.part >> plan.order_bits, d.counted, before))  # type: ignore[arg-type]
        before += d.counted  # type: ignore[operator]
    progress.done()
    inbox.read(ORDER)
    files, to_render = inbox.mail.take(RENDER)
    return Selection(directory, plan.classes, report, ranges, plan.render_blocks, files, to_render,  # type: ignore[arg-type]
                     per_source)


def _mix(spec: Spec, plan: SelectPlan, inbox: _Inbox, run: Runner) -> dict[str, Any]:
    """Each bucket as partitions of its groups: their pools' sizes and rank histograms, the
    driver's targets and where each take ends (`_cut`), each partition's share of the take, and
    per bucket a boundary task for the rows of the bin the take ends in."""
    buckets = spec.mix or {}
    names = list(buckets)
    tasks = inbox.tasks(plan, MIX)
    pools: dict[str, MixPool] = {n: MixPool(ranks=np.zeros(1 << RANK_BITS, np.int64)) for n in names}
    for t, d in zip(tasks, run(mix_pool_part, tasks)):
        name = names[t.part // plan.dedup_parts]
        pools[name] = pools[name] + d.counted  # type: ignore[operator]
    inbox.read(MIX)
    pool = {n: p.pool for n, p in pools.items()}
    targets, selected, report = mix.plan_mix(buckets, {n: p.available for n, p in pools.items()},
                                             {n: p.dropped for n, p in pools.items()}, pool)
    cuts = {n: _cut(pools[n], selected[n]) for n in names}
    takes = [PartTask(plan, MIX, t.part, [], cut=cuts[names[t.part // plan.dedup_parts]]) for t in tasks]
    taken = {n: 0 for n in names}
    copies = {n: 0 for n in names}

    def count(name: str, d: Done) -> None:
        taken[name] += d.counted.selected  # type: ignore[union-attr]
        copies[name] += d.counted.copies  # type: ignore[union-attr]

    for t, d in zip(takes, run(mix_take_part, takes)):
        count(names[t.part // plan.dedup_parts], d)
    exchange.remove(Path(plan.dir), [t.pool().name for t in takes])
    edges = inbox.tasks(plan, MIX_BOUNDARY)
    edges = [replace(t, cut=cuts[names[t.part]]) for t in edges]
    for t, d in zip(edges, run(mix_boundary_part, edges)):
        count(names[t.part], d)
    inbox.read(MIX_BOUNDARY)
    assert taken == selected, (taken, selected)
    return mix.finish_mix_report(buckets, report, selected, copies, pool, inbox.passed[MIX])


def _cut(pool: MixPool, selected: int) -> MixCut:
    """Where a take of `selected` rows from `pool` ends: whole passes, then the bins of the last
    pass taken whole, then the rows it takes of the next bin."""
    if not pool.pool:
        return MixCut(0, 0, 0)
    passes, rest = divmod(selected, pool.pool)
    cum = np.cumsum(pool.ranks)  # type: ignore[arg-type]
    b = int(np.searchsorted(cum, rest, side="left"))  # the first bin that reaches `rest`
    before = int(cum[b - 1]) if b else 0
    if rest == 0 or rest - before == int(pool.ranks[b]):  # type: ignore[index]
        return MixCut(passes, b + 1 if rest else 0, 0)
    return MixCut(passes, b, rest - before)


def _capabilities(spec: Spec, plan: SelectPlan, inbox: _Inbox, run: Runner) -> dict[str, Any]:
    caps = spec.capabilities
    assert caps is not None
    names = list(caps.requested())
    tasks = inbox.tasks(plan, CAPS)
    tallies = {n: CapabilityTally() for n in names}  # a capability no row reached: zeros
    for t, d in zip(tasks, run(caps_pool_part, tasks)):
        tallies[names[t.part]] = d.counted  # type: ignore[assignment]
    inbox.read(CAPS)
    targets = mix.capability_targets(caps, {n: t.available for n, t in tallies.items()})
    takes = [PartTask(plan, CAPS, t.part, [], target=targets[names[t.part]], tally=tallies[names[t.part]])
             for t in tasks]
    for t, d in zip(takes, run(caps_take_part, takes)):
        tallies[names[t.part]] = d.counted  # type: ignore[assignment]
    exchange.remove(Path(plan.dir), [t.pool().name for t in takes])
    return mix.capability_report(caps, targets, tallies, inbox.passed[CAPS])
