"""The Ray backend: stage tasks on Ray Data actors (`dsc build --executor ray`), on a local Ray
or a cluster (`--address auto|ray://host:port`). The only module that imports ray.

Each map is one Ray Dataset: a pyarrow table with a row per task, `seq` (the task's stable key:
its position among the stage's tasks) and `task` (the task, pickled), mapped with
`map_batches(batch_format="pyarrow")` by a pool of `_StageActor`s, each of which rebuilds the
BuildContext (spec, template, tokenizer, transforms) once. Ray runs the tasks in whatever order
it likes (`preserve_order=False`); the driver puts the results back in `seq` order before it
hands them on, so segments, rendered parts and the artifact are what a local build writes.

What workers need to see: the spec's directory (they load the spec from the same path) and the
build cache directory (stage 3 reads segments there and writes its rendered parts there), so on
a real multi-node cluster both live on storage every node mounts at the same path.
"""
from __future__ import annotations

import importlib
import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa
import ray
import ray.data

from dsc.compiler.errors import DscError
from dsc.compiler.executors import ContextRecipe, Executor, set_worker_context

TASK_SCHEMA = pa.schema([("seq", pa.int64()), ("task", pa.large_binary())])
RESULT_SCHEMA = pa.schema([("seq", pa.int64()), ("ok", pa.bool_()), ("result", pa.large_binary())])


def _function_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def _resolve(name: str) -> Callable[..., Any]:
    module, qualname = name.split(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _StageActor:
    """A Ray Data actor: loads the build context once, then runs the stage on batches of tasks."""

    def __init__(self, recipe: ContextRecipe, fn_name: str):
        set_worker_context(recipe.load())
        self.fn = _resolve(fn_name)

    def __call__(self, batch: pa.Table) -> pa.Table:
        seqs, oks, results = [], [], []
        for seq, task in zip(batch.column("seq").to_pylist(), batch.column("task").to_pylist()):
            try:
                out, ok = self.fn(pickle.loads(task)), True
            except DscError as e:  # a located spec or build error: the driver raises it as it is
                out, ok = e, False
            seqs.append(seq)
            oks.append(ok)
            results.append(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
        return pa.table([pa.array(seqs, pa.int64()), pa.array(oks, pa.bool_()), pa.array(results, pa.large_binary())],
                        schema=RESULT_SCHEMA)


class RayExecutor(Executor):
    """Stage tasks on `workers` Ray Data actors (one CPU each)."""

    parallel = True

    def __init__(self, recipe: ContextRecipe, workers: int, address: str | None):
        self.recipe = recipe
        self.workers = max(1, workers)
        self.address = address
        self._started = False

    def __enter__(self) -> "RayExecutor":
        if not ray.is_initialized():
            if self.address is None:  # a local Ray with as many CPUs as workers
                ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", configure_logging=False)
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
            self._started = True
        data = ray.data.DataContext.get_current()
        data.execution_options.preserve_order = False  # the driver orders by `seq`
        data.enable_progress_bars = False  # the build reports its own progress
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
            _StageActor, fn_constructor_args=(self.recipe, _function_name(fn)), batch_format="pyarrow",
            batch_size=1, concurrency=min(self.workers, len(blocks)), num_cpus=1)
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
