"""Stage 2 (the build's one global step, in the driver process): dedup, mix and capability
ratios over the keys of all sources (`mix.select`), then splits and output order
(`order.final_order`). What it produces, `SelectedRows`, says for every selected row where it
is (source, segment row, copy suffix), its split and its place in the output."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsc.compiler.engine import resources
from dsc.compiler.engine.normalise import NormalisedSources
from dsc.compiler.engine.rowfiles import SegmentInfo, read_conversations
from dsc.compiler.stages.select import mix
from dsc.compiler.stages.select.mix import KeyTable, Rows, SelectionResult, copy_of
from dsc.compiler.stages.select.order import final_order
from dsc.record import Conversation
from dsc.spec.model import Spec


@dataclass
class SourceKeys:
    """The emitted sources' segments and the global key table over them."""

    names: list[str]
    segments: list[SegmentInfo]
    table: KeyTable
    source: np.ndarray  # per key: index into names
    seg_row: np.ndarray  # per key: row number in its source's segment

    def conversations(self, src: np.ndarray, seg_row: np.ndarray, suffix: np.ndarray) -> list[Conversation]:
        """Selected rows as Conversations (copies included), in the order given."""
        out: list[Conversation | None] = [None] * len(src)
        for s in np.unique(src).tolist():
            at = np.flatnonzero(src == s)
            with self.segments[s].open_rows() as f:
                convs = read_conversations(f, seg_row[at])
            for i, conv in zip(at.tolist(), convs):
                for k in suffix[i].split("#")[1:]:
                    conv = copy_of(conv, int(k))
                out[i] = conv
        return out  # type: ignore[return-value]


@dataclass
class SelectedRows:
    """The selected rows (`rows`: keys and copy suffixes), where each is, its split and the
    output order."""

    sources: SourceKeys
    selection: SelectionResult  # its report goes to the manifest
    rows: Rows
    split: np.ndarray  # split code per selected row
    order: np.ndarray  # selected rows in output order
    src: np.ndarray  # per selected row: source index
    seg: np.ndarray  # per selected row: row number in the source's segment

    def conversations(self, at: np.ndarray) -> list[Conversation]:
        """The selected rows `at` (indices into `rows`) as Conversations."""
        return self.sources.conversations(self.src[at], self.seg[at], self.rows.suffix[at])


def selection_weight(spec: Spec, table: KeyTable) -> np.ndarray | None:
    """The measure capability ratios count in, per row (None: rows; copies weigh what their
    original does)."""
    caps = spec.capabilities
    measure = caps.measure if caps is not None else "rows"
    if measure == "chars":
        return table.chars.astype(np.float64)
    if measure == "tokens":
        return np.nan_to_num(table.tokens, nan=0.0)
    return None


def select_rows(spec: Spec, read: NormalisedSources) -> SelectedRows:
    """Stage 2: dedup, mix, capability ratios over keys; split by group hash, order by id hash."""
    keys = [seg.keys() for seg in read.segments]
    sources = SourceKeys(read.names, read.segments, KeyTable.concat([k for k, _ in keys]),
                         np.repeat(np.arange(len(read.names), dtype=np.int32), [len(k) for k, _ in keys]),
                         np.concatenate([r for _, r in keys]) if keys else np.zeros(0, np.int64))
    del keys
    table = sources.table
    selection = mix.select(table, seed=spec.seed, dedup_rows=spec.dedup, mix=spec.mix,
                           capabilities=spec.capabilities, weight=selection_weight(spec, table))
    rows: Rows = selection.rows
    split, order = final_order(spec, table, rows)
    chosen = SelectedRows(sources, selection, rows, split, order, sources.source[rows.base], sources.seg_row[rows.base])
    resources.release_memory()
    return chosen
