"""Command-line options that several commands share (one definition, one help text)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

MAX_DEFAULT_WORKERS = 8  # beyond this, reading and writing in the main process bound a build


def workers_option() -> Optional[int]:
    return typer.Option(None, "--workers", "-w", min=1,
                        help=f"Worker processes (default: the usable CPUs, at most {MAX_DEFAULT_WORKERS}; the "
                             "artifact is byte-identical for any number).")


def cache_dir_option() -> Optional[Path]:
    return typer.Option(None, "--cache-dir", help="The build cache (default: $DSC_CACHE_DIR, else ~/.cache/dsc).")


def resolve_workers(workers: Optional[int]) -> int:
    """The worker count a command runs with: the option's value, else one per usable CPU."""
    if workers is not None:
        return workers
    from dsc.compiler.engine.resources import cpu_count

    return max(1, min(MAX_DEFAULT_WORKERS, cpu_count()))
