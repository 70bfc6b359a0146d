"""The Ray backend: stage tasks on Ray Data (`dsc build --executor ray`), on a local Ray or a
cluster (`--address auto|ray://host:port`). The only module that imports ray.

Each map is one Ray Dataset: a pyarrow table with a row per task, `seq` (the task's stable key:
its position among the stage's tasks) and `task` (the task, pickled), mapped with
`map_batches(batch_format="pyarrow")` over `workers` Ray tasks of one CPU each. Each Ray worker
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
from dataclasses import replace
from typing import Any

import pyarrow as pa
import ray
import ray.data

from dsc.compiler.errors import DscError
from dsc.compiler.executors import ContextRecipe, Executor, set_worker_context

TASK_SCHEMA = pa.schema([("seq", pa.int64()), ("task", pa.large_binary())])
RESULT_SCHEMA = pa.schema([("seq", pa.int64()), ("ok", pa.bool_()), ("result", pa.large_binary())])

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
        blocks = [pa.table([pa.array([seq], pa.int64()),
                            pa.array([pickle.dumps(t, protocol=pickle.HIGHEST_PROTOCOL)], pa.large_binary())],
                           schema=TASK_SCHEMA) for seq, t in enumerate(tasks)]
        if not blocks:
            return
        ds = ray.data.from_arrow(blocks).map_batches(
            _run_stage, fn_kwargs={"recipe": self.recipe, "fn_name": _function_name(fn)}, batch_format="pyarrow",
            batch_size=1, compute=ray.data.TaskPoolStrategy(size=min(self.workers, len(blocks))), num_cpus=1)
        waiting: dict[int, tuple[bool, bytes]] = {}  # results that came before an earlier task's
        next_seq = 0
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for seq, ok, result in zip(batch.column("seq").to_pylist(), batch.column("ok").to_pylist(),
                                       batch.column("result").to_pylist()):
                waiting[seq] = (ok, result)
            while next_seq in waiting:
                ok, result = waiting.pop(next_seq)
                out = pickle.loads(result)
                if not ok:
                    raise out
                yield out
                next_seq += 1
        assert next_seq == len(blocks) and not waiting, "every task's result came back once"
