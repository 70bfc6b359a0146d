"""The executor interface (`Executor`), the per-process `worker_context()` the stage functions
read, and the `--executor/--workers/--address` choice."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from dsc.core.errors import SpecError

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
        from dsc.compiler.engine.validation import load_spec

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
        from dsc.core.errors import did_you_mean

        raise SpecError(f"--executor {kind!r} is not a backend; allowed: {', '.join(EXECUTORS)}"
                        f"{did_you_mean(kind, EXECUTORS)}")
    if address is not None and kind != "ray":
        raise SpecError("--address is for --executor ray (the local executor runs on this machine)")
    return ExecutorChoice(kind, workers, address)  # type: ignore[arg-type]
