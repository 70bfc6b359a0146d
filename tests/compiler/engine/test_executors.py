"""The executor interface (issue 13.1): the local backend keeps task order with any worker count,
and the CLI's --executor/--address are checked (exit 2, what is allowed), including a clear
message when Ray is not installed. Runs without Ray."""
from __future__ import annotations

import sys
import time

import pytest
from typer.testing import CliRunner

from artifact_helpers import make_project
from dsc.cli.root import app
from dsc.core.errors import SpecError
from dsc.compiler.engine.executors.base import ContextRecipe, ExecutorChoice, worker_context
from dsc.compiler.engine.executors.backends import open_executor
from dsc.compiler.engine.executors.local import LocalExecutor


def later_first(seq: int) -> tuple[int, str]:
    """Finishes the later tasks first; reads the worker's context as a stage does."""
    time.sleep(0.03 * (6 - seq))
    return seq, worker_context()


@pytest.mark.parametrize("workers", [1, 3])
def test_local_executor_keeps_task_order(workers):
    with LocalExecutor("ctx", workers) as ex:
        assert ex.parallel == (workers > 1)
        assert list(ex.map(later_first, range(7))) == [(i, "ctx") for i in range(7)]


def test_ray_missing_is_a_clear_usage_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    monkeypatch.delitem(sys.modules, "dsc.compiler.engine.executors.ray", raising=False)
    with pytest.raises(SpecError, match=r"pip install 'dsc\[ray\]'"):
        open_executor(ExecutorChoice("ray", 2), "ctx", ContextRecipe("spec.yaml"))
    spec = make_project(tmp_path, rows=5)
    result = CliRunner().invoke(app, ["build", str(spec), "--out", str(tmp_path / "out"), "--executor", "ray"])
    assert result.exit_code == 2, result.output
    assert "pip install 'dsc[ray]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--executor", "rey"], "allowed: local, ray (did you mean 'ray'?)"),
    (["--address", "auto"], "--address is for --executor ray"),
])
def test_bad_executor_options_exit_2(tmp_path, args, message):
    spec = make_project(tmp_path, rows=5)
    result = CliRunner().invoke(app, ["build", str(spec), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
