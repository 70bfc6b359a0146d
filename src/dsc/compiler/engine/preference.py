"""The preference phase: a spec with `preference:` writes pairs (DPO) or one-sided rows (KTO)
instead of SFT rows.

It runs where rendering would (after selection: dedup and mix apply to the rows pairs are made
of): the selected rows are read back, paired by `stages.preference.pairs.build_pairs` (a pure
function of the rows, the section and the seed), rendered into TRL's columns by
`stages.preference.columns`, split by a seeded hash of the group (every pair of a question lands
in one split, as the SFT rows of a group do) and ordered in each split by a seeded hash of the
row id. So the bytes depend on neither the worker count nor the input order.

Pairs are far fewer than rows and small, so this phase holds them in memory (the SFT path's
external sort is not needed here); the selected rows are read back once.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dsc.artifact.inspection import DIMENSIONS, NONE_KEY, ArtifactStats
from dsc.artifact.inspection import Tally as StatTally
from dsc.chat.tokenize import IGNORE_INDEX
from dsc.compiler.engine.cache import BuildCache
from dsc.compiler.engine.limits import check_bad_rows
from dsc.compiler.engine.manifest import write_artifact_files
from dsc.compiler.engine.normalise import NormalisedSources
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.result import BuildResult, SourceCacheReport
from dsc.compiler.engine.rowfiles import QuarantineEntry
from dsc.compiler.engine.selected import SelectedRows
from dsc.compiler.engine.tally import STAGE3_SEQ, Tally
from dsc.compiler.stages.preference.columns import SCHEMAS, dpo_row, kto_row
from dsc.compiler.stages.preference.pairs import PairSelection, build_pairs, kto_rows
from dsc.compiler.stages.preference.tokens import (
    TooLong,
    tokenize_row,
    tokenized_schema,
)
from dsc.compiler.stages.select.order import SPLITS, split_code, unit_hash
from dsc.compiler.stages.transforms.common import rank_key
from dsc.compiler.stages.write import artifact as art
from dsc.core.errors import BuildError
from dsc.core.hashing import sha256_file
from dsc.record import Conversation
from dsc.spec.model import LoadedSpec
from dsc.spec.sections import PreferenceSpec


@dataclass
class PreferenceRows:
    """The rows of a preference artifact per split, in output order, and what pairing reported."""

    kind: str
    split_rows: dict[str, list[dict[str, Any]]]
    selection: PairSelection
    quarantine: list[QuarantineEntry]
    sides: dict[str, list[Conversation]] = field(default_factory=dict)  # row id → its source rows


def _quarantined(chosen: Conversation, rejected: Conversation, reason: str, seq: int,
                 stage: str = "preference") -> QuarantineEntry:
    prov = chosen.meta.provenance
    return QuarantineEntry.make(chosen.meta.source, prov.file, prov.row, stage, reason,
                                {"group": chosen.group, "chosen_id": chosen.id, "rejected_id": rejected.id},
                                bad=False, seq=seq)


def _no_pairs(loaded: LoadedSpec, sel: PairSelection) -> Exception:
    why = [f"{sel.candidates} candidate pair(s) within groups"]
    why += [f"{n} {reason}" for reason, n in sorted(sel.dropped.items())]
    if sel.unpairable:
        why.append(f"{len(sel.unpairable)} could not be cut (first: {sel.unpairable[0].reason})")
    return loaded.error("`preference` made no pair: " + "; ".join(why) + ". Do `chosen` and `rejected` select "
                        "rows of the same groups?", ("preference",))


def _tokenized(row: dict[str, Any], kind: str, tokenizer: Any) -> dict[str, Any]:
    """The row with its token columns (`stages.preference.tokens`); a side too long under
    overflow: error is a build error, under drop a TooLong (quarantined)."""
    if tokenizer is None:
        return row
    try:
        row.update(tokenize_row(tokenizer, row, kind))
    except TooLong as e:
        if tokenizer.overflow == "error":
            raise BuildError(f"row {row['id']}: {e} (tokenize.overflow: error)") from None
        raise
    return row


def pair_rows(loaded: LoadedSpec, template: Any, chosen: SelectedRows, tokenizer: Any = None) -> PreferenceRows:
    """Pair the selected rows and lay the artifact's rows out by split and output order
    (`tokenizer`: the spec's `tokenize:`, whose token columns each row then gets)."""
    spec = loaded.spec
    pref: PreferenceSpec = spec.preference  # type: ignore[assignment]
    convs = chosen.conversations(np.arange(len(chosen), dtype=np.int64))
    sel = build_pairs(convs, pref, spec.seed)
    del convs
    if not sel.pairs:
        raise _no_pairs(loaded, sel)
    quarantine = [_quarantined(u.chosen, u.rejected, u.reason, STAGE3_SEQ + i) for i, u in enumerate(sel.unpairable)]
    made: list[tuple[str, str, dict[str, Any], list[Conversation]]] = []  # (group, id, row, source rows)
    if pref.kind == "dpo":
        for p in sel.pairs:
            try:
                made.append((p.group, p.id, _tokenized(dpo_row(p, template), "dpo", tokenizer), [p.chosen, p.rejected]))
            except TooLong as e:
                quarantine.append(_quarantined(p.chosen, p.rejected, str(e), STAGE3_SEQ + len(quarantine), "tokenize"))
            except ValueError as e:
                quarantine.append(_quarantined(p.chosen, p.rejected, str(e), STAGE3_SEQ + len(quarantine)))
    else:
        for k in kto_rows(sel.pairs):
            try:
                made.append((k.conv.group, k.id, _tokenized(kto_row(k, template), "kto", tokenizer), [k.conv]))
            except TooLong as e:
                quarantine.append(_quarantined(k.conv, k.conv, str(e), STAGE3_SEQ + len(quarantine), "tokenize"))
            except ValueError as e:
                quarantine.append(_quarantined(k.conv, k.conv, str(e), STAGE3_SEQ + len(quarantine)))
    groups = [g for g, *_ in made]
    u = np.array([unit_hash(spec.seed, "split", g) for g in groups], np.float64)
    codes = split_code(spec, u) if len(u) else np.zeros(0, np.int8)
    split_rows: dict[str, list[dict[str, Any]]] = {}
    sides: dict[str, list[Conversation]] = {}
    for code, name in enumerate(SPLITS):
        mine = [made[i] for i in np.flatnonzero(codes == code).tolist()]
        mine.sort(key=lambda m: rank_key(spec.seed, "order", m[1]))
        if mine:
            split_rows[name] = [m[2] for m in mine]
            sides.update({m[1]: m[3] for m in mine})
    if not split_rows.get("train"):
        raise BuildError("the build produced no train rows: every pair's group went to validation/test "
                         "(see quarantine reasons with --out and the summary)")
    quarantine.sort(key=QuarantineEntry.sort_key)
    return PreferenceRows(pref.kind, split_rows, sel, quarantine, sides)


def _completion_chars(kind: str, row: dict[str, Any]) -> int:
    if kind == "dpo":
        return len(row["chosen_text"]) + len(row["rejected_text"])
    return len(row["completion_text"])


def _token_counts(kind: str, row: dict[str, Any]) -> tuple[int, int]:
    """(tokens, supervised tokens) of a tokenised row's sides (0, 0 untokenised); DPO: both sides."""
    if "prompt_input_ids" not in row:
        return 0, 0
    sides = ("chosen", "rejected") if kind == "dpo" else ("completion",)
    return (sum(len(row[f"{s}_input_ids"]) for s in sides),
            sum(1 for s in sides for x in row[f"{s}_labels"] if x != IGNORE_INDEX))


def _row_class(kind: str, row: dict[str, Any], side: Conversation, dim: str) -> str:
    if dim == "label" and kind == "kto":
        return "desirable" if row["label"] else "undesirable"
    value = getattr(side.meta, dim)
    return NONE_KEY if value is None else str(value)


def tally_pairs(rows: PreferenceRows) -> tuple[Tally, ArtifactStats]:
    """The manifest's counts (per split; source/label/capability of the chosen side, or of the
    KTO row, with KTO's label as desirable/undesirable) and the card's statistics."""
    t = Tally()
    tokenised = any("prompt_input_ids" in r for items in rows.split_rows.values() for r in items[:1])
    stats = ArtifactStats(tokenised=tokenised)
    for split, items in rows.split_rows.items():
        stats.start_split(split)
        t.written[split] = len(items)
        lengths = []
        for row in items:
            side = rows.sides[row["id"]][0]
            chars = _completion_chars(rows.kind, row)
            tokens, sup_tokens = _token_counts(rows.kind, row)
            t.supervised_chars[split] += chars
            t.supervised_tokens[split] += sup_tokens
            stats.splits[split].add(1, chars, sup_tokens)
            lengths.append(tokens if tokenised else len(row["prompt_text"]) + chars)
            keys = {dim: _row_class(rows.kind, row, side, dim) for dim in DIMENSIONS}
            t.per_source[keys["source"]][split] += 1
            t.per_label[keys["label"]][split] += 1
            t.per_capability[keys["capability"]][split] += 1
            for dim in DIMENSIONS:
                per = stats.by.setdefault(dim, {}).setdefault(split, {})
                per.setdefault(keys[dim], StatTally()).add(1, chars, sup_tokens)
        stats.lengths[split].add(np.array(lengths, np.int64))
    return t, stats


def preference_report(rows: PreferenceRows, spec: PreferenceSpec, counts: Tally) -> dict[str, Any]:
    """The manifest's `preference` block."""
    sel = rows.selection
    classes: dict[str, dict[str, int]] | None = None
    if rows.kind == "kto":
        classes = defaultdict(dict)  # type: ignore[assignment]
        for split, items in rows.split_rows.items():
            n = Counter("desirable" if r["label"] else "undesirable" for r in items)
            for c in ("desirable", "undesirable"):
                classes[c][split] = n[c]  # type: ignore[index]
        classes = dict(classes)  # type: ignore[arg-type]
    return {
        "kind": rows.kind,
        "granularity": spec.granularity,
        "candidates": sel.candidates,
        "pairs": len(sel.pairs),
        "dropped": dict(sorted(sel.dropped.items())),
        "unpairable": len(sel.unpairable),
        "rows": dict(counts.written),
        "kto_classes": classes,
    }


def write_preference_splits(tmp: Path, loaded: LoadedSpec, rows: PreferenceRows) -> dict[str, str]:
    """Every split's shards, into the staged artifact `tmp`; {file: sha256}."""
    spec = loaded.spec
    files: dict[str, str] = {}
    for name, items in rows.split_rows.items():
        schema = SCHEMAS[rows.kind]
        if spec.tokenize is not None:
            schema = tokenized_schema(schema, rows.kind)
        names = art.write_split(tmp, name, items, len(items), tokenized=False, shard_rows=spec.output.shard_rows,
                                row_group_rows=spec.output.row_group_rows, schema=schema)
        for n in names:
            files[n] = sha256_file(tmp / n)
    return files


def write_preference_artifact(loaded: LoadedSpec, out: Path, ctx: Any, inputs: list[dict[str, Any]], read: NormalisedSources,
                      chosen: SelectedRows, progress: Progress,
                      before_place: Callable[[dict[str, Any]], None] | None, store: BuildCache) -> BuildResult:
    """A spec with `preference:`: pairs (or KTO rows) instead of rendered SFT rows
    (`engine.preference`); the rest of the artifact as for SFT."""
    spec = loaded.spec
    progress.start("pair")
    rows = pair_rows(loaded, ctx.template, chosen, ctx.tokenizer if spec.tokenize is not None else None)
    selection_report = chosen.report
    del chosen  # the pairs hold what is written: the selected rows go before the write
    counts, stats = tally_pairs(rows)
    quarantine = sorted(read.quarantine + rows.quarantine, key=lambda q: q.sort_key())
    check_bad_rows(spec, quarantine, read.rows_read, "in total")
    progress.done()
    progress.start("write artifact")
    with art.staged_directory(out) as tmp:
        files = write_preference_splits(tmp, loaded, rows)
        manifest = write_artifact_files(tmp, loaded, ctx, inputs, read, selection_report, counts, quarantine, files,
                                        stats, preference=preference_report(rows, spec.preference, counts))
        progress.done()
        if before_place is not None:
            before_place(manifest)
    return BuildResult(out_dir=out, manifest=manifest, quarantined=len(quarantine), written=dict(counts.written),
                       cache={name: SourceCacheReport("hit" if hit else "miss") for name, hit in
                              zip(read.names, read.cached)},
                       cache_dir=store.root if store.persistent else None)
