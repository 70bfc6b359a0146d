"""The Ray backend gives the local executor's artifact, byte for byte (issue 13.3): on a local Ray
and on a simulated two-node cluster, for an untokenised spec, a tokenised one and one with a
lookup join, decontamination, negatives and a mix; and the build cache is shared across backends.

One Ray session per cluster kind (a module fixture, parametrised), so Ray starts twice per run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

if os.environ.get("CI") != "true":  # CI installs the `test` extra, which has ray: there it must run
    pytest.importorskip("ray")
import ray  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from artifact_helpers import EXCERPT, make_project, tokenize_block, tree_digest  # noqa: E402
from dsc.cli.root import app  # noqa: E402
from dsc.compiler.engine.driver import build  # noqa: E402
from dsc.core.errors import BuildError  # noqa: E402
from dsc.compiler.engine.executors.base import ContextRecipe, ExecutorChoice  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
# Ray workers import this module's task functions by name, and its helpers from tests/.
IMPORT_DIRS = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]
RAY = ExecutorChoice("ray", workers=2)


@dataclass
class RaySession:
    kind: str
    address: str | None  # the simulated cluster's, for a separate process to join


@pytest.fixture(scope="module", params=["local-ray", "two-node-cluster"])
def ray_session(request):
    """A Ray session the builds join (RayExecutor uses the running one). Workers see tests/ on
    their path, for the stage functions defined in this module."""
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join([*IMPORT_DIRS, os.environ.get("PYTHONPATH", "")])}}
    cluster = None
    if request.param == "local-ray":
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    else:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False, runtime_env=runtime_env)
        cluster.wait_for_nodes()
    try:
        yield RaySession(request.param, cluster.address if cluster is not None else None)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


@pytest.fixture(scope="module")
def tokenised_project(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    return make_project(tmp_path_factory.mktemp("tok"), rows=40, extra=tokenize_block(tiny_tokenizer_dir))


_LOCAL: dict[str, dict[str, str]] = {}


def local_reference(spec: Path, out_root: Path) -> dict[str, str]:
    """The local executor's artifact (1 and 2 workers agree; checked once per spec)."""
    if str(spec) not in _LOCAL:
        one = build(spec, out_root / "local-1", workers=1, cache=False)
        two = build(spec, out_root / "local-2", workers=2, cache=False)
        assert one.manifest["version"] == two.manifest["version"]
        digest = tree_digest(out_root / "local-1")
        assert digest == tree_digest(out_root / "local-2")
        _LOCAL[str(spec)] = digest
    return _LOCAL[str(spec)]


@pytest.mark.parametrize("spec_name", ["fireact-chat.yaml", "nat.yaml", "tokenised"])
def test_ray_artifact_is_the_local_one(ray_session, spec_name, tokenised_project, tmp_path_factory):
    spec = tokenised_project if spec_name == "tokenised" else REPO / "specs" / spec_name
    out = tmp_path_factory.mktemp(f"{spec_name}-{ray_session.kind}")
    expected = local_reference(spec, tmp_path_factory.mktemp(f"{spec_name}-local"))
    result = build(spec, out / "ray", executor=RAY, cache=False)
    assert tree_digest(out / "ray") == expected
    assert len(expected) > 3 and result.written["train"] > 0
    if spec_name == "tokenised":
        assert result.manifest["counts"]["supervised_tokens"]["train"] > 0


def test_cache_is_shared_across_backends(ray_session, tmp_path):
    """A local build fills the cache, a Ray build reuses all of it (and the other way round);
    the bytes never change."""
    if ray_session.kind != "local-ray":
        pytest.skip("the cache is the same directory on either cluster; once is enough")
    spec = REPO / "specs" / "nat.yaml"
    local = build(spec, tmp_path / "local", workers=1, cache_dir=tmp_path / "cache-a")
    on_ray = build(spec, tmp_path / "ray", executor=RAY, cache_dir=tmp_path / "cache-a")
    assert {c.normalised for c in on_ray.cache.values()} == {"hit"}
    assert sum(c.rendered_new for c in on_ray.cache.values()) == 0
    assert tree_digest(tmp_path / "ray") == tree_digest(tmp_path / "local")
    # Ray fills an empty cache; the local executor then reuses what Ray wrote.
    build(spec, tmp_path / "ray-b", executor=RAY, cache_dir=tmp_path / "cache-b")
    again = build(spec, tmp_path / "local-b", workers=2, cache_dir=tmp_path / "cache-b")
    assert {c.normalised for c in again.cache.values()} == {"hit"}
    assert sum(c.rendered_new for c in again.cache.values()) == 0
    assert sum(c.rendered_reused for c in again.cache.values()) > 0
    assert tree_digest(tmp_path / "local-b") == tree_digest(tmp_path / "local")
    assert local.manifest["version"] == on_ray.manifest["version"] == again.manifest["version"]


