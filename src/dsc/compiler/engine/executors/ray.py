"""The Ray backend: stage tasks as Ray Core tasks (`dsc build --executor ray`), on a local Ray
or a cluster (`--address auto|ray://host:port`). The only module that imports ray.

Every phase of the build is a list of small tasks (an input range, a range of a segment's rows,
a bucket of output rows, a shard) whose inputs and outputs are files in the build cache and the
staged artifact; a task returns counts and hashes. `map` keeps `IN_FLIGHT_PER_WORKER × workers`
tasks submitted and hands results back in task order, so the driver holds a bounded number of
tasks and results whatever the size of the corpus. Each Ray worker process rebuilds the
BuildContext (spec, template, tokenizer, transforms) once per build, at its first task, and keeps
it for every later task of that build (Ray keeps worker processes between tasks).

Ray retries a task whose worker died (`max_retries`); a task writes its files under temporary
names and renames them to names that depend only on the task, so a retried or duplicated task
leaves what one run leaves. Ray Data's sort, groupby, sampling and parquet writer are not used:
their output depends on block sizes and scheduling, and dsc decides every byte itself.

What workers need to see: the spec's directory (they load the spec from the same path), the
build cache directory and the artifact's parent directory, so on a real multi-node cluster these
live on storage every node mounts at the same path.
"""
from __future__ import annotations

import importlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import ray

from dsc.compiler.engine.executors.base import ContextRecipe, Executor, set_worker_context
from dsc.core.errors import DscError

# Tasks submitted per worker: enough that a worker never waits for the driver between tasks.
IN_FLIGHT_PER_WORKER = 2
# Attempts after a worker process dies (a node lost, a worker killed); a task that raises is not
# retried (its error is the build's).
MAX_RETRIES = 3

_LOADED: dict[ContextRecipe, Any] = {}  # in a Ray worker process: the build context of the current build


def _function_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def _resolve(name: str) -> Callable[..., Any]:
    module, qualname = name.split(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _run_task(recipe: ContextRecipe, fn_name: str, task: Any) -> tuple[bool, Any]:
    """A Ray task: the stage function over one task, in this worker's build context.
    (ok, result); a located spec or build error comes back as (False, error) for the driver to raise."""
    if recipe not in _LOADED:
        _LOADED.clear()  # a worker serves one build at a time; an older build's context goes
        _LOADED[recipe] = recipe.load()
    set_worker_context(_LOADED[recipe])
    try:
        return True, _resolve(fn_name)(task)
    except DscError as e:
        return False, e


class RayExecutor(Executor):
    """Stage tasks on Ray, `workers` CPUs' worth at a time."""

    parallel = True

    def __init__(self, recipe: ContextRecipe, workers: int, address: str | None):
        # A fresh build id: workers that served an earlier build in this Ray session reload.
        self.recipe = replace(recipe, build_id=uuid.uuid4().hex)
        self.workers = workers  # 0: the cluster's CPUs, known once connected
        self.address = address
        self._started = False

    def __enter__(self) -> "RayExecutor":
        if not ray.is_initialized():
            if self.address is None:  # a local Ray of our own, with as many CPUs as workers
                # address="local": without it ray.init joins the cluster RAY_ADDRESS or an earlier
                # `ray start` on this machine names, and then refuses num_cpus (a traceback).
                ray.init(address="local", num_cpus=max(1, self.workers), include_dashboard=False,
                         log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
            self._started = True
        logging.getLogger("ray").setLevel(logging.ERROR)  # the build reports its own progress
        if self.workers <= 0:
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            ray.shutdown()
            self._started = False

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        fn_name = _function_name(fn)
        recipe = ray.put(self.recipe)
        pending: deque[Any] = deque()
        try:
            for t in tasks:
                pending.append(_run_task.remote(recipe, fn_name, t))
                if len(pending) >= IN_FLIGHT_PER_WORKER * max(1, self.workers):
                    yield _result(ray.get(pending.popleft()))
            while pending:
                yield _result(ray.get(pending.popleft()))
        finally:
            for ref in pending:  # a failed or abandoned map: what is still queued need not run
                ray.cancel(ref)


def _result(out: tuple[bool, Any]) -> Any:
    ok, value = out
    if not ok:
        raise value
    return value
