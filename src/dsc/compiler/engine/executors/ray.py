"""The Ray backend: stage tasks on Ray Data (`dsc build --executor ray`), on a local Ray or a
cluster (`--address auto|ray://host:port`). The only module that imports ray.

A map streams its tasks through Ray Data in windows of `WINDOW_TASKS_PER_WORKER × workers`
tasks: each window is one Ray Dataset, a pyarrow table with a row per task, `seq` (the task's
stable key: its position among the stage's tasks) and `task` (the task, pickled), mapped with
`map_batches(batch_format="pyarrow")` over `workers` Ray tasks of one CPU each. Two windows are
in flight at a time (the next one runs while the driver takes in the last one's results and reads
the rows of the one after), so the driver never holds more than about three windows of tasks and
results, whatever the size of the corpus: that is the backpressure. Each Ray worker
process rebuilds the BuildContext (spec, template, tokenizer, transforms) once per build, at its
first task, and keeps it for every later task and stage of that build: Ray keeps worker processes
between tasks, whereas an actor pool (a class-based callable) is started anew for every Dataset,
which cost ≈10 s a stage on 2 CPUs. Ray runs the tasks in whatever order it likes
(`preserve_order=False`); the driver puts the results back in `seq` order before it hands them
on, so segments, rendered parts and the artifact are what a local build writes.

What workers need to see: the spec's directory (they load the spec from the same path) and the
build cache directory (stage 3 reads segments there and writes its rendered parts there), so on
a real multi-node cluster both live on storage every node mounts at the same path.
"""
from __future__ import annotations

import importlib
import logging
import pickle
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from itertools import islice
from typing import Any

import pyarrow as pa
import ray
import ray.data

from dsc.compiler.engine.executors.base import ContextRecipe, Executor, set_worker_context
from dsc.core.errors import DscError

TASK_SCHEMA = pa.schema([("seq", pa.int64()), ("task", pa.large_binary())])
RESULT_SCHEMA = pa.schema([("seq", pa.int64()), ("ok", pa.bool_()), ("result", pa.large_binary())])

# Tasks per worker in one window: enough that a window's Dataset start-up (≈0.1 s) is small
# against its run, few enough that memory stays bounded (stage 1: 512 raw rows a task).
WINDOW_TASKS_PER_WORKER = 16

_LOADED: dict[ContextRecipe, Any] = {}  # in a Ray worker process: the build context of the current build


def _function_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def _resolve(name: str) -> Callable[..., Any]:
    module, qualname = name.split(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _run_stage(batch: pa.Table, recipe: ContextRecipe, fn_name: str) -> pa.Table:
    """A Ray task: the stage function over a batch of tasks, in this worker's build context."""
    if recipe not in _LOADED:
        _LOADED.clear()  # a worker serves one build at a time; an older build's context goes
        _LOADED[recipe] = recipe.load()
    set_worker_context(_LOADED[recipe])
    fn = _resolve(fn_name)
    seqs, oks, results = [], [], []
    for seq, task in zip(batch.column("seq").to_pylist(), batch.column("task").to_pylist()):
        try:
            out, ok = fn(pickle.loads(task)), True
        except DscError as e:  # a located spec or build error: the driver raises it as it is
            out, ok = e, False
        seqs.append(seq)
        oks.append(ok)
        results.append(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
    return pa.table([pa.array(seqs, pa.int64()), pa.array(oks, pa.bool_()), pa.array(results, pa.large_binary())],
                    schema=RESULT_SCHEMA)


class RayExecutor(Executor):
    """Stage tasks on `workers` Ray tasks at a time (one CPU each)."""

    parallel = True

    def __init__(self, recipe: ContextRecipe, workers: int, address: str | None):
        # A fresh build id: workers that served an earlier build in this Ray session reload.
        self.recipe = replace(recipe, build_id=uuid.uuid4().hex)
        self.workers = workers  # 0: the cluster's CPUs, known once connected
        self.address = address
        self._started = False

    def __enter__(self) -> "RayExecutor":
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # the build reports its own progress
        if not ray.is_initialized():
            if self.address is None:  # a local Ray of our own, with as many CPUs as workers
                # address="local": without it ray.init joins the cluster RAY_ADDRESS or an earlier
                # `ray start` on this machine names, and then refuses num_cpus (a traceback).
                ray.init(address="local", num_cpus=max(1, self.workers), include_dashboard=False,
                         log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
            self._started = True
        if self.workers <= 0:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        data = ray.data.DataContext.get_current()
        data.execution_options.preserve_order = False  # the driver orders by `seq`
        data.enable_progress_bars = False
        data.print_on_execution_start = False
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            ray.shutdown()
            self._started = False

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        fn_name = _function_name(fn)
        window = WINDOW_TASKS_PER_WORKER * max(1, self.workers)
        it = iter(tasks)
        # Two windows run at once (threads only wait on Ray; the work is in Ray's workers): the
        # next window's tasks are read and started before the running one's results are handed on.
        with ThreadPoolExecutor(2, thread_name_prefix="dsc-ray-window") as runner:
            running: list[Future[list[tuple[bool, bytes]]]] = []
            first_seq = 0
            while True:
                batch = list(islice(it, window))
                if batch:
                    running.append(runner.submit(self._run_window, fn_name, batch, first_seq))
                    first_seq += len(batch)
                if running and (not batch or len(running) == 2):
                    for ok, result in running.pop(0).result():
                        out = pickle.loads(result)
                        if not ok:
                            raise out
                        yield out
                if not batch and not running:
                    return

    def _run_window(self, fn_name: str, tasks: list[Any], first_seq: int) -> list[tuple[bool, bytes]]:
        """One window of tasks as one Ray Dataset; the results in task order."""
        blocks = [pa.table([pa.array([first_seq + i], pa.int64()),
                            pa.array([pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)], pa.large_binary())],
                           schema=TASK_SCHEMA) for i, t in enumerate(tasks)]
        ds = ray.data.from_arrow(blocks).map_batches(
            _run_stage, fn_kwargs={"recipe": self.recipe, "fn_name": fn_name}, batch_format="pyarrow",
            batch_size=1, compute=ray.data.TaskPoolStrategy(size=min(self.workers, len(blocks))), num_cpus=1)
        results: list[tuple[bool, bytes] | None] = [None] * len(tasks)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for seq, ok, result in zip(batch.column("seq").to_pylist(), batch.column("ok").to_pylist(),
                                       batch.column("result").to_pylist()):
                assert results[seq - first_seq] is None, "a task's result came back twice"
                results[seq - first_seq] = (ok, result)
        assert all(r is not None for r in results), "every task's result came back"
        return results  # type: ignore[return-value]
