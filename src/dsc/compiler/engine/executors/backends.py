"""`open_executor`: the backend a build's `ExecutorChoice` names (each imported only when chosen)."""
from __future__ import annotations

from typing import Any

from dsc.compiler.engine.executors.base import (
    ContextRecipe,
    Executor,
    ExecutorChoice,
    executor_choice,
    set_worker_context,
)
from dsc.core.errors import SpecError

RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install 'dsc[ray]'"


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
