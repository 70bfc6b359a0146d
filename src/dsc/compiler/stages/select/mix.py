"""Selection: exact dedup, mixing by buckets, then capability ratios — all before the
train/validation split. `select` runs it over the keys of all rows at once (the definition);
the build runs the same functions over partitions of the keys (`engine.selecting`).

    mix:
      positive: {count: 500}                          # a bucket named after a source selects its rows
      negative: {ratio: 2.0, of: positive, per_group_max: 3}
      cot: {where: {method: cot}, rate: 0.5}          # or any `where:` selector
      hotpot: {where: {task: hotpotqa}, proportion: 0.6}
      others: {where: {task: [mmlu, strategyqa]}, proportion: 0.4}

Each row belongs to the first bucket (in spec order) whose selector matches it; rows in no bucket
are kept as they are. A bucket takes one of:

- `count: N`   — exactly N rows;
- `rate: r`    — round(r × available) rows (r > 1 upsamples);
- `ratio: r, of: <bucket>` — round(r × what `of` selected) rows (NAT's 1:2 pos:neg);
- `proportion: p` — the proportion buckets share one pool: each gets p of it, and the pool is as
  large as the scarcest bucket allows without upsampling (proportions sum to 1);
- nothing — every row (with `per_group_max` applied).

`per_group_max: k` keeps at most k rows per group (e.g. per question) before counting.

Every choice is a seeded hash rank of row ids: a bucket's selection depends only on its own rows,
so adding a source never changes which rows another source contributes. NAT's own code samples
with python `random.sample` under seed 42; that exact subset cannot be reproduced by a hash rank
(and would change whenever the file order does) — the counts, ratios and caps are the recipe.
Upsampling repeats the whole bucket as often as needed, then the top-ranked rows for the rest;
a row's k-th copy has id `<id>#k` and the same group (so it lands in the same split).

The stage reads compact per-row keys (`KeyTable`: id, group, a class code for source / task /
method / capability / label / success / rule, the dedup hash, supervised chars and tokens), never
the rows themselves, so it scales to millions of rows in little memory; `select` also takes a list
of `Conversation`s (keys are made from them and the chosen rows returned as Conversations).
"""
from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsc.compiler.stages.transforms.capabilities import supervised_chars
from dsc.compiler.stages.transforms.common import copy_conv, rank_key
from dsc.compiler.stages.transforms.decontam import dedup_key
from dsc.record import Conversation, Meta, Provenance
from dsc.spec.sections import RULE_STEP, CapabilitiesSpec, MixBucket, Where, rule_of

# ---------------------------------------------------------------------------------------------
# Keys: what selection reads of each row
# ---------------------------------------------------------------------------------------------

COPY_STEP = "copy:"


class RowClass(NamedTuple):
    """The attributes `where:` selectors and the reports look at; rows share a handful of them."""

    source: str
    task: str | None
    method: str | None
    capability: str | None
    label: str | None
    success: bool | None
    rule: str | None  # the negative rule that made the row
    copy: bool  # the row's last provenance step is a copy

    @classmethod
    def of(cls, conv: Conversation) -> "RowClass":
        m = conv.meta
        return cls(m.source, m.task, m.method, m.capability, m.label, m.success, rule_of(conv), is_copy(conv))

    def stand_in(self) -> Conversation:
        """A row with exactly these attributes, so `Where.matches` (one definition of matching)
        decides for the whole class."""
        steps = [f"{RULE_STEP}{self.rule}"] if self.rule is not None else []
        return Conversation("", "", [], Meta(self.source, Provenance("", "", 0, steps), task=self.task,
                                             method=self.method, capability=self.capability,
                                             success=self.success, label=self.label))


def dedup_hash(conv: Conversation) -> int:
    """`dedup_key` as a 64-bit integer (the key is 16 hex digits: the same equality)."""
    return int(dedup_key(conv), 16)


