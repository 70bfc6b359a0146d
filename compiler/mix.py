"""Selection over the whole set of rows (main process): exact dedup, mixing by buckets, then
capability ratios — all before the train/validation split.

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
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from dsc.compiler.record import Conversation
from dsc.compiler.transforms.capabilities import CapabilitiesSpec
from dsc.compiler.transforms.common import Strict, Where, copy_conv, rank_key
from dsc.compiler.transforms.decontam import dedup_key

MIX_HOW = ("count", "rate", "ratio", "proportion")


class MixBucket(Strict):
    where: Where | None = Field(None, description="which rows (default: the source of the bucket's name)")
    count: int | None = Field(None, ge=0)
    rate: float | None = Field(None, ge=0.0)
    ratio: float | None = Field(None, ge=0.0)
    of: str | None = None
    proportion: float | None = Field(None, gt=0.0, le=1.0)
    per_group_max: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_way(self) -> "MixBucket":
        given = [k for k in MIX_HOW if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of `count`, `rate`, `ratio` or `proportion`, not {' and '.join(given)}")
        if (self.ratio is None) != (self.of is None):
            raise ValueError("`ratio` needs `of: <bucket>` (and `of` needs `ratio`)")
        return self

    def how(self) -> str | None:
        return next((k for k in MIX_HOW if getattr(self, k) is not None), None)


def mix_problems(mix: dict[str, MixBucket], sources: Iterable[str]) -> list[tuple[str, tuple[Any, ...]]]:
    """Cross-bucket problems as (message, location under `mix`)."""
    from dsc.compiler.errors import did_you_mean

    out: list[tuple[str, tuple[Any, ...]]] = []
    sources = list(sources)
    for name, b in mix.items():
        if b.where is None and name not in sources:
            out.append((f"mix bucket '{name}' has no `where:` and is not a source name{did_you_mean(name, sources)}"
                        f" (sources: {', '.join(sources)})", (name,)))
        if b.of is not None and b.of not in mix:
            out.append((f"`of: {b.of}` is not a mix bucket{did_you_mean(b.of, list(mix))}", (name, "of")))
    for name in mix:  # ratio chains must end
        seen, cur = [name], mix[name].of
        while cur is not None and cur in mix:
            if cur in seen:
                out.append((f"mix buckets refer to each other in a loop: {' → '.join(seen + [cur])}", (name, "of")))
                break
            seen.append(cur)
            cur = mix[cur].of
    props = {n: b.proportion for n, b in mix.items() if b.proportion is not None}
    if props and abs(sum(props.values()) - 1.0) > 1e-6:
        first = next(iter(props))
        out.append((f"proportions sum to {sum(props.values()):g}, not 1 ({', '.join(props)})", (first, "proportion")))
    return out


# ---------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------


def copy_of(conv: Conversation, k: int) -> Conversation:
    """The k-th copy (k >= 2) of a row: a distinct, stable id, same group."""
    new = copy_conv(conv)
    new.id = f"{conv.id}#{k}"
    new.meta.provenance.steps.append(f"copy:{k}")
    return new


def is_copy(conv: Conversation) -> bool:
    steps = conv.meta.provenance.steps
    return bool(steps) and steps[-1].startswith("copy:")


def ranked(rows: list[Conversation], seed: int, purpose: str) -> list[Conversation]:
    return sorted(rows, key=lambda c: rank_key(seed, purpose, c.id))


def take(rows: list[Conversation], target: float, weight: Callable[[Conversation], float]) -> list[Conversation]:
    """Rows from `rows` (already ranked) until their total weight is as close to `target` as
    one more row can bring it; past the end, start again with copies (`#2`, `#3`, ...)."""
    out: list[Conversation] = []
    if not rows or target <= 0:
        return out
    total = 0.0
    passes = 0
    while True:
        for conv in rows:
            w = weight(conv)
            # add the row when that brings the total closer to the target (ties: stop)
            if total + w / 2 >= target:
                return out
            out.append(conv if passes == 0 else copy_of(conv, passes + 1))
            total += w
        passes += 1
        if all(weight(c) <= 0 for c in rows):
            return out


def _one(_: Conversation) -> float:
    return 1.0


def _cap_groups(rows: list[Conversation], k: int, seed: int) -> tuple[list[Conversation], int]:
    by_group: dict[str, list[Conversation]] = defaultdict(list)
    for c in ranked(rows, seed, "group-cap"):
        by_group[c.group].append(c)
    kept = [c for g in by_group.values() for c in g[:k]]
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
    rows: list[Conversation]
    report: dict[str, Any] = field(default_factory=dict)


def dedup(rows: list[Conversation]) -> tuple[list[Conversation], Counter[str]]:
    """Keep one row per dedup key (the smallest id, whatever the input order)."""
    best: dict[str, Conversation] = {}
    for c in rows:
        k = dedup_key(c)
        if k not in best or c.id < best[k].id:
            best[k] = c
    keep = {id(c) for c in best.values()}
    removed: Counter[str] = Counter(c.meta.source for c in rows if id(c) not in keep)
    return [c for c in rows if id(c) in keep], removed


def apply_mix(rows: list[Conversation], mix: dict[str, MixBucket], seed: int) -> tuple[list[Conversation], dict]:
    buckets: dict[str, list[Conversation]] = {name: [] for name in mix}
    others: list[Conversation] = []
    selectors = {name: (b.where or Where(source=name)) for name, b in mix.items()}
    for c in rows:
        name = next((n for n, w in selectors.items() if w.matches(c)), None)
        (buckets[name] if name is not None else others).append(c)
    report: dict[str, Any] = {}
    capped: dict[str, list[Conversation]] = {}
    for name, b in mix.items():
        pool = buckets[name]
        dropped = 0
        if b.per_group_max is not None:
            pool, dropped = _cap_groups(pool, b.per_group_max, seed)
        capped[name] = ranked(pool, seed, "mix")
        report[name] = {"available": len(buckets[name]), "over_group_cap": dropped, "how": b.how() or "all"}
    selected: dict[str, list[Conversation]] = {}

    def resolve(name: str) -> list[Conversation]:
        if name in selected:
            return selected[name]
        b, pool = mix[name], capped[name]
        how = b.how()
        if how == "count":
            target = float(b.count)
        elif how == "rate":
            target = float(round(b.rate * len(pool)))
        elif how == "ratio":
            target = float(round(b.ratio * len(resolve(b.of))))
            report[name]["of_selected"] = len(selected[b.of])
        elif how is None:
            target = float(len(pool))
        else:
            raise AssertionError("proportions are resolved together")
        report[name]["requested"] = getattr(b, how) if how else None
        report[name]["target"] = int(target)
        selected[name] = take(pool, target, _one)
        return selected[name]

    props = {n: b.proportion for n, b in mix.items() if b.proportion is not None}
    if props:
        total = math.floor(min(len(capped[n]) / p for n, p in props.items()) + 1e-9)
        counts = _largest_remainder(props, total, {n: len(capped[n]) for n in props})
        for n in props:
            selected[n] = take(capped[n], counts[n], _one)
            report[n].update(requested=props[n], target=counts[n])
        pool_total = sum(len(selected[n]) for n in props)
        for n in props:
            report[n]["realised"] = round(len(selected[n]) / pool_total, 6) if pool_total else 0.0
    for name in mix:
        resolve(name)
    for name, b in mix.items():
        r = report[name]
        r["selected"] = len(selected[name])
        r["copies"] = sum(1 for c in selected[name] if is_copy(c))
        if b.rate is not None:
            r["realised"] = round(len(selected[name]) / len(capped[name]), 6) if capped[name] else 0.0
        if b.ratio is not None:
            base = len(selected[b.of])
            r["realised"] = round(len(selected[name]) / base, 6) if base else 0.0
    out = [c for name in mix for c in selected[name]] + others
    report["_unmatched_kept"] = len(others)
    return out, report


def apply_capability_ratios(rows: list[Conversation], spec: CapabilitiesSpec, seed: int,
                            weight: Callable[[Conversation], float]) -> tuple[list[Conversation], dict]:
    requested = spec.requested()
    by_cap: dict[str, list[Conversation]] = {c: [] for c in requested}
    rest: list[Conversation] = []
    for c in rows:
        (by_cap[c.meta.capability] if c.meta.capability in by_cap else rest).append(c)
    avail = {c: sum(weight(r) for r in rs) for c, rs in by_cap.items()}
    if spec.rates is not None:
        targets = {c: spec.rates[c] * avail[c] for c in requested}
    else:
        usable = {c: avail[c] / p for c, p in requested.items()}
        pool = min(usable.values()) if usable else 0.0
        targets = {c: requested[c] * pool for c in requested}
    chosen = {c: take(ranked(by_cap[c], seed, "capability"), targets[c], weight) for c in requested}
    got = {c: sum(weight(r) for r in chosen[c]) for c in requested}
    total = sum(got.values())
    report: dict[str, Any] = {"measure": spec.measure, "mode": "rates" if spec.rates is not None else "proportions",
                              "per_capability": {}}
    for c in requested:
        realised = (got[c] / avail[c] if avail[c] else 0.0) if spec.rates is not None else \
            (got[c] / total if total else 0.0)
        report["per_capability"][c] = {
            "requested": requested[c], "realised": round(realised, 6),
            "available_rows": len(by_cap[c]), "available": avail[c],
            "selected_rows": len(chosen[c]), "selected": got[c],
            "target": round(targets[c], 3),
            "max_row": max((weight(r) for r in by_cap[c]), default=0),
        }
    report["untagged_kept"] = len(rest)
    return [r for c in requested for r in chosen[c]] + rest, report


def select(rows: list[Conversation], *, seed: int, dedup_rows: bool, mix: dict[str, MixBucket] | None,
           capabilities: CapabilitiesSpec | None, weight: Callable[[Conversation], float] | None = None
           ) -> SelectionResult:
    """Dedup → mix → capability ratios. Input order does not matter (everything is ranked by id)."""
    report: dict[str, Any] = {}
    rows = sorted(rows, key=lambda c: c.id)
    if dedup_rows:
        rows, removed = dedup(rows)
        report["dedup_removed"] = dict(sorted(removed.items()))
    if mix:
        rows, report["mix"] = apply_mix(rows, mix, seed)
    if capabilities is not None and (capabilities.rates is not None or capabilities.proportions is not None):
        rows, report["capabilities"] = apply_capability_ratios(rows, capabilities, seed, weight or _one)
    return SelectionResult(rows, report)
