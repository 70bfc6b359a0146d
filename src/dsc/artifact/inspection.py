"""Reading an artifact back: its manifest, its rows and their statistics, and a rich view of
what a row really trains on (supervised spans, token by token when tokenised, the conditioning
strings; for a preference artifact, the pair's prompt and its two sides, or a KTO row).

Artifacts are opened by the one reader, `dsc.artifact.reader.open_artifact`. (Named
`inspection`, not `inspect`, so that it can never shadow the standard library's `inspect`.)
"""
from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsc.artifact.manifest import QUARANTINE, Manifest
from dsc.artifact.reader import Artifact, split_sort_key
from dsc.core.errors import ArtifactError, did_you_mean

IGNORE_INDEX = -100
NONE_KEY = "(none)"
# Row attributes that counts are broken down by (diff, card, inspect): meta fields.
DIMENSIONS = ("source", "label", "capability")
# A preference row's rendered texts (`dsc.compiler.stages.preference.columns`): the prompt, then
# what the objective scores (DPO: both sides; KTO: the one completion). They have no `text`,
# `loss_spans` or `meta` columns; their statistics are counted in characters of these texts.
PROMPT_TEXT = "prompt_text"
COMPLETION_TEXTS = ("chosen_text", "rejected_text", "completion_text")
SIDE_NAMES = ("chosen", "rejected", "completion")  # tokenised: `<side>_input_ids`, `<side>_labels`
KTO_CLASSES = {True: "desirable", False: "undesirable"}


def is_preference_row(row: dict[str, Any]) -> bool:
    return "text" not in row and PROMPT_TEXT in row


def preference_kind(row: dict[str, Any]) -> str:
    return "dpo" if "chosen_text" in row else "kto"


def row_text(row: dict[str, Any]) -> str:
    """What a row shows as one text: an SFT row's `text`; a preference row's prompt text, then
    each side under a marker line (DPO: chosen, rejected; KTO: the completion with its class)."""
    if not is_preference_row(row):
        return row.get("text") or ""
    parts = [row.get(PROMPT_TEXT) or ""]
    if preference_kind(row) == "dpo":
        parts += ["\n── chosen ──\n", row.get("chosen_text") or "", "\n── rejected ──\n", row.get("rejected_text") or ""]
    else:
        parts += [f"\n── completion ({KTO_CLASSES[bool(row.get('label'))]}) ──\n", row.get("completion_text") or ""]
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Statistics (vectorised over record batches: a million rows must not mean a million dicts)
# ---------------------------------------------------------------------------------------------


@dataclass
class Tally:
    rows: int = 0
    supervised_chars: int = 0
    supervised_tokens: int = 0

    def add(self, rows: int, chars: int, tokens: int) -> None:
        self.rows += rows
        self.supervised_chars += chars
        self.supervised_tokens += tokens

    def to_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "supervised_chars": self.supervised_chars,
                "supervised_tokens": self.supervised_tokens}


@dataclass
class GroupCounts:
    """Distinct groups per split, and the groups with rows in more than one split (sorted)."""

    per_split: dict[str, int] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, distinct: dict[str, pa.Array]) -> GroupCounts:
        """From each split's distinct groups."""
        shared: list[str] = []
        if len(distinct) >= 2:
            counts = pc.value_counts(pa.concat_arrays(list(distinct.values())))
            shared = sorted(counts.field("values").filter(pc.greater(counts.field("counts"), 1)).to_pylist())
        return cls({s: len(a) for s, a in distinct.items()}, shared)

    def merge(self, other: GroupCounts) -> None:
        """Add the counts of groups disjoint from this one's (another partition of them)."""
        for s, n in other.per_split.items():
            self.per_split[s] = self.per_split.get(s, 0) + n
        self.shared = list(heapq.merge(self.shared, other.shared))  # both sorted