def merge_classes(class_lists: Iterable[Sequence[RowClass]]) -> tuple[list[RowClass], list[np.ndarray]]:
    """The classes of several tables (sources, pieces) as one list, first seen first, and per
    table its codes' new codes (an int32 array to index with its `cls`)."""
    codes: dict[RowClass, int] = {}
    remaps = [np.array([codes.setdefault(c, len(codes)) for c in classes] or [0], np.int32)
              for classes in class_lists]
    return list(codes), remaps


@dataclass
class KeyTable:
    """Compact selection keys, one entry per row (row i of every column)."""

    ids: pa.Array  # string
    groups: pa.Array  # string; null where the group is the row's id
    cls: np.ndarray  # int32 index into `classes`
    classes: list[RowClass]
    dedup: np.ndarray  # uint64 dedup hash (zeros when dedup was not computed)
    chars: np.ndarray  # int64 supervised characters (capabilities measure: chars)
    tokens: np.ndarray  # float64 supervised tokens (measure: tokens); NaN where not computed

    def __len__(self) -> int:
        return len(self.cls)

    @classmethod
    def from_conversations(cls, convs: Sequence[Conversation], *, dedup: bool = True) -> "KeyTable":
        codes: dict[RowClass, int] = {}
        cl = np.fromiter((codes.setdefault(RowClass.of(c), len(codes)) for c in convs), np.int32, len(convs))
        return cls(
            ids=pa.array([c.id for c in convs], pa.string()),
            groups=pa.array([None if c.group == c.id else c.group for c in convs], pa.string()),
            cls=cl, classes=list(codes),
            dedup=np.fromiter((dedup_hash(c) if dedup else 0 for c in convs), np.uint64, len(convs)),
            chars=np.fromiter((supervised_chars(c) for c in convs), np.int64, len(convs)),
            tokens=np.full(len(convs), np.nan))

    @classmethod
    def concat(cls, tables: Sequence["KeyTable"]) -> "KeyTable":
        """One table over several (e.g. one per source), classes merged."""
        if len(tables) == 1:
            return tables[0]
        classes, remaps = merge_classes(t.classes for t in tables)
        remapped = [remap[t.cls] if len(t) else np.zeros(0, np.int32) for t, remap in zip(tables, remaps)]
        return cls(
            ids=pa.concat_arrays([t.ids for t in tables]) if tables else pa.array([], pa.string()),
            groups=pa.concat_arrays([t.groups for t in tables]) if tables else pa.array([], pa.string()),
            cls=np.concatenate(remapped) if remapped else np.zeros(0, np.int32), classes=classes,
            dedup=np.concatenate([t.dedup for t in tables]) if tables else np.zeros(0, np.uint64),
            chars=np.concatenate([t.chars for t in tables]) if tables else np.zeros(0, np.int64),
            tokens=np.concatenate([t.tokens for t in tables]) if tables else np.zeros(0))

    def class_mask(self, predicate: Callable[[RowClass], bool]) -> np.ndarray:
        """Per class: does the predicate hold (index it with `cls` for rows)."""
        return np.array([bool(predicate(c)) for c in self.classes] + [False], bool)


@dataclass
class Rows:
    """A selection: rows of a KeyTable (`base`) and, for copies, the id suffix (`#2`, `#2#3`)."""

    base: np.ndarray  # int64
    suffix: np.ndarray  # object: "" for an original row

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: Any) -> "Rows":
        return Rows(self.base[index], self.suffix[index])

    @staticmethod
    def of(base: np.ndarray) -> "Rows":
        suffix = np.empty(len(base), object)
        suffix[:] = ""
        return Rows(np.asarray(base, np.int64), suffix)

    @staticmethod
    def concat(parts: Iterable["Rows"]) -> "Rows":
        parts = list(parts)
        if not parts:
            return Rows.of(np.zeros(0, np.int64))
        return Rows(np.concatenate([p.base for p in parts]), np.concatenate([p.suffix for p in parts]))

    def copies(self, k: int) -> "Rows":
        """The k-th copy of each row (k >= 2): id `<id><suffix>#k`."""
        memo: dict[str, str] = {}
        suffix = np.empty(len(self), object)
        suffix[:] = [memo.setdefault(s, f"{s}#{k}") for s in self.suffix]
        return Rows(self.base.copy(), suffix)


