"""How the build runs its per-row stages: one small interface, one module per backend.

The per-row stages (stage 1: read → normalise → transforms; stage 3: render → tokenise) are
module-level functions of one task each (a chunk of raw rows; a range of a segment's rows) that
read the build's `BuildContext` through `worker_context()`. An `Executor` maps such a function
over tasks and hands the results back **in task order**, whatever order its workers finish in,
so that the driver writes segments and rendered parts exactly as a serial run would. The global
steps (dedup, mix quotas, capability ratios, group caps, splits, output order) run in the driver
over per-row keys and exact counts (`dsc.compiler.stages.select.mix`), never over arrival order.

Backends: `local` (this machine: inline, or a forked process pool) and `ray` (Ray Data actors,
optional: `pip install dsc[ray]`). A new backend is a module here with an `Executor` subclass
and a branch in `open_executor`; nothing else in the build changes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from dsc.compiler.core.errors import SpecError

EXECUTORS = ("local", "ray")
ExecutorKind = Literal["local", "ray"]

_CONTEXT: Any = None  # the BuildContext of this process (the driver, a forked worker, a Ray actor)


def set_worker_context(ctx: Any) -> None:
    global _CONTEXT
    _CONTEXT = ctx


def worker_context() -> Any:
    """The BuildContext a stage function runs with (set by the executor before any task runs)."""
    assert _CONTEXT is not None, "a stage function ran outside an executor"
    return _CONTEXT


@dataclass(frozen=True)
class ContextRecipe:
    """How a worker that does not inherit the driver's memory (a Ray actor, perhaps on another
    machine) rebuilds the BuildContext: load the spec and build the context as the driver did.
    The spec's directory must be readable at the same path there."""

    spec_path: str
    build_id: str = ""  # tells one build's context from another's in a worker that serves several

    def load(self) -> Any:
        from dsc.compiler.engine.context import build_context
        from dsc.compiler.spec.model import load_spec

        return build_context(load_spec(self.spec_path))


@dataclass(frozen=True)
class ExecutorChoice:
    """Which backend a build runs its per-row stages on (`dsc build --executor/--address/--workers`)."""

    kind: ExecutorKind = "local"
    workers: int = 1  # tasks at once; ray only: 0 = every CPU of the cluster
    address: str | None = None  # ray only: `auto`, `ray://host:port`; None: start a local Ray


class Executor(ABC):
    """Maps a stage function over tasks; results come back in task order."""

    workers: int  # how many tasks run at once
    parallel: bool  # tasks run outside this process (the driver is free meanwhile)

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    @abstractmethod
    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        """fn(task) for every task, yielded in the order of `tasks`. `fn` is a module-level
        function (workers elsewhere find it by name) that reads `worker_context()`."""


def executor_choice(kind: str, workers: int, address: str | None) -> ExecutorChoice:
    """The `--executor/--workers/--address` options, checked (SpecError, exit 2: what is allowed)."""
    if kind not in EXECUTORS:
        from dsc.compiler.core.errors import did_you_mean

        raise SpecError(f"--executor {kind!r} is not a backend; allowed: {', '.join(EXECUTORS)}"
                        f"{did_you_mean(kind, EXECUTORS)}")
    if address is not None and kind != "ray":
        raise SpecError("--address is for --executor ray (the local executor runs on this machine)")
    return ExecutorChoice(kind, workers, address)  # type: ignore[arg-type]


RAY_MISSING = "--executor ray needs Ray Data, which is not installed: pip install 'dsc[ray]'"


def open_executor(choice: ExecutorChoice, ctx: Any, recipe: ContextRecipe) -> Executor:
    """The executor `choice` names, for a build whose driver holds `ctx`."""
    choice = executor_choice(choice.kind, choice.workers, choice.address)
    if choice.kind == "local":
        from dsc.compiler.engine.executors.local import LocalExecutor

        return LocalExecutor(ctx, choice.workers)
    if choice.kind == "ray":
        try:
            from dsc.compiler.engine.executors.ray import RayExecutor
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] != "ray":
                raise
            raise SpecError(RAY_MISSING) from None
        set_worker_context(ctx)  # the driver's own calls (e.g. reports) see the same context
        return RayExecutor(recipe, choice.workers, choice.address)
    raise AssertionError(choice.kind)


__all__ = ["EXECUTORS", "ContextRecipe", "Executor", "ExecutorChoice", "executor_choice", "open_executor", "set_worker_context",
           "worker_context"]