@dataclass
class LengthCounts:
    """Row lengths as a count per distinct length, ascending: exact percentiles and histograms in
    memory that grows with the distinct lengths, not with the rows (a build's driver merges every
    shard's)."""

    values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, lengths: Iterable[int] | np.ndarray) -> LengthCounts:
        values, counts = np.unique(np.asarray(list(lengths) if not isinstance(lengths, np.ndarray) else lengths,
                                              np.int64), return_counts=True)
        return cls(values, counts.astype(np.int64))

    def add(self, lengths: np.ndarray) -> None:
        self.merge(LengthCounts.of(lengths))

    def merge(self, other: LengthCounts) -> None:
        if not len(other.values):
            return
        values, at = np.unique(np.concatenate([self.values, other.values]), return_inverse=True)
        counts = np.zeros(len(values), np.int64)
        np.add.at(counts, at, np.concatenate([self.counts, other.counts]))
        self.values, self.counts = values, counts

    def __len__(self) -> int:
        return int(self.counts.sum())

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, LengthCounts) and np.array_equal(self.values, other.values)
                and np.array_equal(self.counts, other.counts))

    def lower_percentile(self, q: float) -> int:
        """`np.percentile(lengths, q, method="lower")`: the length at rank floor(q / 100 × (n − 1))."""
        rank = int(np.floor(np.true_divide(q, 100) * (len(self) - 1)))
        return int(self.values[np.searchsorted(np.cumsum(self.counts), rank, side="right")])


@dataclass
class ArtifactStats:
    tokenised: bool
    splits: dict[str, Tally] = field(default_factory=dict)
    # dimension (source | label | capability) → split → key → tally
    by: dict[str, dict[str, dict[str, Tally]]] = field(default_factory=dict)
    # split → its rows' lengths, in tokens when tokenised, else in characters
    lengths: dict[str, LengthCounts] = field(default_factory=dict)
    # split → loss weight → supervised tokens (chars when not tokenised) of that weight; only for
    # artifacts with loss weights
    by_weight: dict[str, dict[float, int]] = field(default_factory=dict)
    # split → the distinct groups of its rows, as Arrow string arrays (one per batch counted, made
    # distinct again when they pile up): what decides whether a question leaks across splits,
    # without a Python object per group (a build's driver merges every shard's)
    groups: dict[str, list[pa.Array]] = field(default_factory=dict, compare=False)
    # what a build counted of its groups in tasks (`engine.spill`), in place of `groups`
    counted_groups: GroupCounts | None = field(default=None, compare=False)

    @property
    def unit(self) -> str:
        return "tokens" if self.tokenised else "chars"

    def supervised(self, tally: Tally) -> int:
        return tally.supervised_tokens if self.tokenised else tally.supervised_chars

    def start_split(self, split: str) -> None:
        """A split with no rows counted yet (splits appear in the order they are started)."""
        self.splits.setdefault(split, Tally())
        self.lengths.setdefault(split, LengthCounts())

    def add_batch(self, split: str, batch: pa.RecordBatch) -> None:
        """Count a batch of a split's rows; batches must come in artifact order (keys appear in
        the order of their first row)."""
        self.start_split(split)
        m = batch_measures(batch)
        chars, tokens = m["supervised_chars"], m["supervised_tokens"]
        self.splits[split].add(batch.num_rows, int(chars.sum()), int(tokens.sum()))
        self.lengths[split].add(m["tokens"] if self.tokenised else m["chars"])
        if "group" in batch.schema.names:
            self._add_groups(split, [pc.unique(batch.column("group"))])
        weighted = weight_counts(batch, self.tokenised)
        if weighted is not None:
            per_weight = self.by_weight.setdefault(split, {})
            for w, n in weighted.items():
                per_weight[w] = per_weight.get(w, 0) + n
        for dim in DIMENSIONS:
            per = self.by.setdefault(dim, {}).setdefault(split, {})
            keys, first, which = np.unique(np.asarray(meta_keys(batch, dim), dtype=object), return_index=True,
                                           return_inverse=True)
            rows = np.bincount(which, minlength=len(keys))
            key_chars = np.bincount(which, weights=chars, minlength=len(keys))
            key_tokens = np.bincount(which, weights=tokens, minlength=len(keys))
            for k in np.argsort(first, kind="stable").tolist():
                per.setdefault(str(keys[k]), Tally()).add(int(rows[k]), int(key_chars[k]), int(key_tokens[k]))

    def merge(self, other: ArtifactStats) -> None:
        """Count `other`'s rows after this one's: the same as if its batches had been added here
        in their order (shards are counted where they are written, then merged in artifact order)."""
        assert other.tokenised == self.tokenised, "counts of one artifact"
        for split, tally in other.splits.items():
            self.start_split(split)
            self.splits[split].add(tally.rows, tally.supervised_chars, tally.supervised_tokens)
            self.lengths[split].merge(other.lengths[split])
        for split, arrays in other.groups.items():
            self._add_groups(split, arrays)
        for split, weights in other.by_weight.items():
            per_weight = self.by_weight.setdefault(split, {})
            for w, n in weights.items():
                per_weight[w] = per_weight.get(w, 0) + n
        for dim, splits in other.by.items():
            for split, keys in splits.items():
                per = self.by.setdefault(dim, {}).setdefault(split, {})
                for key, tally in keys.items():
                    per.setdefault(key, Tally()).add(tally.rows, tally.supervised_chars, tally.supervised_tokens)

    _COMPACT_AT = 64  # arrays of a split's groups kept before they are made distinct together

    def _add_groups(self, split: str, arrays: list[pa.Array]) -> None:
        kept = self.groups.setdefault(split, [])
        kept.extend(arrays)
        if len(kept) >= self._COMPACT_AT:
            kept[:] = [self._distinct(split)]

    def _distinct(self, split: str) -> pa.Array:
        arrays = self.groups.get(split) or [pa.array([], pa.string())]
        return pc.unique(pa.concat_arrays([a.cast(pa.string()) for a in arrays]))

    def distinct_groups(self) -> dict[str, pa.Array]:
        """Each split's distinct groups (splits whose rows had a group column)."""
        return {s: self._distinct(s) for s in self.groups}

    def group_counts(self) -> GroupCounts:
        return self.counted_groups if self.counted_groups is not None else GroupCounts.of(self.distinct_groups())

    def groups_per_split(self) -> dict[str, int]:
        per = self.group_counts().per_split
        return {s: per.get(s, 0) for s in self.splits}

    def shared_groups(self) -> list[str]:
        """Groups with rows in more than one split, sorted (a question the model trains on and is
        validated on)."""
        return self.group_counts().shared

    def has_values(self, dim: str) -> bool:
        """Whether any row carries this attribute (labels and capabilities are optional)."""
        return any(k != NONE_KEY for split in self.by.get(dim, {}).values() for k in split)

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "splits": {s: t.to_dict() for s, t in self.splits.items()},
            "by": {d: {s: {k: t.to_dict() for k, t in sorted(keys.items())} for s, keys in splits.items()}
                   for d, splits in self.by.items()},
        }