_ID_CHUNK = 1 << 16


def iter_ids(table: KeyTable, rows: Rows) -> Iterator[list[str]]:
    """The rows' ids (copies: `<id>#k`), a chunk at a time (never a million strings at once)."""
    for start in range(0, len(rows), _ID_CHUNK):
        part = rows[start:start + _ID_CHUNK]
        ids = table.ids.take(pa.array(part.base)).to_pylist()
        if any(part.suffix):
            ids = [i + s for i, s in zip(ids, part.suffix)]
        yield ids


def row_groups(table: KeyTable, rows: Rows) -> Iterator[list[str]]:
    """The rows' groups (a copy has its original's group), a chunk at a time."""
    for start in range(0, len(rows), _ID_CHUNK):
        part = rows[start:start + _ID_CHUNK].base
        idx = pa.array(part)
        groups = table.groups.take(idx).to_pylist()
        ids = table.ids.take(idx).to_pylist()
        yield [g if g is not None else i for g, i in zip(groups, ids)]


def hash_prefixes(keys: Iterable[list[str]], prefix: str, n: int) -> np.ndarray:
    """First 8 bytes (big-endian) of sha256(prefix + key) per key: sorting by them sorts by the
    hex digest, except where two prefixes tie (see `ranked`)."""
    out = np.empty(n, np.uint64)
    at = 0
    for chunk in keys:
        out[at:at + len(chunk)] = np.frombuffer(b"".join(d[:8] for d in _seeded_digests(chunk, prefix)), ">u8")
        at += len(chunk)
    return out


def _seeded_digests(keys: list[str], prefix: str) -> list[bytes]:
    return [hashlib.sha256((prefix + k).encode("utf-8")).digest() for k in keys]


def rank_digests(table: KeyTable, rows: Rows, seed: int, purpose: str) -> list[bytes]:
    """Each row's whole sha256 of `rank_key`'s seeded key: `ranked`'s order is these bytes, then
    the id, then the order rows came in (for rows split over tasks, sorted by them again)."""
    return [d for chunk in iter_ids(table, rows) for d in _seeded_digests(chunk, f"{seed}\x1f{purpose}\x1f")]


def sort_ties(order: np.ndarray, same: np.ndarray, full_keys: Callable[[np.ndarray], list[str]]) -> None:
    """`order` sorted by 64-bit hash prefixes: where entries tie (`same[i]`: entry i + 1 ties
    entry i), sort each run by the whole key (`full_keys(run)`: one per entry), stably, in place."""
    tied = np.flatnonzero(same)
    if not tied.size:
        return
    for s in tied[np.r_[True, np.diff(tied) > 1]].tolist():
        e = s + 1
        while e < len(order) and same[e - 1]:
            e += 1
        run = order[s:e]
        keys = full_keys(run)
        order[s:e] = run[sorted(range(len(run)), key=keys.__getitem__)]


def ranked(table: KeyTable, rows: Rows, seed: int, purpose: str) -> Rows:
    """The rows sorted by `rank_key(seed, purpose, id)`: a seeded shuffle."""
    if len(rows) == 0:
        return rows
    prefix = hash_prefixes(iter_ids(table, rows), f"{seed}\x1f{purpose}\x1f", len(rows))
    order = np.argsort(prefix, kind="stable")
    sp = prefix[order]
    # equal 64-bit prefixes (or equal ids): these runs by the full key
    sort_ties(order, sp[1:] == sp[:-1],
              lambda run: [rank_key(seed, purpose, i) for i in next(iter_ids(table, rows[run]))])
    return rows[order]


# ---------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------


def copy_of(conv: Conversation, k: int) -> Conversation:
    """The k-th copy (k >= 2) of a row: a distinct, stable id, same group."""
    new = copy_conv(conv)
    new.id = f"{conv.id}#{k}"
    new.meta.provenance.steps.append(f"{COPY_STEP}{k}")
    return new


def is_copy(conv: Conversation) -> bool:
    steps = conv.meta.provenance.steps
    return bool(steps) and steps[-1].startswith(COPY_STEP)


