"""Per-span loss weights: `loss: {mode: ..., weights: [{pattern | part, weight}]}`.

Weights sit on top of the loss mask: the mode (`assistant`, `all`, ...) chooses the supervised
characters as before, and the rules give those characters a weight (1.0 unless a rule says
otherwise). A rule selects characters by a regular expression over the rendered text (`pattern`,
Python `re` syntax; every match, its whole text) or by a part (`part`): a piece every dialect's
assistant turn has — `thought` (`analysis` is the same), `call_name`, `arguments`, `answer` — read
by the dialect of the spec's `to_dialect` step from each assistant turn it wrote
(`Dialect.turn_parts`), so `{part: arguments}` selects the arguments of the calls in Hermes,
Harmony, Qwen3-Coder and ReAct alike; or a part of a ReAct text (`action`, `action_input`,
`observation`, `final_answer`). Without a `to_dialect` step, and for the ReAct dialects, the parts
are read over the supervised text by ReAct's labels (`react_turn_parts`), as before. Rules apply in order and a later rule overrides an earlier one where they overlap;
characters outside the mask are never weighted (a rule cannot add supervision).

The result of a row is `WeightedSpan` pieces: sorted, non-overlapping, covering exactly the
supervised spans, adjacent pieces of equal weight merged. A weight of 0 keeps a character in
`loss_spans` but takes it out of the loss (see dsc.runtime.train for the normalisation).
A token's weight is the largest weight among the pieces its characters overlap (`token_weights`),
the same rule that makes a token supervised when any of its characters is: a weight-0 span is then
exactly a span taken out of the mask.
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from dsc.dialects.base import Dialect, Piece, get_dialect
from dsc.dialects.react import react_turn_parts
from dsc.spec.sections import REACT_PARTS, WeightRule


class WeightedSpan(NamedTuple):
    start: int
    end: int
    weight: float


# ---------------------------------------------------------------------------------------------
# Weighting a rendered row
# ---------------------------------------------------------------------------------------------


def _selected(text: str, parts: list[Piece], rule: WeightRule) -> list[tuple[int, int]]:
    """The ranges `rule` selects: its pattern's matches, or the `parts` it names."""
    if rule.pattern is not None:
        return [(m.start(), m.end()) for m in re.finditer(rule.pattern, text) if m.end() > m.start()]
    name = "thought" if rule.part == "analysis" else rule.part
    return [(a, b) for part, a, b in parts if part == name]


def uses_parts(rules: list[WeightRule]) -> bool:
    return any(r.part for r in rules)


def parts_dialect(name: str | None, rules: list[WeightRule]) -> Dialect | None:
    """The dialect whose turns `part` rules read (`name`: the spec's `to_dialect` dialect); None:
    ReAct's labels over the supervised text. ValueError for a part the dialect does not have."""
    if name is None or not uses_parts(rules):
        return None
    dialect = get_dialect(name)
    if dialect.parts_over_text:
        return None
    react_only = sorted({r.part for r in rules if r.part in REACT_PARTS})
    if react_only:
        raise ValueError(f"loss.weights: part {', '.join(react_only)} is a part of a ReAct text; the turns of "
                         f"dialect '{name}' have thought (analysis), call_name, arguments, answer")
    try:
        dialect.turn_parts("")
    except NotImplementedError as e:
        raise ValueError(f"loss.weights: {e}; use `pattern` rules") from None
    return dialect


def weigh(text: str, spans: list[tuple[int, int]], rules: list[WeightRule],
          parts: list[Piece] | None = None) -> list[WeightedSpan]:
    """The weighted pieces of a row's supervised spans (see the module doc). `parts`: the pieces of
    the row's assistant turns as its dialect reads them; None: ReAct's parts of the supervised text."""
    if not spans:
        return []
    # Boundaries: span edges and every selected range's edges inside a span; each elementary
    # interval between two boundaries has one weight.
    cuts = {x for s in spans for x in s}
    if parts is None:  # the supervised text's ReAct parts, read once for all `part` rules
        parts = [p for a0, b0 in spans for p in react_turn_parts(text, a0, b0)] if uses_parts(rules) else []
    selections = [(rule.weight, _selected(text, parts, rule)) for rule in rules]
    for _, ranges in selections:
        cuts.update(x for r in ranges for x in r)
    points = np.array(sorted(cuts), dtype=np.int64)
    weight = np.ones(len(points) - 1, dtype=np.float64)
    sp = np.asarray(spans, dtype=np.int64)
    mids = points[:-1]
    k = np.searchsorted(sp[:, 1], mids, side="right")
    inside = (k < len(sp)) & (sp[np.minimum(k, len(sp) - 1), 0] <= mids)
    for w, ranges in selections:
        for a, b in ranges:
            weight[np.searchsorted(points, a):np.searchsorted(points, b)] = w
    out: list[WeightedSpan] = []
    w32 = weight.astype(np.float32)  # as stored
    for i in np.flatnonzero(inside).tolist():
        a, b, w = int(points[i]), int(points[i + 1]), float(w32[i])
        if out and out[-1].end == a and out[-1].weight == w:
            out[-1] = WeightedSpan(out[-1].start, b, w)
        else:
            out.append(WeightedSpan(a, b, w))
    return out


def token_weights(offsets: np.ndarray, pieces: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float32 per token: the largest weight of the pieces its [start, end) overlaps, 0 where it
    overlaps none (a zero-width token covers the character at its position, as in
    `supervised_mask`). `pieces` (n, 2) are sorted and non-overlapping."""
    n = len(offsets)
    out = np.zeros(n, dtype=np.float32)
    if n == 0 or len(pieces) == 0:
        return out
    starts, ends = offsets[:, 0], np.maximum(offsets[:, 1], offsets[:, 0] + 1)
    first = np.searchsorted(pieces[:, 1], starts, side="right")  # first piece ending after the start
    last = np.searchsorted(pieces[:, 0], ends, side="left") - 1  # last piece starting before the end
    hit = first <= last
    single = hit & (first == last)
    out[single] = weights[first[single]]
    for t in np.flatnonzero(hit & ~single).tolist():  # a token across several pieces (rare)
        out[t] = weights[first[t]:last[t] + 1].max()
    return out
