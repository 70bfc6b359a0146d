"""The compiler driver: spec → sources → records → selection → render → artifact, as a recipe.

Phases, each a set of tasks over data on disk, never over a whole corpus in memory; between them
rows move through files in the build's exchange directory (`engine.exchange`), and the driver
keeps counts:

1. **read + normalise** (per input range): `engine.normalise` — raw rows → normalised segments
   (rows and compact selection keys; `engine.rowfiles`), through the per-row steps of
   `stages.transforms.pipeline`.
2. **select**: `engine.selecting` — dedup, mix, capability ratios over partitions of the
   selection keys (`stages.select.mix`), then split by group hash and order by a seeded id hash
   in ranges of the output order; the driver resolves targets from counts. (A preference build
   selects in this process: `engine.selected.select_rows`.)
3. **render + tokenise** (per block of a segment's rows): `engine.rendering` — the selected
   rows into rendered parts, or found in the cache.
4. **tally** (per range of the output order): `engine.tally` — what rendering kept, the counts
   per split, the quarantine; each range's first output position.
5. **write**: `engine.spill` (route blocks put the rows into files sorted by output position,
   then a task per shard writes it), the manifest (`engine.manifest`) and the card.

Segments and rendered parts live in the build cache (`engine.cache`), so a rebuild reads,
renders and tokenises only what changed; with `cache=False` they live in a temporary directory.
Every per-row stage is a pure function of (row, spec, seed) and output order is a seeded hash of
each row's id, so the bytes never depend on the worker count, the cache, or the order of input
files.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from dsc.artifact.inspection import ArtifactStats
from dsc.compiler.engine import exchange
from dsc.compiler.engine.cache import BuildCache
from dsc.compiler.engine.context import build_context
from dsc.compiler.engine.executors.backends import open_executor
from dsc.compiler.engine.executors.base import ContextRecipe, Executor, ExecutorChoice
from dsc.compiler.engine.limits import check_bad_rows
from dsc.compiler.engine.manifest import write_artifact_files
from dsc.compiler.engine.normalise import normalise_sources
from dsc.compiler.engine.preference import write_preference_artifact
from dsc.compiler.engine.progress import Progress
from dsc.compiler.engine.rendering import render_blocks, render_selected
from dsc.compiler.engine.resources import rare_cycle_collection
from dsc.compiler.engine.result import BuildResult, SourceCacheReport
from dsc.compiler.engine.selected import select_rows
from dsc.compiler.engine.selecting import select_partitioned
from dsc.compiler.engine.spill import route_blocks, write_rows
from dsc.compiler.engine.tally import empty_source_warning, tally_rows
from dsc.compiler.engine.validation import load_spec
from dsc.compiler.stages.read.ranges import resolve_inputs
from dsc.compiler.stages.write import artifact as art
from dsc.core.builds import record_build
from dsc.spec.model import LoadedSpec, default_out_dir


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
    """`build` for a spec already loaded (`engine.validation.load_spec`)."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(loaded)
    choice = executor if executor is not None else ExecutorChoice("local", workers)
    with art.output_lock(out), rare_cycle_collection():
        result = _build_loaded(loaded, out, executor=choice, progress=progress or Progress(),
                               before_place=before_place, cache=cache, cache_dir=cache_dir)
    record_build(result.manifest["version"], loaded.path)  # where `dsc eval` finds the spec's eval paths
    return result


def _build_loaded(loaded: LoadedSpec, out: Path, *, executor: ExecutorChoice, progress: Progress,
                  before_place: Callable[[dict[str, Any]], None] | None, cache: bool,
                  cache_dir: str | Path | None) -> BuildResult:
    spec = loaded.spec
    ctx = build_context(loaded)
    with BuildCache.open(cache, cache_dir) as store:
        with open_executor(executor, ctx, ContextRecipe(str(loaded.path))) as ex:
            inputs = resolve_inputs(loaded, workers=ex.workers, map_fn=_counted_map(ex, progress, "scan inputs"))
            read = normalise_sources(loaded, inputs, store, ex, progress, ctx)
            check_bad_rows(spec, read.quarantine, read.rows_read, "while reading")
            if spec.preference is not None:
                return write_preference_artifact(loaded, out, ctx, inputs.entries, read, select_rows(spec, read), progress,
                                                 before_place, store)
            with exchange.directory(store.tmp) as directory:
                chosen = select_partitioned(spec, read, directory, ex, progress,
                                            lambda selected: render_blocks(read.segments, ex.workers, selected))
                rendered = render_selected(spec, read, chosen, store, ex, progress, ctx)
                cache_report = {name: SourceCacheReport("hit" if hit else "miss", reused, computed)
                                for name, hit, reused, computed in zip(read.names, read.cached, rendered.reused,
                                                                        rendered.computed)}
                blocks = route_blocks(read.segments, chosen.per_source)
                tallied = tally_rows(spec, read, chosen, rendered, blocks, ex, progress)
                counts, quarantine = tallied.counts, tallied.quarantine

                with art.staged_directory(out) as tmp:
                    files, stats = write_rows(tmp, spec, ctx, read.segments, rendered.parts_dirs, tallied, blocks,
                                              directory, ex, progress)
                    progress.start("write manifest and card")
                    manifest = write_artifact_files(tmp, loaded, ctx, inputs.entries, read, chosen.report, counts,
                                                    quarantine, files, stats)
                    progress.done()
                    if before_place is not None:
                        before_place(manifest)
    return BuildResult(out_dir=out, manifest=manifest, quarantined=len(quarantine), written=dict(counts.written),
                       warnings=[*counts.special_token_warning(spec), *empty_source_warning(read), *_shared_group_warning(stats)],
                       cache=cache_report,
                       cache_dir=store.root if store.persistent else None,
                       tokenizer_paths=ctx.tokenizer.fast_paths() if ctx.tokenizer is not None else None)


def _counted_map(ex: Executor, progress: Progress, stage: str) -> Callable[[Callable[[Any], Any], Iterable[Any]],
                                                                           Iterator[Any]]:
    """`ex.map` reporting its tasks as a progress stage."""
    def run(fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        tasks = list(tasks)
        progress.start(stage, len(tasks))
        for done in ex.map(fn, tasks):
            progress.advance()
            yield done
        progress.done()
    return run


def _shared_group_warning(stats: ArtifactStats) -> list[str]:
    shared = stats.shared_groups()
    if not shared:
        return []
    return [f"{len(shared)} groups have rows in two splits (a question trained on and validated on): "
            f"{', '.join(shared[:3])}{' …' if len(shared) > 3 else ''}; split by group, or give `group:` a field "
            "that names the question (the card lists them)"]