def copy_count(table: KeyTable, rows: Rows) -> int:
    copied = table.class_mask(lambda c: c.copy)[table.cls[rows.base]] if len(rows) else np.zeros(0, bool)
    return int(np.count_nonzero((rows.suffix != "") | copied))


def _unit_count(target: float) -> int:
    """How many rows of weight 1 `take` adds: the first n with n + 1/2 >= target (n >= 0)."""
    n = max(0, math.ceil(target - 0.5))
    while n > 0 and (n - 1) + 0.5 >= target:
        n -= 1
    while n + 0.5 < target:
        n += 1
    return n


def take(rows: Rows, target: float, weight: np.ndarray | None) -> Rows:
    """Rows from `rows` (already ranked) until their total weight is as close to `target` as
    one more row can bring it; past the end, start again with copies (`#2`, `#3`, ...).
    `weight`: per KeyTable row (None: every row weighs 1)."""
    n = len(rows)
    if n == 0 or target <= 0:
        return rows[:0]
    if weight is None:
        count = _unit_count(target)
        full, rest = divmod(count, n)
        passes = [rows if p == 0 else rows.copies(p + 1) for p in range(full)]
        if rest:
            passes.append(rows[:rest] if full == 0 else rows[:rest].copies(full + 1))
        return Rows.concat(passes)
    w = weight[rows.base].tolist()
    picked: list[Rows] = []
    total = 0.0
    passes_done = 0
    while True:
        for i, wi in enumerate(w):
            # add the row when that brings the total closer to the target (ties: stop)
            if total + wi / 2 >= target:
                part = rows[:i]
                picked.append(part if passes_done == 0 else part.copies(passes_done + 1))
                return Rows.concat(picked)
            total += wi
        picked.append(rows if passes_done == 0 else rows.copies(passes_done + 1))
        passes_done += 1
        if all(x <= 0 for x in w):
            return Rows.concat(picked)


def _cap_groups(table: KeyTable, rows: Rows, k: int, seed: int) -> tuple[Rows, int]:
    """At most k rows per group, the first k of each group in `group-cap` rank order."""
    order = ranked(table, rows, seed, "group-cap")
    if len(order) == 0:
        return order, 0
    groups = pa.array([g for chunk in row_groups(table, order) for g in chunk], pa.string())
    codes = pc.dictionary_encode(groups).indices.to_numpy(zero_copy_only=False)
    by_code = np.argsort(codes, kind="stable")
    sorted_codes = codes[by_code]
    starts = np.r_[0, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(codes)]))
    position = np.empty(len(codes), np.int64)
    position[by_code] = np.arange(len(codes)) - run_start
    kept = order[position < k]
    return kept, len(rows) - len(kept)


def _largest_remainder(shares: dict[str, float], total: int, caps: dict[str, int]) -> dict[str, int]:
    """Integer counts summing to `total` (or less when capped) in proportion to `shares`."""
    raw = {k: shares[k] * total for k in shares}
    counts = {k: min(caps[k], math.floor(v + 1e-9)) for k, v in raw.items()}
    left = total - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - math.floor(raw[k] + 1e-9)), k)):
        if left <= 0:
            break
        if counts[k] < caps[k]:
            counts[k] += 1
            left -= 1
    return counts


# ---------------------------------------------------------------------------------------------
# The selection stage
# ---------------------------------------------------------------------------------------------


@dataclass
class SelectionResult:
    rows: Any  # Rows over the KeyTable given to `select`, or Conversations when it was given those
    report: dict[str, Any] = field(default_factory=dict)


def dedup(table: KeyTable, rows: Rows) -> tuple[Rows, Counter[str]]:
    """Keep one row per dedup key: the first of `rows` (sorted by id: the smallest id)."""
    if len(rows) == 0:
        return rows, Counter()
    _, first = np.unique(table.dedup[rows.base], return_index=True)
    keep = np.zeros(len(rows), bool)
    keep[first] = True
    removed: Counter[str] = Counter(table.classes[c].source for c in table.cls[rows.base[~keep]].tolist())
    return rows[keep], removed