def test_cli_executor_ray(ray_session, tmp_path):
    """`dsc build --executor ray`: in this process (the session's Ray) on the local Ray; on the
    cluster, a separate `dsc` process that joins it with --address (and uses all its CPUs)."""
    shutil.copytree(REPO / "specs", tmp_path / "specs", ignore=shutil.ignore_patterns("build", "dsc.lock"))
    spec = tmp_path / "specs" / "fireact-chat.yaml"
    args = ["build", str(spec), "--out", str(tmp_path / "ray"), "--executor", "ray", "--no-cache"]
    if ray_session.address is None:
        result = CliRunner().invoke(app, [*args, "--workers", "2"])
        code, output = result.exit_code, result.output
    else:
        done = subprocess.run([sys.executable, "-m", "dsc", *args, "--address", ray_session.address],
                              capture_output=True, text=True, timeout=300)
        code, output = done.returncode, done.stdout + done.stderr
    assert code == 0, output
    local = build(spec, tmp_path / "local", workers=1, cache=False)
    assert f"version {local.manifest['version']}" in output
    assert tree_digest(tmp_path / "ray") == tree_digest(tmp_path / "local")



def test_hub_source_on_ray_is_the_local_artifact(ray_session, tmp_path, monkeypatch):
    """A hub source is read in the driver (streamed, like a file source) and shipped to the
    workers as raw rows, so the Ray build of a hub spec is the local one. The hub is offline here:
    `datasets.load_dataset` serves the excerpt's rows, and it must be called in this process only."""
    import json

    import datasets

    if ray_session.kind != "local-ray":
        pytest.skip("where the rows come from does not depend on the cluster's shape")
    rows = [json.loads(line) for line in EXCERPT.read_text().splitlines()[:30]]
    calls = []

    def served(path, name=None, *, revision=None, split=None, streaming=False, **_):
        calls.append((path, revision, split, streaming))
        return iter([dict(r) for r in rows])

    monkeypatch.setattr(datasets, "load_dataset", served)
    spec = tmp_path / "hub.yaml"
    spec.write_text("dsc: 1\nname: hub\nseed: 3\nsources:\n"
                    "  chat: {hub: {id: org/chat, revision: " + "b" * 40 + "}, format: openai}\n"
                    "template: chatml\nloss: assistant\nsplit: {validation: 0.2}\n")
    local = build(spec, tmp_path / "local", workers=1, cache=False)
    on_ray = build(spec, tmp_path / "ray", executor=RAY, cache=False)
    assert calls == [("org/chat", "b" * 40, "train", True)] * 2
    assert local.written["train"] + local.written.get("validation", 0) == 30
    assert tree_digest(tmp_path / "ray") == tree_digest(tmp_path / "local")
    assert on_ray.manifest["version"] == local.manifest["version"]

# Stage functions for the executor's own tests (module level: Ray actors import them by name).

def later_first(task: tuple[int, str]) -> int:
    """Task 0 waits until the last task (5) has finished, so its result surely arrives last."""
    seq, marker = task
    if seq == 5:
        Path(marker).touch()
    if seq == 0:
        deadline = time.monotonic() + 30
        while not Path(marker).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return seq * 10


def fails_on_three(seq: int) -> int:
    if seq == 3:
        raise BuildError("task 3 is bad")
    return seq


def test_results_come_back_in_task_order(ray_session, tmp_path):
    from dsc.compiler.engine.executors.ray import RayExecutor

    recipe = ContextRecipe(str(REPO / "specs" / "fireact-chat.yaml"))
    marker = str(tmp_path / "last-task-done")
    with RayExecutor(recipe, workers=2, address=None) as ex:
        assert list(ex.map(later_first, [(i, marker) for i in range(6)])) == [0, 10, 20, 30, 40, 50]
        with pytest.raises(BuildError, match="task 3 is bad"):
            list(ex.map(fails_on_three, range(6)))


def doubled(seq: int) -> int:
    return 2 * seq


def test_tasks_stream_in_bounded_windows(ray_session, tmp_path):
    """Many more tasks than a window: all come back in order, and the driver draws tasks from the
    stage's (lazy) task stream only about two windows ahead of what it has handed on, so its
    memory does not grow with the corpus."""
    from dsc.compiler.engine.executors.ray import WINDOW_TASKS_PER_WORKER, RayExecutor

    if ray_session.kind != "local-ray":
        pytest.skip("windowing is the driver's; once is enough")
    drawn = []

    def tasks():
        for i in range(5 * WINDOW_TASKS_PER_WORKER * 2 + 7):
            drawn.append(i)
            yield i

    recipe = ContextRecipe(str(REPO / "specs" / "fireact-chat.yaml"))
    with RayExecutor(recipe, workers=2, address=None) as ex:
        window = WINDOW_TASKS_PER_WORKER * ex.workers
        results = ex.map(doubled, tasks())
        assert next(results) == 0
        assert len(drawn) <= 2 * window
        assert [0, *results] == [2 * i for i in range(5 * window + 7)]


def test_without_address_a_local_ray_of_its_own(monkeypatch, tmp_path):
    """Without --address dsc starts a local Ray of its own (ray.init(address="local")): a bare
    ray.init() would join the cluster RAY_ADDRESS (or an earlier `ray start`) names, and then
    refuse num_cpus with a traceback (checked by hand with a live cluster: ValueError before,
    a separate local Ray after)."""
    from dsc.compiler.engine.executors.ray import RayExecutor

    calls: list = []
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    with RayExecutor(ContextRecipe(str(tmp_path / "spec.yaml")), workers=2, address=None) as ex:
        assert ex.workers == 2
    assert calls[0]["address"] == "local" and calls[0]["num_cpus"] == 2
    assert calls[-1] == "shutdown"
