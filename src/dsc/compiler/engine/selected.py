"""Stage 2 in one process, `select_rows`: the keys of all sources → `SelectedRows`, for every
selected row where it is (source, segment row, copy suffix), its class, its split and its place
in the output (`mix.select` then `order.final_order`).

It is the definition that selection as tasks (`engine.selecting`, every SFT build) reproduces
partition by partition, and what preference builds use: they pair the selected rows in this
process anyway, and pairing reads the rows' selection order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dsc.compiler.engine import resources
from dsc.compiler.engine.normalise import NormalisedSources
from dsc.compiler.engine.rowfiles import SegmentInfo, read_conversations
from dsc.compiler.stages.select import mix
from dsc.compiler.stages.select.mix import KeyTable, RowClass, copy_of
from dsc.compiler.stages.select.order import final_order
from dsc.record import Conversation
from dsc.spec.model import Spec


@dataclass
class SelectedRows:
    """The selected rows, row i of every array, in selection order."""

    segments: list[SegmentInfo]  # per source (index `src`)
    classes: list[RowClass]  # index `cls`
    report: dict[str, Any]  # what selection did, for the manifest
    src: np.ndarray  # int32 source index
    seg: np.ndarray  # int64 row number in the source's segment
    copies: dict[int, str]  # row → its copy suffix (`#2` for a row's second copy); originals: none
    cls: np.ndarray  # int32 class code
    split: np.ndarray  # int8 split code
    order: np.ndarray  # the rows in output order

    def __len__(self) -> int:
        return len(self.src)

    def suffixes(self, at: np.ndarray) -> np.ndarray:
        """The copy suffixes of rows `at` ("" for an original row), as an object array."""
        out = np.empty(len(at), object)
        out[:] = ""
        if self.copies:
            for i in np.flatnonzero(np.isin(at, np.fromiter(self.copies, np.int64, len(self.copies)))).tolist():
                out[i] = self.copies[int(at[i])]
        return out

    def conversations(self, at: np.ndarray) -> list[Conversation]:
        """The selected rows `at` as Conversations (copies made), in the order given."""
        return selected_conversations(self.segments, self.src[at], self.seg[at], self.suffixes(np.asarray(at)))


def selected_conversations(segments: list[SegmentInfo], src: np.ndarray, seg_row: np.ndarray,
                           suffix: np.ndarray) -> list[Conversation]:
    """Selected rows (source, segment row, copy suffix) as Conversations, copies made, in the order given."""
    out: list[Conversation | None] = [None] * len(src)
    for s in np.unique(src).tolist():
        mine = np.flatnonzero(src == s)
        with segments[s].open_rows() as f:
            convs = read_conversations(f, seg_row[mine])
        for i, conv in zip(mine.tolist(), convs):
            for k in str(suffix[i]).split("#")[1:]:
                conv = copy_of(conv, int(k))
            out[i] = conv
    return out  # type: ignore[return-value]


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
    """Stage 2 in this process: dedup, mix, capability ratios over the keys of all sources;
    split by group hash, order by id hash. The rows are in selection order."""
    keys = [seg.keys() for seg in read.segments]
    table = KeyTable.concat([k for k, _ in keys])
    source = np.repeat(np.arange(len(read.names), dtype=np.int32), [len(k) for k, _ in keys])
    seg_row = np.concatenate([r for _, r in keys]) if keys else np.zeros(0, np.int64)
    del keys
    selection = mix.select(table, seed=spec.seed, dedup_rows=spec.dedup, mix=spec.mix,
                           capabilities=spec.capabilities, weight=selection_weight(spec, table))
    rows = selection.rows
    split, order = final_order(spec, table, rows)
    copies = {i: s for i, s in enumerate(rows.suffix.tolist()) if s}
    chosen = SelectedRows(read.segments, table.classes, selection.report, source[rows.base], seg_row[rows.base],
                          copies, table.cls[rows.base], split, order)
    resources.release_memory()
    return chosen