def weight_counts(batch: pa.RecordBatch, tokenised: bool) -> dict[float, int] | None:
    """Supervised tokens (`weights` where labels are not -100) or, untokenised, supervised
    characters (`loss_weights` pieces) per loss weight; None for an unweighted artifact."""
    names = batch.schema.names
    if tokenised and "weights" in names:
        weights = np.asarray(pc.list_flatten(batch.column("weights")).to_numpy(zero_copy_only=False))
        labels = np.asarray(pc.list_flatten(batch.column("labels")).to_numpy(zero_copy_only=False))
        values, counts = np.unique(weights[labels != IGNORE_INDEX], return_counts=True)
        return {float(v): int(c) for v, c in zip(values, counts)}
    if "loss_weights" in names:
        pieces = pc.list_flatten(batch.column("loss_weights"))
        start, end, weight = (np.asarray(pc.struct_field(pieces, k).to_numpy(zero_copy_only=False))
                              for k in ("start", "end", "weight"))
        values, which = np.unique(weight, return_inverse=True)
        sizes = np.bincount(which, weights=end - start, minlength=len(values))
        return {float(v): int(c) for v, c in zip(values, sizes)}
    return None


def _list_sums(arr: pa.ChunkedArray | pa.Array, n: int, predicate) -> np.ndarray:
    """Per row of a list column: how many elements satisfy `predicate` (vectorised)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    values = np.asarray(pc.list_flatten(arr).to_numpy(zero_copy_only=False))
    parents = np.asarray(pc.list_parent_indices(arr).to_numpy(zero_copy_only=False))
    if len(values) == 0:
        return np.zeros(n, dtype=np.int64)
    return np.bincount(parents, weights=predicate(values), minlength=n).astype(np.int64)


def batch_measures(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """Per row of a batch: text length, supervised characters, token count, supervised tokens."""
    n = batch.num_rows
    names = batch.schema.names
    out: dict[str, np.ndarray] = {}
    if "text" not in names and PROMPT_TEXT in names:
        return _preference_measures(batch)
    out["chars"] = np.asarray(pc.utf8_length(batch.column("text")).fill_null(0).to_numpy(zero_copy_only=False))
    spans = batch.column("loss_spans")
    # A span [a, b] contributes b - a: flatten twice, then sum (b - a) per row.
    inner = pc.list_flatten(spans)
    bounds = np.asarray(pc.list_flatten(inner).to_numpy(zero_copy_only=False)).reshape(-1, 2)
    sup = np.zeros(n, dtype=np.int64)
    if len(bounds):
        rows_of_spans = np.asarray(pc.list_parent_indices(spans).to_numpy(zero_copy_only=False))
        sup = np.bincount(rows_of_spans, weights=bounds[:, 1] - bounds[:, 0], minlength=n).astype(np.int64)
    out["supervised_chars"] = sup
    if "labels" in names:
        labels = batch.column("labels")
        out["tokens"] = np.asarray(pc.list_value_length(labels).fill_null(0).to_numpy(zero_copy_only=False))
        out["supervised_tokens"] = _list_sums(labels, n, lambda v: v != IGNORE_INDEX)
    else:
        out["tokens"] = np.zeros(n, dtype=np.int64)
        out["supervised_tokens"] = np.zeros(n, dtype=np.int64)
    return out


def _utf8_lengths(batch: pa.RecordBatch, name: str) -> np.ndarray:
    if name not in batch.schema.names:
        return np.zeros(batch.num_rows, dtype=np.int64)
    return np.asarray(pc.utf8_length(batch.column(name)).fill_null(0).to_numpy(zero_copy_only=False)).astype(np.int64)


def _preference_measures(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """A preference row: supervised = the completions' characters (both sides of a DPO pair, as
    the build counts them), length = prompt + completions."""
    n = batch.num_rows
    sup = sum((_utf8_lengths(batch, c) for c in COMPLETION_TEXTS), np.zeros(n, dtype=np.int64))
    tokens, sup_tokens = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    for side in SIDE_NAMES:  # tokenised: each side's ids (prompt included) and labels
        if f"{side}_labels" in batch.schema.names:
            labels = batch.column(f"{side}_labels")
            tokens += np.asarray(pc.list_value_length(labels).fill_null(0).to_numpy(zero_copy_only=False))
            sup_tokens += _list_sums(labels, n, lambda v: v != IGNORE_INDEX)
    return {"chars": _utf8_lengths(batch, PROMPT_TEXT) + sup, "supervised_chars": sup,
            "tokens": tokens, "supervised_tokens": sup_tokens}


def quarantine_group(stage: str, reason: str) -> str:
    """The key quarantined rows are counted under (`counts.quarantine_reasons`, the report):
    the stage and the reason's first clause, e.g. `normalise: empty conversation`."""
    return f"{stage}: {reason.split(':')[0]}"


