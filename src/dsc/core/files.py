"""The one way dsc lists the files under a directory: sorted by their path relative to it
(POSIX separators), so that whatever is computed over the list (a directory's hash, the cache's
code fingerprint, a file-by-file comparison) is the same on every machine and file system."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

def files_under(root: Path, *, hidden: bool = True, keep: Callable[[Path], bool] | None = None) -> list[Path]:
    """Every regular file below `root`, sorted by relative path. `hidden=False` leaves out
    anything below a dot-named part (`.gitattributes`, `.git/`); `keep` filters further."""
    out = []
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        if not hidden and any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if keep is not None and not keep(p):
            continue
        out.append(p)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())

