"""What the artifact will hold, before it is written: per range of the output order, its rows
that rendering kept (a task each), and the counts the manifest reports, and the rows rendering
or tokenising rejected (as quarantine entries). A build with `tokenize.overflow: error` fails
here, naming the first too-long row in output order.

A range's task sends its written rows, with their rank in it, on to the route blocks
(`engine.spill`); the driver adds up the counts and gives each range its first output position.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsc.chat.render import apply_special_token_policy
from dsc.compiler.engine import exchange
from dsc.compiler.engine.exchange import SegmentBlocks
from dsc.compiler.engine.executors.base import Executor, worker_context
from dsc.compiler.engine.limits import check_bad_rows
from dsc.compiler.engine.normalise import NormalisedSources
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.rendering import RENDERED_SCHEMA, RenderedRanges
from dsc.compiler.engine.rowfiles import QuarantineEntry, RenderStatus, SegmentInfo
from dsc.compiler.engine.selected import selected_conversations
from dsc.compiler.engine.selecting import SelectedRange, Selection
from dsc.compiler.stages.select.order import SPLITS
from dsc.core.errors import BuildError
from dsc.record import BadRow, Conversation
from dsc.spec.model import Spec

STAGE3_SEQ = 1 << 50  # rendering quarantines come after every reading one of their source

# A written row as a range sends it to its route block: where it is, and its rank among the
# range's written rows
ROUTE_SCHEMA = pa.schema([pa.field(c, RENDERED_SCHEMA.field(c).type) for c in ("src", "seg", "suffix", "part", "part_pos",
                                                                              "range")]
                         + [pa.field("rank", pa.int64())])


@dataclass
class Tally:
    """What rendering did to the selected rows, counted per split for the manifest."""

    written: dict[str, int] = field(default_factory=dict)  # per split with selected rows, in split order
    supervised_chars: Counter[str] = field(default_factory=Counter)
    supervised_tokens: Counter[str] = field(default_factory=Counter)
    per_source: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_label: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_capability: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    special_found: Counter[str] = field(default_factory=Counter)
    truncated: int = 0

    def special_token_warning(self, spec: Spec) -> list[str]:
        """The warning a build gives when message contents hold special-token strings."""
        if not self.special_found:
            return []
        return ["special-token strings found inside message content: "
                + ", ".join(f"{t!r} ×{n}" for t, n in sorted(self.special_found.items()))
                + f" (special_tokens: {spec.special_tokens.value})"]


@dataclass(frozen=True)
class TallyTask:
    directory: Path  # the build's exchange
    range: SelectedRange
    files: list[str]  # the render blocks' files (its rows' render results: a batch in some)
    segments: list[SegmentInfo]
    route_blocks: SegmentBlocks


@dataclass
class RangeTally:
    """A range's counts (of its written rows), its rejected rows and what it sent on; or a
    split's counts, its ranges' added up."""

    written: int = 0
    classes: dict[int, int] = field(default_factory=dict)  # class code → written rows, ascending codes
    chars: int = 0
    tokens: int = 0
    truncated: int = 0
    special: Counter[str] = field(default_factory=Counter)
    failed: list[QuarantineEntry] = field(default_factory=list)
    too_long: str | None = None  # overflow: error: the message naming its first too-long row
    sent: exchange.Sent = field(default_factory=lambda: exchange.Sent(None, {}))  # to the route blocks

    def add_counts(self, other: RangeTally) -> None:
        self.written += other.written
        for c, k in other.classes.items():
            self.classes[c] = self.classes.get(c, 0) + k
        self.chars += other.chars
        self.tokens += other.tokens
        self.truncated += other.truncated
        self.special.update(other.special)


def tally_range(task: TallyTask) -> RangeTally:
    """A range of the output order: its rows' render results in order, counted; the rows
    rendering kept go on to their route blocks, ranked."""
    t = exchange.received(task.directory, task.files, task.range.part, RENDERED_SCHEMA, task.range.rows)
    t = t.take(pc.sort_indices(t, sort_keys=[("pos", "ascending")]))
    if not np.array_equal(t.column("pos").to_numpy(), np.arange(task.range.rows)):
        raise RuntimeError(f"range {task.range.part}: a selected row's render result is missing or twice")
    status = t.column("status").to_numpy()
    ok = status == RenderStatus.OK
    out = RangeTally(written=int(ok.sum()))
    errors = np.flatnonzero(status == RenderStatus.TOO_LONG_ERROR)
    if errors.size:
        out.too_long = _too_long(task, t.slice(int(errors[0]), 1))
    good = t.filter(pa.array(ok))
    if good.num_rows:
        classes, counts = np.unique(good.column("cls").to_numpy(), return_counts=True)
        out.classes = dict(zip(classes.tolist(), counts.tolist()))
        out.chars = int(good.column("span_chars").to_numpy().sum())
        out.tokens = int(good.column("sup_tokens").to_numpy().sum())
        out.truncated = int(good.column("truncated").to_numpy(zero_copy_only=False).sum())
        special = good.column("special")
        for i in np.flatnonzero(pc.list_value_length(special).to_numpy(zero_copy_only=False) > 0).tolist():
            out.special.update(special[i].as_py())
    out.failed = _rejected(task, t.filter(pa.array(~ok)))
    route = pa.table([good.column(c) for c in ROUTE_SCHEMA.names[:-1]] + [pa.array(np.arange(good.num_rows))],
                     schema=ROUTE_SCHEMA)
    blocks = task.route_blocks.block(good.column("src").to_numpy(), good.column("seg").to_numpy())
    out.sent = exchange.send(task.directory, f"tally-{task.range.part:06d}", exchange.by_partition(route, blocks),  # type: ignore[arg-type]
                             ROUTE_SCHEMA)
    return out


def _conversations(task: TallyTask, t: pa.Table) -> list[Conversation]:
    return selected_conversations(task.segments, t.column("src").to_numpy(), t.column("seg").to_numpy(),
                                  t.column("suffix").to_numpy(zero_copy_only=False))


def _too_long(task: TallyTask, row: pa.Table) -> str:
    prov = _conversations(task, row)[0].meta.provenance
    spec: Spec = worker_context().spec
    return (f"{prov.file}:{prov.row + 1}: {row.column('n_tokens')[0].as_py()} tokens is more than "
            f"tokenize.max_length={spec.tokenize.max_length} (tokenize.overflow: error; use drop or truncate "
            "to build anyway)")


def _rejected(task: TallyTask, failed: pa.Table) -> list[QuarantineEntry]:
    """The range's rows rendering or tokenising rejected, as the quarantine reports them."""
    if not failed.num_rows:
        return []
    ctx = worker_context()
    spec: Spec = ctx.spec
    out = []
    status, pos, reasons = failed.column("status").to_numpy(), failed.column("pos").to_numpy(), failed.column("reason")
    for k, conv in enumerate(_conversations(task, failed)):
        st = int(status[k])
        prov = conv.meta.provenance
        seq = STAGE3_SEQ + task.range.before + int(pos[k])  # the row's place among the selected rows
        if st == RenderStatus.RENDER_FAILED:
            try:
                conv, _ = apply_special_token_policy(conv, ctx.template, spec.special_tokens)
            except BadRow:
                pass  # the policy itself rejected the row: the row as read is reported
            out.append(QuarantineEntry.make(conv.meta.source, prov.file, prov.row, "render", reasons[k].as_py(),
                                            conv.to_dict(), seq=seq))
        elif st == RenderStatus.TOO_LONG:
            out.append(QuarantineEntry.make(
                conv.meta.source, prov.file, prov.row, "tokenize",
                f"longer than tokenize.max_length={spec.tokenize.max_length} tokens (overflow: drop)",
                {"id": conv.id}, bad=False, seq=seq))
        elif st != RenderStatus.TOO_LONG_ERROR:  # the build fails on those
            out.append(QuarantineEntry.make(conv.meta.source, prov.file, prov.row, "tokenize",
                                            "nothing supervised after truncation", {"id": conv.id}, seq=seq))
    return out