def iter_quarantine(art: Artifact) -> Iterator[dict[str, Any]]:
    """The artifact's quarantined rows, streamed (an unreadable line is skipped, not fatal)."""
    path = art.path / QUARANTINE
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict):
                    yield entry


def meta_keys(batch: pa.RecordBatch, dim: str) -> list[str]:
    if "meta" not in batch.schema.names:  # a preference row: KTO's class is its label; the rest is not kept
        if dim == "label" and "label" in batch.schema.names:
            return [KTO_CLASSES.get(v, NONE_KEY) for v in batch.column("label").to_pylist()]
        return [NONE_KEY] * batch.num_rows
    values = pc.struct_field(batch.column("meta"), dim).to_pylist()
    return [NONE_KEY if v is None else str(v) for v in values]


STAT_COLUMNS = ["id", "group", "meta", "text", "loss_spans", "labels", "weights", "loss_weights",
                PROMPT_TEXT, *COMPLETION_TEXTS, "label", *(f"{s}_labels" for s in SIDE_NAMES)]  # (columns a split lacks are skipped)


def artifact_stats(art: Artifact) -> ArtifactStats:
    """Counts read back from a written artifact (the build counts the same rows as it writes them)."""
    stats = ArtifactStats(tokenised=art.tokenised)
    for split in art.splits:
        stats.start_split(split)
        for batch in art.batches(split, STAT_COLUMNS):
            stats.add_batch(split, batch)
    return stats