def bucket_codes(table_classes: Sequence[RowClass], mix: dict[str, MixBucket]) -> np.ndarray:
    """Per class, the index of the mix bucket its rows belong to (the first whose selector
    matches; -1: none), with a trailing -1 (index it with class codes)."""
    selectors = [b.where or Where(source=name) for name, b in mix.items()]
    return np.array([next((i for i, w in enumerate(selectors) if w.matches(c.stand_in())), -1)
                     for c in table_classes] + [-1], np.int64)


def mix_pool(table: KeyTable, rows: Rows, bucket: MixBucket, seed: int) -> tuple[Rows, int]:
    """A bucket's rows (in id order) → its pool ranked for taking, and how many rows its group
    cap dropped."""
    dropped = 0
    if bucket.per_group_max is not None:
        rows, dropped = _cap_groups(table, rows, bucket.per_group_max, seed)
    return ranked(table, rows, seed, "mix"), dropped


def taken(n: int, target: float) -> int:
    """How many rows `take` returns from n rows of weight 1 for `target`."""
    return 0 if n == 0 or target <= 0 else _unit_count(target)


def plan_mix(mix: dict[str, MixBucket], available: dict[str, int], dropped: dict[str, int],
             pool: dict[str, int]) -> tuple[dict[str, float], dict[str, int], dict[str, Any]]:
    """Each bucket's target from the sizes of the buckets' pools (counts only: the same whether
    the pools are in one process or in tasks): (targets, rows each selects, the report so far)."""
    report: dict[str, Any] = {name: {"available": available[name], "over_group_cap": dropped[name],
                                     "how": b.how() or "all"} for name, b in mix.items()}
    targets: dict[str, float] = {}
    selected: dict[str, int] = {}

    def resolve(name: str) -> int:
        if name in selected:
            return selected[name]
        b, n = mix[name], pool[name]
        how = b.how()
        if how == "count":
            target = float(b.count)
        elif how == "rate":
            target = float(round(b.rate * n))
        elif how == "ratio":
            target = float(round(b.ratio * resolve(b.of)))
            report[name]["of_selected"] = selected[b.of]
        elif how is None:
            target = float(n)
        else:
            raise AssertionError("proportions are resolved together")
        report[name]["requested"] = getattr(b, how) if how else None
        report[name]["target"] = int(target)
        targets[name] = target
        selected[name] = taken(n, target)
        return selected[name]

    props = {n: b.proportion for n, b in mix.items() if b.proportion is not None}
    if props:
        total = math.floor(min(pool[n] / p for n, p in props.items()) + 1e-9)
        counts = _largest_remainder(props, total, {n: pool[n] for n in props})
        for n in props:
            targets[n] = float(counts[n])
            selected[n] = taken(pool[n], counts[n])
            report[n].update(requested=props[n], target=counts[n])
        pool_total = sum(selected[n] for n in props)
        for n in props:
            report[n]["realised"] = round(selected[n] / pool_total, 6) if pool_total else 0.0
    for name in mix:
        resolve(name)
    return targets, selected, report


def finish_mix_report(mix: dict[str, MixBucket], report: dict[str, Any], selected: dict[str, int],
                      copies: dict[str, int], pool: dict[str, int], unmatched: int) -> dict[str, Any]:
    """`plan_mix`'s report with what the buckets selected."""
    for name, b in mix.items():
        r = report[name]
        r["selected"] = selected[name]
        r["copies"] = copies[name]
        if b.rate is not None:
            r["realised"] = round(selected[name] / pool[name], 6) if pool[name] else 0.0
        if b.ratio is not None:
            base = selected[b.of]
            r["realised"] = round(selected[name] / base, 6) if base else 0.0
    report["_unmatched_kept"] = unmatched
    return report