def _empty_text(names: list[str]) -> str:
    return f"source{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)} read 0 rows (empty files?)"


def empty_source_warning(read: NormalisedSources) -> list[str]:
    """A source that read nothing is named (its files are empty, or its globs matched empty files)."""
    empty = read.empty_sources()
    return [f"{_empty_text(empty)}: check the files of sources.{empty[0]}.path"] if empty else []


@dataclass
class Tallied:
    """The counts, the whole quarantine, and what the write phase needs: the ranges' files and
    the written rows each route block got in them, and each range's first output position."""

    counts: Tally
    quarantine: list[QuarantineEntry]
    files: list[str]
    to_route: dict[int, int]
    starts: np.ndarray  # int64 per order partition (range): its first row's output position


def tally_rows(spec: Spec, read: NormalisedSources, chosen: Selection, rendered: RenderedRanges,
               route_blocks: SegmentBlocks, ex: Executor, progress: Progress) -> Tallied:
    """A task per range (a progress stage, "tally", counted in ranges), their counts added up in
    output order; the build fails past `max_bad_rows`, with a too-long row under overflow:
    error, or with no train row."""
    assert set(rendered.to_tally) == {r.part for r in chosen.ranges}, "every range's rows rendered"
    tasks = [TallyTask(chosen.directory, r, rendered.files, read.segments, route_blocks) for r in chosen.ranges]
    progress.start("tally", len(tasks))
    counts = Tally()
    per_split: dict[str, RangeTally] = {}  # a split's ranges added up (the manifest counts per split)
    starts = np.zeros(max((r.part for r in chosen.ranges), default=0) + 1, np.int64)
    failed: list[QuarantineEntry] = []
    mail = exchange.Mailroom()
    too_long: str | None = None
    at = 0
    for task, done in zip(tasks, ex.map(tally_range, tasks)):
        per_split.setdefault(SPLITS[task.range.split], RangeTally()).add_counts(done)
        failed += done.failed
        too_long = too_long or done.too_long  # ranges come in output order
        starts[task.range.part], at = at, at + done.written
        mail.add(done.sent, "route")
        progress.advance()
    progress.done()
    exchange.remove(chosen.directory, rendered.files)
    if too_long is not None:
        raise BuildError(too_long)
    for name, r in per_split.items():
        counts.written[name] = r.written
        if not r.written:
            continue
        counts.supervised_chars[name] += r.chars
        counts.supervised_tokens[name] += r.tokens
        counts.truncated += r.truncated
        for c, k in sorted(r.classes.items()):
            rc = chosen.classes[c]
            counts.per_source[rc.source][name] += k
            counts.per_label[str(rc.label)][name] += k
            counts.per_capability[str(rc.capability)][name] += k
        counts.special_found.update(r.special)
    quarantine = read.quarantine + failed
    check_bad_rows(spec, quarantine, read.rows_read, "in total")
    if not counts.written.get("train"):
        empty = read.empty_sources()
        if empty and len(empty) == len(read.names):
            raise BuildError(f"no rows to build from: {_empty_text(empty)}")
        raise BuildError("the build produced no train rows (see quarantine reasons with --out and the summary)"
                         + (f"; {_empty_text(empty)}" if empty else ""))
    quarantine.sort(key=QuarantineEntry.sort_key)
    return Tallied(counts, quarantine, *mail.take("route"), starts)