def length_summary(lengths: LengthCounts) -> dict[str, int]:
    if not len(lengths):
        return {"min": 0, "median": 0, "p95": 0, "max": 0}
    # "lower" interpolation: an observed length, the same on every numpy version.
    return {"min": int(lengths.values[0]), "median": lengths.lower_percentile(50),
            "p95": lengths.lower_percentile(95), "max": int(lengths.values[-1])}


def realised_mix(stats: ArtifactStats, dim: str, split: str = "train") -> list[tuple[str, int, float, int, float]]:
    """(key, rows, share of rows, supervised units, share of supervised units) for one split."""
    per = stats.by.get(dim, {}).get(split, {})
    rows_total = sum(t.rows for t in per.values()) or 1
    sup_total = sum(stats.supervised(t) for t in per.values()) or 1
    return [(key, t.rows, t.rows / rows_total, stats.supervised(t), stats.supervised(t) / sup_total)
            for key, t in sorted(per.items())]


# ---------------------------------------------------------------------------------------------
# Finding rows
# ---------------------------------------------------------------------------------------------


def find_rows(art: Artifact, *, split: str | None = None, ids: Iterable[str] = (), n: int = 3
              ) -> list[tuple[str, dict[str, Any]]]:
    """(split, row) pairs: the rows with the given ids (a unique prefix, or the hash after
    `source:`, is enough), else the first `n` rows of `split` (default: the first split)."""
    wanted = list(ids)
    if split is not None:
        art.check_split(split)
    search = [split] if split is not None else art.splits
    if not wanted:
        out: list[tuple[str, dict[str, Any]]] = []
        for row in art.rows(search[0]):
            if len(out) >= n:
                break
            out.append((search[0], row))
        return out
    all_ids: dict[str, str] = {}
    for s in search:
        for batch in art.batches(s, ["id"]):
            for i in batch.column("id").to_pylist():
                all_ids[i] = s
    resolved: dict[str, str] = {}
    for w in wanted:
        matches = [w] if w in all_ids else \
            [i for i in all_ids if i.startswith(w) or i.split(":", 1)[-1].startswith(w)]
        if len(matches) != 1:
            where = f" in split '{split}'" if split else ""
            if not matches:
                raise ArtifactError(f"no row with id '{w}'{where}{did_you_mean(w, list(all_ids))}")
            raise ArtifactError(f"id '{w}' is ambiguous{where}: {', '.join(sorted(matches)[:5])}…")
        resolved[matches[0]] = all_ids[matches[0]]
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for s in sorted(set(resolved.values()), key=split_sort_key):
        for row in art.rows_with_ids(s, [i for i, sp in resolved.items() if sp == s]):
            found[row["id"]] = (s, row)
    return [found[i] for i in resolved]


def conditioning_strings(manifest: Manifest) -> dict[str, str]:
    """class → conditioning string, from the resolved spec's `condition` block (and the
    inference-time one), for highlighting."""
    out: dict[str, str] = {}
    cond = manifest.spec.get("condition") or {}
    for cls, s in sorted((cond.get("strings") or {}).items()):
        if isinstance(s, str) and s.strip():
            out[cls] = s
    inf = manifest.inference.condition.string if manifest.inference.condition is not None else None
    if inf is not None and inf.strip() and inf not in out.values():
        out["inference"] = inf
    return out


# ---------------------------------------------------------------------------------------------
# Rich rendering
# ---------------------------------------------------------------------------------------------

SUPERVISED_STYLES = ("black on green3", "black on dark_sea_green2")
CONTEXT_STYLES = ("grey70 on grey19", "grey70 on grey27")
SPAN_SUPERVISED = "bold green"
SPAN_CONTEXT = "dim"
CONDITION_STYLE = "bold magenta underline"


