"""Splits and output order: which split each selected row goes to (a seeded hash of its group,
or of its id) and where in its split it is written (a seeded hash of its id). Both depend on
nothing but the seed and the row, never on the worker count or the order of input files."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from dsc.compiler.stages.select.mix import (
    KeyTable,
    Rows,
    hash_prefixes,
    iter_ids,
    row_groups,
    sort_ties,
)
from dsc.record import Conversation
from dsc.spec.model import Spec

SPLITS = ("train", "validation", "test")


def unit_hash(*parts: Any) -> float:
    """A seeded, order-independent uniform number in [0, 1) for a key."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(spec: Spec, conv: Conversation) -> str:
    """The split one row goes to (what `final_order` computes for many at once)."""
    key = conv.group if spec.split.by == "group" else conv.id
    return SPLITS[split_code(spec, np.array([unit_hash(spec.seed, "split", key)]))[0]]


def split_code(spec: Spec, u: np.ndarray) -> np.ndarray:
    """0 train, 1 validation, 2 test for uniform numbers u."""
    code = np.zeros(len(u), np.int8)
    code[u < spec.split.validation + spec.split.test] = 2
    code[u < spec.split.validation] = 1
    return code


def order_key(spec: Spec, conv_id: str) -> str:
    """The key a row is ordered by within its split."""
    return hashlib.sha256(f"{spec.seed}\x1forder\x1f{conv_id}".encode("utf-8")).hexdigest()


def split_codes(spec: Spec, table: KeyTable, sel: Rows) -> np.ndarray:
    """Each selected row's split code: a seeded hash of its group (a copy has its original's),
    or of its id."""
    split_keys = row_groups(table, sel) if spec.split.by == "group" else iter_ids(table, sel)
    u = hash_prefixes(split_keys, f"{spec.seed}\x1fsplit\x1f", len(sel)).astype(np.float64) / 2.0**64
    return split_code(spec, u)


def order_prefixes(spec: Spec, table: KeyTable, sel: Rows) -> np.ndarray:
    """The first 64 bits of each selected row's `order_key`."""
    return hash_prefixes(iter_ids(table, sel), f"{spec.seed}\x1forder\x1f", len(sel))


def sorted_order(spec: Spec, table: KeyTable, sel: Rows, split: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """The selected rows in output order: split by split, each by `order_key`; equal keys keep
    the order of `sel`."""
    order = np.lexsort((prefix, split))  # stable; split codes are in SPLITS order
    sp, sr = prefix[order], split[order]
    # equal 64-bit prefixes: these runs by the whole key (stable)
    sort_ties(order, (sp[1:] == sp[:-1]) & (sr[1:] == sr[:-1]),
              lambda run: [order_key(spec, x) for x in next(iter_ids(table, sel[run]))])
    return order


def final_order(spec: Spec, table: KeyTable, sel: Rows) -> tuple[np.ndarray, np.ndarray]:
    """(split code per selected row, the selected rows' positions in output order)."""
    split = split_codes(spec, table, sel)
    return split, sorted_order(spec, table, sel, split, order_prefixes(spec, table, sel))
