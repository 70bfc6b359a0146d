"""The build process's use of the machine: CPUs to use, memory handed back between stages, and
how often the cyclic garbage collector runs."""
from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

import pyarrow as pa


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def release_memory() -> None:
    """Hand memory freed by a finished stage back to the system (Arrow's pool and the C heap keep
    it otherwise), so that the next stage's peak does not stack on the last one's."""
    gc.collect()
    hand_back_freed()


def hand_back_freed() -> None:
    """What Arrow's pool and the C heap keep of memory already freed goes back to the system. Run
    after every task (a worker that met a huge row does not keep its size for the next task); no
    garbage collection here: a full collection walks the whole heap, which in a large process
    costs more than a small task."""
    import ctypes

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@contextlib.contextmanager
def rare_cycle_collection() -> Iterator[None]:
    """The build allocates millions of short-lived containers (rows, messages, token lists) that
    reference counting frees; at the default thresholds the cyclic collector would walk the
    growing heap again and again (≈6% of a build's time). Forked workers inherit the setting."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
