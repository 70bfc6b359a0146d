"""Stage 2's result, `SelectedRows`: for every selected row, where it is (source, segment row,
copy suffix), its class, its split and its place in the output.

Two ways to it, with the same rows in the same output order: `select_partitioned`
(`engine.selecting`: tasks over partitions of the keys, the driver holding counts; every SFT
build) and `select_rows` here (the keys of all sources in this process: `mix.select` then
`order.final_order`; preference builds, which pair the selected rows in this process anyway,
and the rows' selection order, which pairing reads)."""
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
    """The selected rows, row i of every array (a few bytes a row: a build's driver holds them)."""

    segments: list[SegmentInfo]  # per source (index `src`)
    classes: list[RowClass]  # index `cls`
    report: dict[str, Any]  # what selection did, for the manifest
    src: np.ndarray  # int32 source index
    seg: np.ndarray  # int64 row number in the source's segment
    copies: dict[int, str]  # row → its copy suffix (`#2` for a row's second copy); originals: none
    cls: np.ndarray  # int32 class code
    split: np.ndarray  # int8 split code
    # the rows in output order (`select_rows`); None: they are in output order, as the render
    # and write phases take them (`select_partitioned`)
    order: np.ndarray | None

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
        src, seg_row, suffix = self.src[at], self.seg[at], self.suffixes(np.asarray(at))
        out: list[Conversation | None] = [None] * len(at)
        for s in np.unique(src).tolist():
            mine = np.flatnonzero(src == s)
            with self.segments[s].open_rows() as f:
                convs = read_conversations(f, seg_row[mine])
            for i, conv in zip(mine.tolist(), convs):
                for k in suffix[i].split("#")[1:]:
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
