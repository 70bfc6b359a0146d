"""The compiler driver: spec → sources → records → selection → render → artifact, as a recipe.

Stages, each over data on disk, never over a whole corpus in memory:

1. **read + normalise** (per source, in workers): `stages.read.normalise` — raw rows → normalised
   segments (rows and compact selection keys; `engine.rowfiles`).
2. **select** (this process): `stages.select.selected` — dedup, mix, capability ratios over the
   keys of all sources, then split by group hash and order by a seeded id hash.
3. **render + tokenise** (workers): `stages.render.rows` — the selected rows into rendered parts.
4. **write**: `stages.write` — the tally per split, the rows gathered in output order through a
   spill (`spill`), the shards, quarantine, manifest (`manifest`) and card.

Segments and rendered parts live in the build cache (`engine.cache`), so a rebuild reads,
renders and tokenises only what changed; with `cache=False` they live in a temporary directory.
Every per-row stage is a pure function of (row, spec, seed) and output order is a seeded hash of
each row's id, so the bytes never depend on the worker count, the cache, or the order of input
files.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsc.compiler.core.errors import BuildError
from dsc.compiler.engine.cache import BuildCache
from dsc.compiler.engine.context import build_context
from dsc.compiler.engine.executors import ContextRecipe, ExecutorChoice, open_executor
from dsc.compiler.engine.limits import check_bad_rows
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.resources import rare_cycle_collection, release_memory
from dsc.compiler.engine.result import BuildResult, SourceCacheReport
from dsc.compiler.engine.rowfiles import QuarantineEntry
from dsc.compiler.record import canonical_json
from dsc.compiler.spec.model import LoadedSpec, default_out_dir, load_spec
from dsc.compiler.stages.read.normalise import normalise_sources
from dsc.compiler.stages.read.sources import resolve_inputs
from dsc.compiler.stages.render.rows import render_selected
from dsc.compiler.stages.select.order import assign_split, order_key
from dsc.compiler.stages.select.selected import select_rows
from dsc.compiler.stages.write import artifact as art
from dsc.compiler.stages.write.manifest import build_manifest
from dsc.compiler.stages.write.spill import Layout, Spill, distribute, write_splits
from dsc.compiler.stages.write.tally import rendering_quarantine, tally


def build(spec_path: str | Path, out_dir: str | Path | None = None, *, workers: int = 1,
          executor: ExecutorChoice | None = None, progress: Progress | None = None,
          before_place: Callable[[dict[str, Any]], None] | None = None,
          cache: bool = True, cache_dir: str | Path | None = None) -> BuildResult:
    """Compile a spec into an artifact directory. Raises SpecError (exit 2) or BuildError (exit 1).

    `before_place(manifest)` runs when the new artifact is complete but not yet in place; if it
    raises, the previous artifact stays (`dsc build --locked` checks the version there).
    `cache`: reuse and keep normalised and rendered rows in `cache_dir` (default `$DSC_CACHE_DIR`,
    else ~/.cache/dsc); the artifact's bytes are the same either way.
    `executor`: where the per-row stages run (default: the local executor with `workers`); the
    artifact's bytes are the same on every backend."""
    loaded = load_spec(spec_path)
    return build_loaded(loaded, out_dir, workers=workers, executor=executor, progress=progress,
                        before_place=before_place, cache=cache, cache_dir=cache_dir)


def build_loaded(loaded: LoadedSpec, out_dir: str | Path | None = None, *, workers: int = 1,
                 executor: ExecutorChoice | None = None, progress: Progress | None = None,
                 before_place: Callable[[dict[str, Any]], None] | None = None,
                 cache: bool = True, cache_dir: str | Path | None = None) -> BuildResult:
    """`build` for a spec already loaded (`dsc.compiler.spec.model.load_spec`)."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(loaded)
    choice = executor if executor is not None else ExecutorChoice("local", workers)
    with art.output_lock(out), rare_cycle_collection():
        return _build_loaded(loaded, out, executor=choice, progress=progress or Progress(),
                             before_place=before_place, cache=cache, cache_dir=cache_dir)


def _build_loaded(loaded: LoadedSpec, out: Path, *, executor: ExecutorChoice, progress: Progress,
                  before_place: Callable[[dict[str, Any]], None] | None, cache: bool,
                  cache_dir: str | Path | None) -> BuildResult:
    spec = loaded.spec
    ctx = build_context(loaded)
    inputs = resolve_inputs(loaded)
    with BuildCache.open(cache, cache_dir) as store:
        with open_executor(executor, ctx, ContextRecipe(str(loaded.path))) as ex:
            read = normalise_sources(loaded, inputs, store, ex, progress, ctx)
            check_bad_rows(spec, read.quarantine, read.rows_read, "while reading")
            release_memory()
            chosen = select_rows(spec, read)
            release_memory()
            rendered = render_selected(spec, read, chosen, store, ex, progress, ctx)
        release_memory()
        cache_report = {name: SourceCacheReport("hit" if hit else "miss", r.reused, r.computed)
                        for name, hit, r in zip(read.names, read.cached, rendered)}
        counts, status = tally(spec, chosen, rendered)
        quarantine = read.quarantine + rendering_quarantine(spec, ctx.template, chosen, rendered, counts, status)
        del status
        check_bad_rows(spec, quarantine, read.rows_read, "in total")
        if not counts.written.get("train"):
            raise BuildError("the build produced no train rows (see quarantine reasons with --out and the summary)")
        quarantine.sort(key=QuarantineEntry.sort_key)

        progress.start("write artifact")
        tokenized = ctx.tokenizer is not None
        layout = Layout(counts.split_rows, spec.output.shard_rows, spec.output.row_group_rows)
        with art.staged_directory(out) as tmp, Spill(store.tmp, layout, tokenized, ctx.weighted) as spill:
            distribute(spill, layout, chosen, rendered)
            # Past this point only counts are needed: the keys and per-row arrays go.
            selection_report = chosen.selection.report
            del chosen, rendered
            counts.split_rows.clear()
            release_memory()
            files, stats = write_splits(tmp, spill, counts.written, spec, tokenized=tokenized, weighted=ctx.weighted)
            art.write_jsonl(tmp / art.QUARANTINE, (json.loads(q.line) for q in quarantine))
            (tmp / art.TEMPLATE_FILE).write_text(ctx.template.source, encoding="utf-8")
            fields = build_manifest(loaded, ctx, inputs, read, selection_report, counts, quarantine, files)
            manifest = art.write_manifest(tmp, fields).to_dict()  # versioned, checked against the Manifest model
            from dsc.compiler.stages.write.card import write_card  # matplotlib: loaded only to write a card

            write_card(tmp, manifest, stats)
            progress.done()
            if before_place is not None:
                before_place(manifest)
    return BuildResult(out_dir=out, manifest=manifest, quarantined=len(quarantine), written=dict(counts.written),
                       warnings=counts.special_token_warning(spec), cache=cache_report,
                       cache_dir=store.root if store.persistent else None,
                       tokenizer_paths=ctx.tokenizer.fast_paths() if ctx.tokenizer is not None else None)


__all__ = ["build", "build_loaded", "BuildResult", "Progress", "SourceCacheReport", "assign_split", "order_key",
           "canonical_json"]
