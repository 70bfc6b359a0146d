"""The `dsc` command line (typer + rich).

Errors that users cause (a bad spec, bad data past the threshold, a missing model) are printed
as one message with the exit code of the `DscError` that carries them; never a traceback.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from dsc import __version__
from dsc.cli.options import cache_dir_option, resolve_workers, workers_option

app = typer.Typer(
    name="dsc",
    help="Compile declarative dataset specs into versioned, rendered, masked fine-tuning datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
out_console = Console()


def fail(message: str, code: int) -> None:
    from rich.markup import escape

    # escaped: messages quote commands and data (`dsc[ray]`, regexes) that are no Rich markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_guarded(fn: Callable[[], Any]) -> Any:
    """Run a command body, turning user-facing errors into a message and an exit code."""
    from dsc.core.errors import DscError

    try:
        return fn()
    except DscError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted; nothing was replaced", 130)


def _version_callback(value: bool) -> None:
    if value:
        out_console.print(f"dsc {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, metavar="",
                                 help="Print the dsc version and exit."),
) -> None:
    pass


class RichProgress:
    """A rich progress bar on stderr for the long commands' stages (build, plan, verify, diff, train,
    eval): done / total, elapsed, time left, and a note (a running loss or score). Silent when
    stderr is not a terminal or with DSC_NO_PROGRESS set."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.enabled = err_console.is_terminal and not os.environ.get("DSC_NO_PROGRESS")
        self._progress = Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[note]}"), console=err_console, transient=False)
        self._task = None

    def start(self, stage: str, total: int | None = None) -> None:
        if not self.enabled:
            return
        if self._task is None:
            self._progress.start()
        self._task = self._progress.add_task(stage, total=total, note="")

    def note(self, text: str) -> None:
        """A short running summary beside the bar (e.g. `loss 1.23 · 4100 tokens/s`)."""
        if self.enabled and self._task is not None:
            self._progress.update(self._task, note=text)

    def advance(self, n: int = 1) -> None:
        if self.enabled and self._task is not None:
            self._progress.advance(self._task, n)

    def done(self) -> None:
        if self.enabled and self._task is not None:
            task = self._progress.tasks[-1]
            self._progress.update(self._task, total=task.completed)

    def close(self) -> None:
        if self.enabled and self._task is not None:
            self._progress.stop()


def _summary_table(result: Any) -> Table:
    m = result.manifest
    counts = m["counts"]
    splits = sorted(counts["written"])
    table = Table(title=f"{m['name']}  version {m['version']}", title_justify="left")
    table.add_column("source")
    table.add_column("read", justify="right")
    for s in splits:
        table.add_column(s, justify="right")
    for name, n in counts["read"].items():
        per = counts["per_source"].get(name, {})
        table.add_row(name, str(n), *[str(per.get(s, 0)) for s in splits])
    table.add_row("[bold]total", str(sum(counts["read"].values())),
                  *[f"[bold]{counts['written'][s]}" for s in splits])
    sup = counts["supervised_tokens"] or counts["supervised_chars"]
    unit = "tokens" if counts["supervised_tokens"] else "chars"
    table.add_row(f"supervised {unit}", "", *[str(sup.get(s, 0)) for s in splits])
    return table


@app.command()
def build(
    spec: Path = typer.Argument(..., help="The spec YAML file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Artifact directory (default: build/<name> "
                                                                 "beside the spec)."),
    workers: Optional[int] = workers_option(),
    executor: str = typer.Option("local", "--executor", help="Where the build's tasks run: local (this machine's "
                                                             "processes) or ray (Ray; pip install 'dsc\\[ray]'). "
                                                             "The artifact is byte-identical on both."),
    address: Optional[str] = typer.Option(None, "--address", help="--executor ray: the cluster to join (auto, or "
                                                                  "ray://host:port; then --workers defaults to the "
                                                                  "cluster's CPUs); default: start a local Ray "
                                                                  "with --workers CPUs."),
    locked: bool = typer.Option(False, "--locked", metavar="", help="Fail (exit 1) if an input, the template, the tokenizer "
                                                        "or a version no longer matches dsc.lock."),
    no_cache: bool = typer.Option(False, "--no-cache", metavar="", help="Neither reuse nor keep normalised and rendered rows "
                                                            "in the build cache (the artifact is the same)."),
    cache_dir: Optional[Path] = cache_dir_option(),
    timings: bool = typer.Option(False, "--timings", metavar="", help="Print when each stage started, produced its first "
                                                          "rows and finished (seconds since dsc started) to stderr."),
) -> None:
    """Compile SPEC into a versioned artifact directory and pin its inputs in dsc.lock beside it."""
    from dsc.compiler.engine.timings import TimedProgress
    from dsc.ops.lock import build_with_lock

    progress: Any = RichProgress()
    if timings:
        progress = TimedProgress(progress)

    def body() -> Any:
        from dsc.compiler.engine.executors.base import executor_choice

        # Joining a cluster without --workers: as many tasks at once as the cluster has CPUs (0).
        n = workers if workers is not None else 0 if executor == "ray" and address else resolve_workers(None)
        choice = executor_choice(executor, n, address)
        try:
            return build_with_lock(spec, out, workers=choice.workers, executor=choice, progress=progress,
                                   locked=locked, cache=not no_cache, cache_dir=cache_dir)
        finally:
            progress.close()

    result = run_guarded(body)
    if timings:
        progress.mark("artifact in place")
        err_console.print(progress.report(), highlight=False, soft_wrap=True)
        if result.tokenizer_paths is not None:
            err_console.print(f"tokenizer: {result.tokenizer_paths}", highlight=False, soft_wrap=True)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    out_console.print(_summary_table(result))
    counts = result.manifest["counts"]
    out_console.print(f"quarantined {counts['quarantined']} rows ({counts.get('bad_rows', 0)} bad) → "
                      f"{result.out_dir / 'quarantine.jsonl'}", highlight=False, soft_wrap=True)
    from dsc.compiler.stages.write.card import row_accounting

    out_console.print(f"rows: {row_accounting(counts)}", highlight=False, soft_wrap=True)
    if result.cache_dir is not None:
        hits = sum(1 for c in result.cache.values() if c.normalised == "hit")
        reused = sum(c.rendered_reused for c in result.cache.values())
        rendered = reused + sum(c.rendered_new for c in result.cache.values())
        out_console.print(f"cache: {hits} of {len(result.cache)} sources and {reused} of {rendered} rendered rows "
                          f"reused ({result.cache_dir})", highlight=False, soft_wrap=True)
    out_console.print(f"artifact: {result.out_dir}  version {result.manifest['version']}", highlight=False,
                      soft_wrap=True)


@app.command()
def validate(spec: Path = typer.Argument(..., help="The spec YAML file.")) -> None:
    """Check SPEC (keys, types, files, template) without building."""
    from dsc.compiler.engine.validation import load_spec

    loaded = run_guarded(lambda: load_spec(spec))
    out_console.print(f"{spec}: ok ({len(loaded.spec.sources)} sources, template {loaded.spec.template})",
                      highlight=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of specs (for editor completion)."""
    from dsc.spec.model import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


def _register_optional_commands() -> None:
    """Command groups that live beside their own modules register themselves here."""
    import importlib

    for module in ("dsc.cli.runtime_commands", "dsc.cli.artifact_commands", "dsc.cli.cache_commands"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register(app)


_register_optional_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