def apply_mix(table: KeyTable, rows: Rows, mix: dict[str, MixBucket], seed: int) -> tuple[Rows, dict]:
    bucket_of = bucket_codes(table.classes, mix)
    row_bucket = bucket_of[table.cls[rows.base]] if len(rows) else np.zeros(0, np.int64)
    pools: dict[str, Rows] = {}
    dropped: dict[str, int] = {}
    available: dict[str, int] = {}
    for i, (name, b) in enumerate(mix.items()):
        mine = rows[row_bucket == i]
        available[name] = len(mine)
        pools[name], dropped[name] = mix_pool(table, mine, b, seed)
    others = rows[row_bucket == -1]
    sizes = {name: len(p) for name, p in pools.items()}
    targets, counts, report = plan_mix(mix, available, dropped, sizes)
    selected = {name: take(pools[name], targets[name], None) for name in mix}
    assert all(len(selected[n]) == counts[n] for n in mix)
    finish_mix_report(mix, report, counts, {n: copy_count(table, selected[n]) for n in mix}, sizes, len(others))
    return Rows.concat([selected[name] for name in mix] + [others]), report


def capability_codes(table_classes: Sequence[RowClass], spec: CapabilitiesSpec) -> np.ndarray:
    """Per class, the index of its capability among those the spec rebalances (-1: untagged or
    not rebalanced), with a trailing -1."""
    caps = {c: i for i, c in enumerate(spec.requested())}
    return np.array([caps.get(c.capability, -1) if c.capability is not None else -1 for c in table_classes]
                    + [-1], np.int64)


def capability_targets(spec: CapabilitiesSpec, avail: dict[str, float]) -> dict[str, float]:
    """Each rebalanced capability's target, in the spec's measure, from what each has."""
    requested = spec.requested()
    if spec.rates is not None:
        return {c: spec.rates[c] * avail[c] for c in requested}
    usable = {c: avail[c] / p for c, p in requested.items()}
    pool = min(usable.values()) if usable else 0.0
    return {c: requested[c] * pool for c in requested}


@dataclass
class CapabilityTally:
    """One capability's counts, before and after taking: what its report needs."""

    # Python floats summed in selection order, as the report shows them (no rows: the int 0, as
    # `sum` gives)
    available_rows: int = 0
    available: float = 0
    max_row: float = 0
    selected_rows: int = 0
    selected: float = 0


def weights_of(rows: Rows, weight: np.ndarray | None) -> list[float]:
    """Each row's weight (None: each weighs 1)."""
    return [1.0] * len(rows) if weight is None else weight[rows.base].tolist()


def capability_available(rows: Rows, weight: np.ndarray | None) -> CapabilityTally:
    w = weights_of(rows, weight)
    return CapabilityTally(len(rows), sum(w), max(w, default=0))


def capability_take(table: KeyTable, rows: Rows, target: float, seed: int, weight: np.ndarray | None,
                    tally: CapabilityTally) -> Rows:
    """A capability's rows (in selection order) → those taken for its target, in take order;
    `tally` gets what they weigh."""
    chosen = take(ranked(table, rows, seed, "capability"), target, weight)
    tally.selected_rows, tally.selected = len(chosen), sum(weights_of(chosen, weight))
    return chosen


def capability_report(spec: CapabilitiesSpec, targets: dict[str, float], tallies: dict[str, CapabilityTally],
                      untagged: int) -> dict[str, Any]:
    requested = spec.requested()
    total = sum(tallies[c].selected for c in requested)
    report: dict[str, Any] = {"measure": spec.measure, "mode": "rates" if spec.rates is not None else "proportions",
                              "per_capability": {}}
    for c in requested:
        t = tallies[c]
        realised = (t.selected / t.available if t.available else 0.0) if spec.rates is not None else \
            (t.selected / total if total else 0.0)
        report["per_capability"][c] = {
            "requested": requested[c], "realised": round(realised, 6),
            "available_rows": t.available_rows, "available": t.available,
            "selected_rows": t.selected_rows, "selected": t.selected,
            "target": round(targets[c], 3),
            "max_row": t.max_row,
        }
    report["untagged_kept"] = untagged
    return report