def occurrences(text: str, needle: str) -> list[tuple[int, int]]:
    out, start = [], 0
    while needle:
        i = text.find(needle, start)
        if i < 0:
            break
        out.append((i, i + len(needle)))
        start = i + len(needle)
    return out


@dataclass
class TokenView:
    tokenizer: Any  # tokenizers.Tokenizer
    source: Path

    def spans(self, text: str, input_ids: list[int]) -> list[tuple[int, int]] | None:
        """Each token's character span in `text`, when re-encoding reproduces the stored ids
        (a truncated row: a prefix of them); None when it does not."""
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        if list(enc.ids[: len(input_ids)]) != list(input_ids):
            return None
        return [tuple(o) for o in enc.offsets[: len(input_ids)]]

    def pieces(self, input_ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([i], skip_special_tokens=False) for i in input_ids]


def styled_text(row: dict[str, Any], token_view: TokenView | None, conditions: dict[str, str]):
    """The row's rendered text with what it trains on coloured: token by token (alternating
    shades mark the boundaries; green = supervised) when the tokenizer is at hand, else the
    supervised character spans; conditioning strings underlined in magenta."""
    from rich.text import Text

    text: str = row.get("text") or ""
    ids = row.get("input_ids")
    labels = row.get("labels")
    out = Text(text)
    mode = "spans"
    if token_view is not None and ids is not None and labels is not None:
        spans = token_view.spans(text, ids)
        if spans is not None:
            mode = "tokens"
            for k, ((a, b), lab) in enumerate(zip(spans, labels)):
                styles = SUPERVISED_STYLES if lab != IGNORE_INDEX else CONTEXT_STYLES
                out.stylize(styles[k % 2], a, b)
        else:
            # The stored ids are not what this text encodes to (a custom pipeline?): show the
            # decoded pieces themselves.
            mode = "pieces"
            out = Text()
            for k, (piece, lab) in enumerate(zip(token_view.pieces(ids), labels)):
                styles = SUPERVISED_STYLES if lab != IGNORE_INDEX else CONTEXT_STYLES
                out.append(piece, style=styles[k % 2])
            text = out.plain
    if mode == "spans":
        out.stylize(SPAN_CONTEXT, 0, len(text))
        for a, b in row.get("loss_spans") or []:
            out.stylize(SPAN_SUPERVISED, a, b)
    for s in conditions.values():
        hits = occurrences(text, s) or occurrences(text, s.strip())
        for a, b in hits:
            out.stylize(CONDITION_STYLE, a, b)
    return out, mode


def row_panel(split: str, row: dict[str, Any], token_view: TokenView | None, conditions: dict[str, str]):
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    if is_preference_row(row):
        return preference_panel(split, row, conditions)
    meta = row.get("meta") or {}
    prov = meta.get("provenance") or {}
    body, mode = styled_text(row, token_view, conditions)
    sup_chars = sum(b - a for a, b in row.get("loss_spans") or [])
    facts = [f"split {split}", f"source {meta.get('source')}"]
    for k in ("label", "capability", "task", "method"):
        if meta.get(k) is not None:
            facts.append(f"{k} {meta[k]}")
    if row.get("labels") is not None:
        facts.append(f"{sum(1 for t in row['labels'] if t != IGNORE_INDEX)}/{len(row['labels'])} tokens supervised")
    facts.append(f"{sup_chars}/{len(row.get('text') or '')} chars supervised")
    facts.append(f"from {prov.get('file')}:{(prov.get('row') or 0) + 1}")
    facts.append(f"view: {mode}")
    # The facts go inside the panel, not in its border, where rich would cut them to the width.
    header = Text(" · ".join(facts), style="cyan")
    return Panel(Group(header, Text(""), body), title=f"[bold]{row['id']}[/] (group {row.get('group')})",
                 title_align="left")


