"""`dsc verify`, `dsc diff`, `dsc inspect`, `dsc plan`: working with versioned artifacts.

Registered on the main app by `dsc.cli` (see `_register_optional_commands`). Each command body
runs under `run_guarded`, so user errors are one message and an exit code, never a traceback.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

from dsc.cli.options import cache_dir_option, resolve_workers, workers_option


def _json_out(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")


def verify_command(
    spec: Path = typer.Argument(..., help="The spec YAML file."),
    artifact: Optional[Path] = typer.Argument(None, help="The committed artifact directory (default: the one "
                                                         "dsc.lock names, else build/<name> beside the spec)."),
    workers: Optional[int] = workers_option(),
    no_cache: bool = typer.Option(False, "--no-cache", metavar="", help="Rebuild from the inputs alone, not from the build "
                                                            "cache (a cold rebuild)."),
    cache_dir: Optional[Path] = cache_dir_option(),
) -> None:
    """Rebuild SPEC in a temporary directory; check ARTIFACT (and dsc.lock) match it exactly."""
    from dsc.cli.root import RichProgress, err_console, fail, out_console, run_guarded
    from dsc.ops.verify import verify as run_verify

    progress = RichProgress()

    def body() -> Any:
        try:
            return run_verify(spec, artifact, workers=resolve_workers(workers), cache=not no_cache,
                              cache_dir=cache_dir, progress=progress)
        finally:
            progress.close()

    report = run_guarded(body)
    if report.ok:
        out_console.print(report.summary(), highlight=False, soft_wrap=True)
        return
    for d in report.differences:
        err_console.print(f"  {d}", highlight=False, soft_wrap=True)
    fail(report.summary() + " (see above); rebuild with `dsc build` and commit the result", 1)


def diff_command(
    a: Path = typer.Argument(..., help="Artifact directory A (with --rev: the artifact path in git)."),
    b: Optional[Path] = typer.Argument(None, help="Artifact directory B."),
    rev: Optional[List[str]] = typer.Option(None, "--rev", help="A git revision of A; twice for two revisions "
                                                                "(once: against the working tree)."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Machine-readable output."),
    examples: int = typer.Option(3, "--examples", "-n", min=0, help="Changed rows shown side by side."),
) -> None:
    """What changed between two artifacts (or one at git revisions): rows, counts, supervised tokens.

    Rows added, removed and changed by id; count deltas per split, source, label and capability;
    supervised token (or character) deltas; and a few changed rows side by side."""
    from dsc.artifact.reader import open_artifact
    from dsc.cli.root import RichProgress, fail, out_console, run_guarded
    from dsc.ops.diff import diff_artifacts, example_pairs, render_diff, revision_artifacts

    progress = RichProgress()

    def body() -> None:
        if rev:
            if b is not None:
                fail("give either two artifact directories or one path with --rev, not both", 2)
            with revision_artifacts(a, list(rev)) as (pa, pb, la, lb):
                show(pa, pb, la, lb)
        else:
            if b is None:
                fail("give two artifact directories (A B), or one artifact path with --rev REV", 2)
            show(a, b, str(a), str(b))

    def show(pa: Path, pb: Path, la: str, lb: str) -> None:
        art_a, art_b = open_artifact(pa), open_artifact(pb)
        try:
            d = diff_artifacts(art_a, art_b, label_a=la, label_b=lb, progress=progress)
        finally:
            progress.close()
        if as_json:
            _json_out(d.to_dict())
            return
        render_diff(d, example_pairs(d, art_a, art_b, examples), out_console)

    run_guarded(body)


def inspect_command(
    artifact: Path = typer.Argument(..., help="The artifact directory."),
    split: Optional[str] = typer.Option(None, "--split", "-s", help="Split to show rows from (default: train)."),
    ids: Optional[List[str]] = typer.Option(None, "--id", help="Row id (or a unique prefix); repeatable."),
    n: int = typer.Option(3, "-n", min=0, help="Rows to show (when no --id is given)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer directory, when the one the "
                                                                       "manifest names is not reachable."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print the statistics as JSON (no rows)."),
) -> None:
    """Show what rows train on: supervised spans coloured, token by token when tokenised.

    Conditioning strings are highlighted; a statistics table follows the rows."""
    from dsc.artifact import inspection as ins
    from dsc.artifact.reader import open_artifact
    from dsc.cli.root import err_console, out_console, run_guarded
    from dsc.ops.tokens import find_tokenizer

    def body() -> None:
        art = open_artifact(artifact)
        stats = ins.artifact_stats(art)
        if as_json:
            _json_out({"name": art.name, "version": art.version,
                       **stats.to_dict(),
                       "lengths": {s: ins.length_summary(v) for s, v in stats.lengths.items()}})
            return
        rows = ins.find_rows(art, split=split, ids=ids or [], n=n)
        view, note = find_tokenizer(art.manifest, art.path, tokenizer)
        conditions = ins.conditioning_strings(art.manifest)
        err_console.print(f"[dim]{note}[/]", highlight=False)
        out_console.print(ins.legend(view, conditions, art.manifest.kind))
        for s, row in rows:
            out_console.print(ins.row_panel(s, row, view, conditions))
        out_console.print(ins.stats_table(art, stats))

    run_guarded(body)


def plan_command(
    spec: Path = typer.Argument(..., help="The spec YAML file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="The artifact a build would replace (default: "
                                                                 "build/<name> beside the spec)."),
    workers: Optional[int] = workers_option(),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Machine-readable output."),
    no_cache: bool = typer.Option(False, "--no-cache", metavar="", help="Neither reuse nor keep rows in the build cache."),
    cache_dir: Optional[Path] = cache_dir_option(),
) -> None:
    """Dry run: rows read, quarantined, filtered, generated, selected and split, per stage.

    Also the version a build would produce. Writes nothing (no artifact, no lock)."""
    from dsc.cli.root import RichProgress, out_console, run_guarded
    from dsc.ops.plan import plan as run_plan
    from dsc.ops.plan import render_plan

    progress = RichProgress()

    def body() -> Any:
        try:
            return run_plan(spec, out, workers=resolve_workers(workers), cache=not no_cache, cache_dir=cache_dir,
                            progress=progress)
        finally:
            progress.close()

    report = run_guarded(body)
    if as_json:
        _json_out(report.to_dict())
    else:
        render_plan(report, out_console)


def report_command(
    artifact: Path = typer.Argument(..., help="The artifact directory."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    sample: int = typer.Option(2000, "--sample", min=1, help="Rows in the page's row browser (a seeded sample, "
                                                             "shared evenly across sources)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the sample (default: the spec's seed)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer directory, when the one the "
                                                                       "manifest names is not reachable."),
) -> None:
    """Write one self-contained HTML page about ARTIFACT: mix, lengths, quarantine, a row browser.

    No network is needed to view it (CSS, script and SVG charts are inline); rows show what they
    train on (supervised spans, conditioning strings, token ids on hover when tokenised)."""
    from dsc.cli.root import out_console, run_guarded
    from dsc.ops.report import write_report

    path, data = run_guarded(lambda: write_report(artifact, out, sample=sample, seed=seed, tokenizer=tokenizer))
    size = path.stat().st_size
    out_console.print(f"report: {path} ({size / 1024:.0f} KiB; {len(data.rows)} of {data.total_rows} rows in the "
                      f"browser, {sum(n for _, n, _ in data.quarantine)} quarantined)", highlight=False,
                      soft_wrap=True)


def init_command(
    files: List[Path] = typer.Argument(..., help="Data files (jsonl, json, csv, parquet)."),
    out: Path = typer.Option(Path("spec.yaml"), "--out", "-o", help="The spec to write."),
    force: bool = typer.Option(False, "--force", metavar="", help="Overwrite --out if it exists."),
) -> None:
    """Write a first spec for FILES: formats, field names, labels and tool use sniffed from their rows.

    The spec builds as it is; the usual next steps (conditioning, negatives, mix) are in it,
    commented out."""
    from dsc.cli.root import out_console, run_guarded
    from dsc.ops.init import write_init

    path, sniffed = run_guarded(lambda: write_init(list(files), out, force=force))
    for s in sniffed:
        out_console.print(s.summary(), highlight=False, soft_wrap=True)
    out_console.print(f"spec: {path}  (next: dsc build {path})", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
    app.command("diff")(diff_command)
    app.command("inspect")(inspect_command)
    app.command("plan")(plan_command)
    app.command("report")(report_command)
    app.command("init")(init_command)
