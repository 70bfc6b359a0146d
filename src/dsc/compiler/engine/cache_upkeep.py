"""The build cache's disk use: what it holds (`dsc cache info`), and removing entries least
recently used first (`dsc cache prune`, and after every build down to `DEFAULT_MAX_CACHE_BYTES`).

An entry is one normalised segment (`normalised/<key>/`) or one segment's rendered parts
(`rendered/<key>/`). A build marks each entry it reads or writes as used (`touch`), so "last
used" is the mtime of the entry's directory. A removed entry only costs time: the next build
that needs it reads and renders those rows again, to the same bytes.
"""
from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from dsc.core.errors import DscError

DEFAULT_MAX_CACHE_BYTES = 20 << 30  # 20 GiB; DSC_CACHE_MAX_SIZE overrides ("500M", "2G", "0" = no cap)
# Entries used this recently are never removed by the automatic prune (a concurrent build may be
# writing them); `dsc cache prune` removes what it is asked to.
RECENT_SECONDS = 3600
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


class CacheSizeError(DscError):
    exit_code = 2


def parse_size(text: str) -> int:
    """'500M', '2G', '1.5GiB', '1024' → bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise CacheSizeError(f"not a size: {text!r} (use e.g. 500M, 2G, 1.5GiB or a number of bytes)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


@dataclass(frozen=True)
class Entry:
    path: Path
    size: int
    last_used: float  # seconds since the epoch


def touch(path: Path) -> None:
    """Mark a cache entry as used now (its directory's mtime)."""
    try:
        os.utime(path)
    except OSError:
        pass


def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def entries(root: Path) -> list[Entry]:
    """Every entry of the cache at `root` (the `v<format>` directory), least recently used first."""
    out = []
    for kind in ("normalised", "rendered"):
        d = root / kind
        if not d.is_dir():
            continue
        for p in d.iterdir():
            try:
                out.append(Entry(p, _tree_size(p), p.stat().st_mtime))
            except OSError:
                continue
    return sorted(out, key=lambda e: (e.last_used, str(e.path)))


@dataclass(frozen=True)
class PruneReport:
    removed: int
    freed: int
    kept: int
    size: int  # bytes left


def remove_dir(path: Path, tmp: Path) -> None:
    """Take a directory out of the cache at once (renamed into `tmp`), then delete it."""
    trash = tmp / f"trash-{uuid.uuid4().hex}"
    try:
        os.rename(path, trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


def prune(root: Path, *, max_bytes: int | None = None, older_than_days: float | None = None,
          spare_recent: bool = False) -> PruneReport:
    """Remove entries not used for `older_than_days`, then least recently used ones until the cache
    is at most `max_bytes`."""
    now = time.time()
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    listed = entries(root)
    total = sum(e.size for e in listed)
    removed = freed = 0
    kept = []
    for e in listed:
        recent = spare_recent and now - e.last_used < RECENT_SECONDS
        too_old = older_than_days is not None and now - e.last_used > older_than_days * 86400
        too_big = max_bytes is not None and total > max_bytes
        if not recent and (too_old or too_big):
            remove_dir(e.path, tmp)
            removed, freed, total = removed + 1, freed + e.size, total - e.size
        else:
            kept.append(e)
    return PruneReport(removed, freed, len(kept), total)


def other_formats(root: Path) -> list[Path]:
    """The entry directories of other cache formats beside `root` (`v1` when `root` is `v2`): left
    by an older (or newer) dsc, never read by this one."""
    base = root.parent
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir()
                  if p.is_dir() and p.name != root.name and re.fullmatch(r"v\d+", p.name))


def remove_other_formats(root: Path) -> tuple[int, int]:
    """Remove `other_formats(root)`: (directories removed, bytes freed)."""
    removed = freed = 0
    for d in other_formats(root):
        size = _tree_size(d)
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed, freed = removed + 1, freed + size
    return removed, freed


def max_cache_bytes() -> int | None:
    """The automatic cap: DSC_CACHE_MAX_SIZE, else DEFAULT_MAX_CACHE_BYTES; None for "0" (no cap)."""
    raw = os.environ.get("DSC_CACHE_MAX_SIZE")
    n = parse_size(raw) if raw else DEFAULT_MAX_CACHE_BYTES
    return n or None