def common_prefix(a: str, b: str) -> int:
    """How many leading characters two texts share (where a pair's two sides part)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


CHOSEN_STYLE = "bold green"
REJECTED_STYLE = "bold red"


def preference_panel(split: str, row: dict[str, Any], conditions: dict[str, str]):
    """A DPO pair: its prompt text, then chosen and rejected side by side, each side's shared
    beginning dim and, from where the two sides part, its own colour; a KTO row: the prompt and
    its one completion, coloured by its class."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    prompt = Text(row.get(PROMPT_TEXT) or "", style=SPAN_CONTEXT)
    for s in conditions.values():
        for a, b in occurrences(prompt.plain, s) or occurrences(prompt.plain, s.strip()):
            prompt.stylize(CONDITION_STYLE, a, b)
    if preference_kind(row) == "dpo":
        chosen, rejected = row.get("chosen_text") or "", row.get("rejected_text") or ""
        k = common_prefix(chosen, rejected)
        sides = Table.grid(expand=True, padding=(0, 2))
        sides.add_column(ratio=1)
        sides.add_column(ratio=1)
        sides.add_row(Text("chosen", style=CHOSEN_STYLE), Text("rejected", style=REJECTED_STYLE))
        cells = []
        for text, style in ((chosen, CHOSEN_STYLE), (rejected, REJECTED_STYLE)):
            t = Text(text)
            t.stylize(SPAN_CONTEXT, 0, k)
            t.stylize(style, k, len(text))
            cells.append(t)
        sides.add_row(*cells)
        facts = [f"split {split}", "DPO pair", f"chosen {row.get('chosen_id')}", f"rejected {row.get('rejected_id')}",
                 f"score gap {row.get('score_gap')}", f"the sides part at character {k}",
                 f"{len(chosen)} + {len(rejected)} chars scored"]
        body = Group(Text("prompt", style="bold"), prompt, Text(""), sides)
    else:
        desirable = bool(row.get("label"))
        completion = Text(row.get("completion_text") or "", style=CHOSEN_STYLE if desirable else REJECTED_STYLE)
        facts = [f"split {split}", f"KTO row, {KTO_CLASSES[desirable]}", f"from {row.get('source_id')}",
                 f"score {row.get('score')}", f"{len(completion.plain)} chars scored"]
        body = Group(Text("prompt", style="bold"), prompt, Text(""),
                     Text(f"completion ({KTO_CLASSES[desirable]})", style="bold"), completion)
    header = Text(" · ".join(facts), style="cyan")
    return Panel(Group(header, Text(""), body), title=f"[bold]{row['id']}[/] (group {row.get('group')})",
                 title_align="left")


def legend(token_view: TokenView | None, conditions: dict[str, str], kind: str = "sft"):
    from rich.text import Text

    t = Text()
    if kind != "sft":
        t.append("prompt / shared by both sides", style=SPAN_CONTEXT)
        t.append("  ")
        t.append("chosen (desirable)", style=CHOSEN_STYLE)
        t.append("  ")
        t.append("rejected (undesirable)", style=REJECTED_STYLE)
    elif token_view is not None:
        t.append(" supervised token ", style=SUPERVISED_STYLES[0])
        t.append(" ")
        t.append(" context token ", style=CONTEXT_STYLES[0])
    else:
        t.append("supervised", style=SPAN_SUPERVISED)
        t.append("  ")
        t.append("context", style=SPAN_CONTEXT)
    if conditions:
        t.append("  ")
        t.append("conditioning string", style=CONDITION_STYLE)
    return t


def stats_table(art: Artifact, stats: ArtifactStats):
    from rich.table import Table

    splits = art.splits
    table = Table(title=f"{art.name}  version {art.version}", title_justify="left")
    table.add_column("")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_row("rows", *[str(stats.splits[s].rows) for s in splits])
    table.add_row(f"supervised {stats.unit}", *[str(stats.supervised(stats.splits[s])) for s in splits])
    for which in ("median", "p95", "max"):
        table.add_row(f"{which} length ({stats.unit})",
                      *[str(length_summary(stats.lengths[s])[which]) for s in splits])
    for dim in DIMENSIONS:
        if not stats.has_values(dim):
            continue
        keys = sorted({k for s in splits for k in stats.by[dim].get(s, {})})
        table.add_section()
        for key in keys:
            cells = []
            for s in splits:
                t = stats.by[dim].get(s, {}).get(key)
                total = stats.splits[s].rows or 1
                cells.append(f"{t.rows} ({100 * t.rows / total:.0f}%)" if t else "0")
            table.add_row(f"{dim} {key}", *cells)
    return table
