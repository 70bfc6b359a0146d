"""Files and locks. The one way dsc lists the files under a directory: sorted by their path
relative to it (POSIX separators), so that whatever is computed over the list (a directory's hash,
the cache's code fingerprint, a file-by-file comparison) is the same on every machine and file
system. And the locks a build holds while it works (`held_lock`), which the kernel releases when
the process dies, so that a later build can tell a running build's files from a killed one's."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


# ---------------------------------------------------------------------------------------------
# Locks held while a process works: the kernel drops them when their holder dies
# ---------------------------------------------------------------------------------------------

_HELD_LOCKS: set[int] = set()  # descriptors of the locks this process holds


def _drop_inherited_locks() -> None:
    # A forked worker must not keep its parent's lock alive (if the parent is killed, the lock
    # goes with it, whatever the workers are doing).
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextmanager
def held_lock(path: Path) -> Iterator[Path]:
    """Hold an exclusive `flock` on `path` (created if missing), waiting for any other holder;
    released on exit, or by the kernel when this process dies (a SIGKILL included)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD_LOCKS.add(fd)
        yield path
    finally:
        _HELD_LOCKS.discard(fd)
        os.close(fd)  # closing the descriptor releases the lock


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock on `path` (False when the file is missing)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def state_dir() -> Path:
    """dsc's state on this machine (locks, the build index): `$DSC_STATE_DIR`, else
    `$XDG_STATE_HOME/dsc`, else ~/.local/state/dsc."""
    env = os.environ.get("DSC_STATE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state") / "dsc"


def lock_path(name: str) -> Path:
    """Where the lock named `name` lives: dsc's lock directory in its state directory, so that no
    lock file is left beside the files it guards (nor in a temporary directory a dry run cleans)."""
    d = state_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}.lock"
