"""What the artifact will hold, before it is written: the rows of each split in output order,
the counts the manifest reports, and the rows rendering or tokenising rejected (as quarantine
entries). `tally` also fails a `tokenize.overflow: error` build, naming the first too-long row
in output order."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from dsc.chat.render import apply_special_token_policy
from dsc.chat.templating import ChatTemplate
from dsc.compiler.engine.limits import check_bad_rows
from dsc.compiler.engine.normalise import NormalisedSources
from dsc.compiler.engine.rendering import RenderedRows, RowsInFlight
from dsc.compiler.engine.rowfiles import QuarantineEntry, RenderStatus
from dsc.compiler.engine.selected import SelectedRows
from dsc.compiler.stages.select.order import SPLITS
from dsc.core.errors import BuildError
from dsc.record import BadRow
from dsc.spec.model import Spec

STAGE3_SEQ = 1 << 50  # rendering quarantines come after every reading one of their source


@dataclass
class Tally:
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

    def special_token_warning(self, spec: Spec) -> list[str]:
        """The warning a build gives when message contents hold special-token strings."""
        if not self.special_found:
            return []
        return ["special-token strings found inside message content: "
                + ", ".join(f"{t!r} ×{n}" for t, n in sorted(self.special_found.items()))
                + f" (special_tokens: {spec.special_tokens.value})"]


def tally(spec: Spec, chosen: SelectedRows, rendered: list[RenderedRows]) -> tuple[Tally, np.ndarray]:
    """(the tally, each selected row's RenderStatus); overflow: error fails here, naming the
    first too-long row in output order (the selected rows' order: `select_partitioned`'s)."""
    assert chosen.order is None, "rows in output order"
    offsets = np.cumsum([0] + [len(r.part) for r in rendered])
    flat = offsets[chosen.src] + chosen.seg  # index into the sources' rows laid end to end

    def per_row(attr: str) -> np.ndarray:
        return np.concatenate([getattr(r, attr) for r in rendered])[flat] if rendered else np.zeros(0)

    status = per_row("status")
    error_rows = np.flatnonzero(status == RenderStatus.TOO_LONG_ERROR)
    if error_rows.size:
        i = int(error_rows[0])
        conv = chosen.conversations(np.array([i]))[0]
        prov = conv.meta.provenance
        n_tokens = rendered[int(chosen.src[i])].n_tokens[int(chosen.seg[i])]
        raise BuildError(f"{prov.file}:{prov.row + 1}: {n_tokens} tokens is more than tokenize.max_length="
                         f"{spec.tokenize.max_length} (tokenize.overflow: error; use drop or truncate "
                         f"to build anyway)")
    span_chars, sup_tokens, truncated = per_row("span_chars"), per_row("sup_tokens"), per_row("truncated")
    any_special = any(r.special for r in rendered)
    t = Tally()
    for code, name in enumerate(SPLITS):
        rows = np.flatnonzero(chosen.split == code)
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
        classes, counts = np.unique(chosen.cls[good], return_counts=True)
        for c, k in zip(classes.tolist(), counts.tolist()):
            rc = chosen.classes[c]
            t.per_source[rc.source][name] += k
            t.per_label[str(rc.label)][name] += k
            t.per_capability[str(rc.capability)][name] += k
        if any_special:
            for i in good.tolist():
                found = rendered[int(chosen.src[i])].special.get(int(chosen.seg[i]))
                if found:
                    t.special_found.update(found)
    return t, status


def rendering_quarantine(spec: Spec, template: ChatTemplate, chosen: SelectedRows, rendered: list[RenderedRows],
                         tally: Tally, status: np.ndarray) -> list[QuarantineEntry]:
    """The rows rendering or tokenising rejected, as the quarantine reports them."""
    if not tally.failed:
        return []
    convs = chosen.conversations(np.array(tally.failed, np.int64))
    out = []
    for i, conv in zip(tally.failed, convs):  # a row's number is its output position
        st = int(status[i])
        prov = conv.meta.provenance
        seq = STAGE3_SEQ + i
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


def _empty_text(names: list[str]) -> str:
    return f"source{'s' if len(names) > 1 else ''} {', '.join(repr(n) for n in names)} read 0 rows (empty files?)"


def empty_source_warning(read: NormalisedSources) -> list[str]:
    """A source that read nothing is named (its files are empty, or its globs matched empty files)."""
    empty = read.empty_sources()
    return [f"{_empty_text(empty)}: check the files of sources.{empty[0]}.path"] if empty else []


def tally_rows(spec: Spec, template: ChatTemplate, rows: RowsInFlight, read: NormalisedSources
               ) -> tuple[Tally, list[QuarantineEntry]]:
    """The counts per split and the whole quarantine (reading's and rendering's, in report
    order); the build fails past `max_bad_rows` or with no train row."""
    counts, status = tally(spec, rows.chosen, rows.rendered)
    quarantine = read.quarantine + rendering_quarantine(spec, template, rows.chosen, rows.rendered, counts, status)
    check_bad_rows(spec, quarantine, read.rows_read, "in total")
    if not counts.written.get("train"):
        empty = read.empty_sources()
        if empty and len(empty) == len(read.names):
            raise BuildError(f"no rows to build from: {_empty_text(empty)}")
        raise BuildError("the build produced no train rows (see quarantine reasons with --out and the summary)"
                         + (f"; {_empty_text(empty)}" if empty else ""))
    quarantine.sort(key=QuarantineEntry.sort_key)
    return counts, quarantine
