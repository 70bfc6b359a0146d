"""The Ray backend gives the local executor's artifact, byte for byte: every example spec and a
generated corpus cut into many input ranges, on a local Ray and on simulated clusters of 1, 2 and
3 worker nodes (a head with 0 CPUs, so every task runs on a worker node), including a build during
which a worker process is killed (Ray retries its task); and the build cache is shared across
backends.

One Ray session per cluster kind (a module fixture, parametrised), so Ray starts four times a run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

if os.environ.get("CI") != "true":  # CI installs the `test` extra, which has ray: there it must run
    pytest.importorskip("ray")
import ray  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from artifact_helpers import make_project, tokenize_block, tree_digest  # noqa: E402
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


CLUSTERS = ["local-ray", "nodes-1", "nodes-2", "nodes-3"]


@pytest.fixture(scope="module", params=CLUSTERS)
def ray_session(request):
    """A Ray session the builds join (RayExecutor uses the running one). Workers see tests/ on
    their path, for the stage functions and plugins defined there."""
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join([*IMPORT_DIRS, os.environ.get("PYTHONPATH", "")])}}
    cluster = None
    if request.param == "local-ray":
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    else:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(int(request.param.split("-")[1])):
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


EXAMPLES = sorted(p.name for p in (REPO / "specs").glob("*.yaml"))
RAY_ALL_CPUS = ExecutorChoice("ray", workers=0)  # every CPU of the cluster


@pytest.mark.parametrize("spec_name", [*EXAMPLES, "tokenised"])
def test_ray_artifact_is_the_local_one(ray_session, spec_name, tokenised_project, tmp_path_factory):
    spec = tokenised_project if spec_name == "tokenised" else REPO / "specs" / spec_name
    if ray_session.kind == "local-ray" and spec_name not in ("fireact-chat.yaml", "nat.yaml", "tokenised"):
        pytest.skip("every example runs on the simulated clusters; the local Ray checks three")
    out = tmp_path_factory.mktemp(f"{spec_name}-{ray_session.kind}")
    expected = local_reference(spec, tmp_path_factory.mktemp(f"{spec_name}-local"))
    result = build(spec, out / "ray", executor=RAY_ALL_CPUS, cache=False)
    assert tree_digest(out / "ray") == expected
    assert len(expected) > 3 and sum(result.written.values()) > 0
    if spec_name == "tokenised":
        assert result.manifest["counts"]["supervised_tokens"]["train"] > 0


@pytest.fixture(scope="module")
def corpus_project(tmp_path_factory) -> Iterator[Path]:
    """A generated corpus of 1,500 ReAct rows with 8 repeated tool catalogues."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from make_corpus import write_corpus
    finally:
        sys.path.remove(str(REPO / "bench"))
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root / "corpus.jsonl", 1500, seed=5, tool_schemas=8)
    (root / "crash_once.py").write_text(CRASH_PLUGIN)
    spec = root / "spec.yaml"
    spec.write_text("dsc: 1\nname: corpus\nseed: 11\nplugins: [crash_once.py]\n"
                    "sources:\n  gen: {path: corpus.jsonl, format: openai}\n"
                    f"filters: [{{crash_once: {root / 'crashed'}}}]\n"
                    "mix:\n  gen: {count: 1200}\ntemplate: chatml\nloss: assistant\n"
                    "split: {validation: 0.1}\noutput: {shard_rows: 400, row_group_rows: 100}\n")
    yield spec
    from dsc.spec.registries import FILTERS

    FILTERS.defs.pop("crash_once", None)  # the plugin registered in this process; other tests list the filters


# A filter that kills the worker process it runs in, once per build directory: the first time it
# sees row 700 it creates the marker and exits; the retried task finds the marker and goes on.
CRASH_PLUGIN = """
import os
from pathlib import Path

from dsc.plugins import FILTERS


@FILTERS.register("crash_once", str)
def crash_once(conv, marker):
    if conv.meta.provenance.row == 700 and not Path(marker).exists():
        Path(marker).touch()
        os._exit(1)
    return None
"""