def capability_ratios(table: KeyTable, rows: Rows, spec: CapabilitiesSpec, seed: int,
                      weight: np.ndarray | None) -> tuple[Rows, dict]:
    """Rebalance tagged rows by capability; `weight` per KeyTable row (None: each row weighs 1)."""
    requested = spec.requested()
    cap_of = capability_codes(table.classes, spec)
    row_cap = cap_of[table.cls[rows.base]] if len(rows) else np.zeros(0, np.int64)
    by_cap = {c: rows[row_cap == i] for i, c in enumerate(requested)}
    rest = rows[row_cap == -1]
    tallies = {c: capability_available(by_cap[c], weight) for c in requested}
    targets = capability_targets(spec, {c: t.available for c, t in tallies.items()})
    chosen = {c: capability_take(table, by_cap[c], targets[c], seed, weight, tallies[c]) for c in requested}
    report = capability_report(spec, targets, tallies, len(rest))
    return Rows.concat([chosen[c] for c in requested] + [rest]), report


def select_keys(table: KeyTable, *, seed: int, dedup_rows: bool, mix: dict[str, MixBucket] | None,
                capabilities: CapabilitiesSpec | None, weight: np.ndarray | None = None) -> SelectionResult:
    """Dedup → mix → capability ratios over keys. `weight`: the capability measure per row
    (None: rows). Input order does not matter (everything is ranked by id)."""
    report: dict[str, Any] = {}
    rows = Rows.of(pc.sort_indices(table.ids).to_numpy() if len(table) else np.zeros(0, np.int64))
    if dedup_rows:
        rows, removed = dedup(table, rows)
        report["dedup_removed"] = dict(sorted(removed.items()))
    if mix:
        rows, report["mix"] = apply_mix(table, rows, mix, seed)
    if capabilities is not None and (capabilities.rates is not None or capabilities.proportions is not None):
        rows, report["capabilities"] = capability_ratios(table, rows, capabilities, seed, weight)
    return SelectionResult(rows, report)


# ---------------------------------------------------------------------------------------------
# The same stage over Conversations (small inputs, tests, library users)
# ---------------------------------------------------------------------------------------------


def materialise(convs: Sequence[Conversation], rows: Rows) -> list[Conversation]:
    """The selected rows as Conversations (copies made with `copy_of`)."""
    out = []
    for b, suffix in zip(rows.base.tolist(), rows.suffix.tolist()):
        conv = convs[b]
        for k in suffix.split("#")[1:]:
            conv = copy_of(conv, int(k))
        out.append(conv)
    return out


def _weights(convs: Sequence[Conversation], weight: Callable[[Conversation], float] | None) -> np.ndarray | None:
    return None if weight is None else np.array([float(weight(c)) for c in convs], np.float64)


def apply_capability_ratios(rows: list[Conversation], spec: CapabilitiesSpec, seed: int,
                            weight: Callable[[Conversation], float]) -> tuple[list[Conversation], dict]:
    convs = list(rows)
    table = KeyTable.from_conversations(convs, dedup=False)
    chosen, report = capability_ratios(table, Rows.of(np.arange(len(convs))), spec, seed, _weights(convs, weight))
    return materialise(convs, chosen), report


def select(rows: KeyTable | list[Conversation], *, seed: int, dedup_rows: bool, mix: dict[str, MixBucket] | None,
           capabilities: CapabilitiesSpec | None, weight: Any = None) -> SelectionResult:
    """Dedup → mix → capability ratios. Over a KeyTable (`weight`: an array per row, or None)
    the result's rows are `Rows`; over Conversations (`weight`: a function of a row) they are
    Conversations. Input order does not matter (everything is ranked by id)."""
    if isinstance(rows, KeyTable):
        return select_keys(rows, seed=seed, dedup_rows=dedup_rows, mix=mix, capabilities=capabilities, weight=weight)
    convs = list(rows)
    table = KeyTable.from_conversations(convs, dedup=dedup_rows)
    result = select_keys(table, seed=seed, dedup_rows=dedup_rows, mix=mix, capabilities=capabilities,
                         weight=_weights(convs, weight))
    return SelectionResult(materialise(convs, result.rows), result.report)
