"""`dsc cache info` and `dsc cache prune`: the build cache's disk use.

Registered on the main app by `dsc.cli` (see `_register_optional_commands`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dsc.cli.options import cache_dir_option

cache_app = typer.Typer(help="The build cache: its size, and removing least recently used entries.",
                        no_args_is_help=True)


def _root(cache_dir: Optional[Path]) -> Path:
    from dsc.compiler.engine.cache import cache_root

    return cache_root(cache_dir)


@cache_app.command("info")
def info_command(cache_dir: Optional[Path] = cache_dir_option()) -> None:
    """Where the cache is, how many entries it holds, their size and the automatic cap."""
    from dsc.cli.root import out_console, run_guarded
    from dsc.compiler.engine.cache_upkeep import entries, human, max_cache_bytes, other_formats

    def body() -> None:
        root = _root(cache_dir)
        listed = entries(root)
        cap = max_cache_bytes()
        out_console.print(f"cache: {root}\nentries: {len(listed)}  size: {human(sum(e.size for e in listed))}  "
                          f"cap: {human(cap) if cap else 'none'} (DSC_CACHE_MAX_SIZE)", highlight=False,
                          soft_wrap=True)
        stale = other_formats(root)
        if stale:
            out_console.print(f"other cache formats (unused; `dsc cache prune` removes them): "
                              f"{', '.join(p.name for p in stale)}", highlight=False, soft_wrap=True)

    run_guarded(body)


@cache_app.command("prune")
def prune_command(
    max_size: Optional[str] = typer.Option(None, "--max-size", help="Remove least recently used entries until "
                                                                   "the cache is at most SIZE (e.g. 500M, 2G)."),
    older_than: Optional[float] = typer.Option(None, "--older-than", min=0, help="Remove entries not used for "
                                                                                  "DAYS days."),
    cache_dir: Optional[Path] = cache_dir_option(),
) -> None:
    """Remove cache entries (by last use); without options, down to the automatic cap."""
    from dsc.cli.root import out_console, run_guarded
    from dsc.compiler.engine.cache_upkeep import human, max_cache_bytes, parse_size, prune, remove_other_formats

    def body() -> None:
        root = _root(cache_dir)
        limit = parse_size(max_size) if max_size is not None else (max_cache_bytes() if older_than is None else None)
        formats, formats_freed = remove_other_formats(root)
        if formats:
            out_console.print(f"removed {formats} directories of other cache formats ({human(formats_freed)}), "
                              f"left by another dsc version", highlight=False, soft_wrap=True)
        report = prune(root, max_bytes=limit, older_than_days=older_than) if root.is_dir() else None
        if report is None:
            out_console.print(f"cache: {root} is empty", highlight=False, soft_wrap=True)
            return
        out_console.print(f"removed {report.removed} entries ({human(report.freed)}); {report.kept} left "
                          f"({human(report.size)}) in {root}", highlight=False, soft_wrap=True)

    run_guarded(body)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
