"""The local executor: stage tasks inline (one worker) or in a forked process pool on this
machine. Workers inherit the driver's BuildContext by fork, so nothing is loaded twice."""
from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa

from dsc.compiler.engine.executors.base import Executor, set_worker_context


class LocalExecutor(Executor):
    """Runs a per-row stage over tasks, inline or in a forked pool, preserving task order, with
    a bounded number of tasks in flight (results never pile up in memory)."""

    def __init__(self, ctx: Any, workers: int):
        self.ctx = ctx
        self.workers = max(1, workers)
        self.pool = None

    @property
    def parallel(self) -> bool:  # type: ignore[override]
        return self.pool is not None

    def __enter__(self) -> "LocalExecutor":
        set_worker_context(self.ctx)
        if self.workers > 1:
            _settle_lazy_imports()
            mp = multiprocessing.get_context("fork")
            self.pool = mp.Pool(self.workers, initializer=_start_worker, initargs=(self.ctx,))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        if self.pool is None:
            for t in tasks:
                yield fn(t)
            return
        pending: deque[Any] = deque()
        for t in tasks:
            pending.append(self.pool.apply_async(fn, (t,)))
            if len(pending) > 2 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _start_worker(ctx: Any) -> None:
    """A pool worker: the build's context, and Ctrl-C left to the driver. The terminal sends
    SIGINT to the whole process group; the driver stops the build ("interrupted; nothing was
    replaced") and terminates the pool, so a worker's own KeyboardInterrupt would only print its
    traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_worker_context(ctx)


def _settle_lazy_imports() -> None:
    """Do before forking what every worker would otherwise do on its own at its first Arrow
    array: pyarrow's first `pa.array` of a Python sequence imports pandas (≈0.4 s) to check
    whether it was handed a pandas object. Imported once here, the forked workers inherit it."""
    pa.array([0])