def _small_ranges(monkeypatch) -> None:
    """Input ranges of ~64 KB (the driver plans them): the corpus is read as ~20 pieces."""
    from dsc.compiler.stages.read import ranges

    monkeypatch.setattr(ranges, "MIN_RANGE_BYTES", 64_000)
    monkeypatch.setattr(ranges, "MAX_RANGE_BYTES", 64_000)


def test_generated_corpus_and_a_killed_worker(ray_session, corpus_project, monkeypatch, tmp_path_factory):
    """The corpus in many ranges gives the local artifact (1 and 2 workers) on every cluster; on
    the simulated clusters a worker process dies in the middle of reading (Ray retries its task)."""
    _small_ranges(monkeypatch)
    marker = corpus_project.parent / "crashed"
    marker.touch()  # the local builds must not crash
    expected = local_reference(corpus_project, tmp_path_factory.mktemp("corpus-local"))
    killed = ray_session.kind != "local-ray"
    if killed:
        marker.unlink()
    out = tmp_path_factory.mktemp(f"corpus-{ray_session.kind}")
    build(corpus_project, out / "ray", executor=RAY_ALL_CPUS, cache=False)
    assert marker.exists()  # the filter ran; on a cluster it killed a worker first
    assert tree_digest(out / "ray") == expected
    assert sum(1 for name in expected if name.startswith("data/train-")) == 3


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
    if ray_session.kind in ("nodes-1", "nodes-3"):
        pytest.skip("joining a cluster with --address is checked on the local Ray and on two nodes")
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



# Stage functions for the executor's own tests (module level: Ray actors import them by name).

def later_first(task: tuple[int, str]) -> int:
    """Task 0 waits until task 3 (in flight with it: 2 per worker) has finished, so its result
    surely arrives after it."""
    seq, marker = task
    if seq == 3:
        Path(marker).touch()
    if seq == 0:
        deadline = time.monotonic() + 30
        while not Path(marker).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert Path(marker).exists(), "task 3 never ran while task 0 waited"
    return seq * 10


def fails_on_three(seq: int) -> int:
    if seq == 3:
        raise BuildError("task 3 is bad")
    return seq


def test_results_come_back_in_task_order(ray_session, tmp_path):
    from dsc.compiler.engine.executors.ray import RayExecutor

    if ray_session.kind in ("nodes-1", "nodes-3"):
        pytest.skip("task order is checked on the local Ray and on two nodes")
    recipe = ContextRecipe(str(REPO / "specs" / "fireact-chat.yaml"))
    marker = str(tmp_path / "task-3-done")
    with RayExecutor(recipe, workers=2, address=None) as ex:
        assert list(ex.map(later_first, [(i, marker) for i in range(6)])) == [0, 10, 20, 30, 40, 50]
        with pytest.raises(BuildError, match="task 3 is bad"):
            list(ex.map(fails_on_three, range(6)))


def doubled(seq: int) -> int:
    return 2 * seq


def test_tasks_in_flight_are_bounded(ray_session, tmp_path):
    """Many more tasks than workers: all come back in order, and the driver draws tasks from the
    phase's (lazy) task stream only a few per worker ahead of what it has handed on, so its
    memory does not grow with the number of tasks."""
    from dsc.compiler.engine.executors.ray import IN_FLIGHT_PER_WORKER, RayExecutor

    if ray_session.kind != "local-ray":
        pytest.skip("the bound is the driver's; once is enough")
    drawn = []

    def tasks():
        for i in range(50):
            drawn.append(i)
            yield i

    recipe = ContextRecipe(str(REPO / "specs" / "fireact-chat.yaml"))
    with RayExecutor(recipe, workers=2, address=None) as ex:
        results = ex.map(doubled, tasks())
        assert next(results) == 0
        assert len(drawn) <= IN_FLIGHT_PER_WORKER * ex.workers
        assert [0, *results] == [2 * i for i in range(50)]


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
