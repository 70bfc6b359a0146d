"""Reliability, kills: SIGKILLs at seeded random points of real rebuilds (every stage, the final
swap included) leave the previous artifact byte-identical and `dsc verify` ok, never poison the
build cache, and two builds into one output directory at once give one complete artifact.

A kill point is "the Nth call of a dsc function" in a forked child (no re-import per
kill, so 20 kills take seconds): the child counts calls with sys.setprofile and SIGKILLs itself
at call N, drawn with a seeded RNG over the whole rebuild. See docs/RELIABILITY.md."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dsc
from dsc.compiler.stages.write import artifact as art
from dsc.compiler.engine.driver import build
from dsc.ops.verify import verify

from test_build import make_spec, split_excerpt, tree_bytes

DSC_DIR = str(Path(dsc.__file__).resolve().parent)
KILLS = 20
SEED = 17
SWAP_FUNCTIONS = ("staged_directory", "_exchange")
WRITE_STAGES = ("route rows", "write shards")


def _calls_into_dsc(on_call) -> None:
    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(DSC_DIR):
            on_call(frame)

    sys.setprofile(profile)
    import threading

    threading.setprofile(profile)


def _in_child(fn) -> int:
    """Run fn in a forked child; its wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn()
        except BaseException:  # noqa: BLE001
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _count_calls(spec: Path, out: Path, cache: Path, record: Path) -> None:
    """Each call's function and the build stage it is in (the progress stage last started)."""
    calls: list[str] = []
    stage = ["load"]

    def on_call(frame) -> None:
        if frame.f_code.co_name == "start" and isinstance(frame.f_locals.get("stage"), str):
            stage[0] = frame.f_locals["stage"]
        calls.append(f"{frame.f_code.co_name}\t{stage[0]}")

    _calls_into_dsc(on_call)
    build(spec, out, cache_dir=cache)
    sys.setprofile(None)
    record.write_text("\n".join(calls))


def _killed_at(n: int, spec: Path, out: Path, cache: Path) -> None:
    count = [0]

    def on_call(_frame) -> None:
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    _calls_into_dsc(on_call)
    build(spec, out, cache_dir=cache)


@pytest.fixture(scope="module")
def rebuild_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kills")
    split_excerpt(tmp)
    out, cache = tmp / "out", tmp / "cache"
    old_spec = make_spec(tmp)
    build(old_spec, out, cache_dir=cache)
    new_spec = tmp / "new.yaml"
    # New tags: the sources are read, normalised and rendered again (cache misses), so the kills
    # land in every stage, not only in selection and writing.
    new_spec.write_text(old_spec.read_text().replace("method: react", "method: rebuilt"))
    expected_new = tmp / "expected-new"
    build(new_spec, expected_new, cache=False)
    record = tmp / "calls.txt"
    # Every rebuild (the counted one and each killed one) starts from a copy of this cache and
    # replaces a copy of this artifact, so call N is the same point in each.
    pristine_cache, old_artifact = tmp / "pristine-cache", tmp / "old-artifact"
    shutil.copytree(cache, pristine_cache)
    shutil.copytree(out, old_artifact)
    shutil.copytree(out, tmp / "counted")
    shutil.copytree(pristine_cache, tmp / "count-cache")
    assert _in_child(lambda: _count_calls(new_spec, tmp / "counted", tmp / "count-cache", record)) == 0
    calls = [line.split("\t") for line in record.read_text().splitlines()]
    return tmp, old_spec, new_spec, out, pristine_cache, old_artifact, expected_new, calls


def kill_points(calls: list[list[str]]) -> list[int]:
    """20 seeded call numbers: the swap's own calls, 4 while the staged artifact is written, 2 after
    the exchange, one in each of reading, selecting, rendering, tallying and writing shards, the rest
    uniform over the rebuild."""
    rng = random.Random(SEED)
    swap = [i + 1 for i, (name, _) in enumerate(calls) if name in SWAP_FUNCTIONS]
    staging = list(range(min(swap) + 1, max(swap)))  # writing the staged artifact (few dsc calls)
    last_calls = list(range(max(swap) + 1, len(calls) + 1))  # after the exchange, cleaning up
    chosen = (set(swap) | set(rng.sample(staging, min(4, len(staging))))
              | set(rng.sample(last_calls, min(2, len(last_calls)))))
    for stages in (("read + normalise",), ("select",), ("render + tokenise",), ("tally",), WRITE_STAGES):
        chosen.add(rng.choice([i + 1 for i, (_, stage) in enumerate(calls) if stage in stages]))
    while len(chosen) < KILLS:
        chosen.add(rng.randrange(1, len(calls) + 1))
    return sorted(chosen)


def _reset(src: Path, dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


def test_sigkills_anywhere_in_a_rebuild_keep_a_whole_artifact(rebuild_setup):
    tmp, old_spec, new_spec, out, pristine_cache, old_artifact, expected_new, calls = rebuild_setup
    old, new = tree_bytes(out), tree_bytes(expected_new)
    points = kill_points(calls)
    assert len(points) == KILLS and len(calls) > 1000
    outcomes: list[str] = []
    killed_caches: list[Path] = []
    for k, n in enumerate(points):
        cache = tmp / f"cache-{k}"
        _reset(pristine_cache, cache)
        status = _in_child(lambda n=n, cache=cache: _killed_at(n, new_spec, out, cache))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (n, status)
        now = tree_bytes(out)
        assert now in (old, new), f"kill at call {n} ({calls[n - 1]}) left a mixed artifact"
        outcomes.append("old" if now == old else "new")
        killed_caches.append(cache)
        if now == new:  # killed after the swap: put the old artifact back for the next kill
            _reset(old_artifact, out)
        if k in (0, KILLS // 2):  # `dsc verify` agrees (a cold rebuild compared file by file)
            assert verify(old_spec, out, cache=False).ok
    stages = sorted({calls[n - 1][1] for n in points})
    print(f"{KILLS} SIGKILLs at calls {points} of {len(calls)}; stages: {stages}; artifact after each: "
          f"{outcomes.count('old')} previous, {outcomes.count('new')} new")
    # Most kills land before the swap: the previous artifact is what is there, and verifies.
    assert outcomes.count("old") >= KILLS - 4, outcomes
    assert {name for name, _ in (calls[n - 1] for n in points)} >= set(SWAP_FUNCTIONS)
    assert {"read + normalise", "select", "render + tokenise", "tally"} <= set(stages) and set(WRITE_STAGES) & set(stages), stages
    # A killed build never poisons the cache: the caches left by kills in the reading and
    # rendering stages give the same artifact as a cold build. The next build also cleans the
    # killed builds' temporaries up.
    poisoned_candidates = [c for c, n in zip(killed_caches, points) if calls[n - 1][1] not in WRITE_STAGES]
    for cache in poisoned_candidates[::max(1, len(poisoned_candidates) // 3)][:3]:
        build(new_spec, out, cache_dir=cache)
        assert tree_bytes(out) == new, cache
        _reset(old_artifact, out)
    build(new_spec, out, cache_dir=killed_caches[-1])
    assert tree_bytes(out) == new
    assert not list(tmp.glob(".out.tmp-*")) and not list(tmp.glob(".out.old-*"))


def test_two_builds_into_one_directory_give_one_complete_artifact(tmp_path):
    split_excerpt(tmp_path)
    out, cache = tmp_path / "out", tmp_path / "cache"
    spec = make_spec(tmp_path)
    expected = tmp_path / "expected"
    build(spec, expected, cache=False)
    pids = []
    for i in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 0
            try:
                build(spec, out, cache_dir=cache)
            except BaseException as e:  # noqa: BLE001
                sys.stderr.write(f"concurrent build {i} failed: {type(e).__name__}: {e}\n")
                code = 3
            os._exit(code)
        pids.append(pid)
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    assert all(os.WIFEXITED(s) and os.WEXITSTATUS(s) == 0 for s in statuses), statuses
    assert tree_bytes(out) == tree_bytes(expected)
    assert not list(tmp_path.glob("*.lock"))  # the output lock lives with dsc's locks, not beside the artifact
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_the_output_lock_makes_a_second_build_wait(tmp_path):
    out = tmp_path / "out"
    # A separate process (not a fork: a forked child would share the held lock's file description).
    waiter = ("import sys; from pathlib import Path; from dsc.compiler.stages.write import artifact\n"
              "with artifact.output_lock(Path(sys.argv[1])): print('got it', flush=True)")
    with art.output_lock(out):
        proc = subprocess.Popen([sys.executable, "-c", waiter, str(out)], stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert proc.poll() is None  # still waiting while the lock is held
    stdout, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and stdout.strip() == "got it"


def test_forked_workers_do_not_keep_the_lock_alive(tmp_path):
    out = tmp_path / "out"
    with art.output_lock(out):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a "worker" that outlives its parent's build
            time.sleep(20)
            os._exit(0)
    try:
        waiter = ("import sys; from pathlib import Path; from dsc.compiler.stages.write import artifact\n"
                  "with artifact.output_lock(Path(sys.argv[1])): print('got it', flush=True)")
        proc = subprocess.run([sys.executable, "-c", waiter, str(out)], capture_output=True, text=True, timeout=10)
        assert proc.stdout.strip() == "got it"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


CTRL_C_CHILD = """
import sys, time
from dsc.compiler.engine import rendering
from dsc.cli.root import main

real = rendering.render_part

def slow_render_part(*args):  # a worker busy rendering when Ctrl-C comes
    print("rendering", flush=True)
    time.sleep(8)  # long enough for the signal to come first
    return real(*args)

rendering.render_part = slow_render_part
sys.argv = ["dsc", "build", sys.argv[1], "--out", sys.argv[2], "--workers", "2", "--no-cache"]
main()
"""


def test_ctrl_c_during_a_parallel_build_is_one_line_and_replaces_nothing(tmp_path):
    """The terminal sends SIGINT to the whole process group, pool workers included: the user sees
    the driver's one line, never a worker's traceback, and the previous artifact stays."""
    split_excerpt(tmp_path)
    spec = make_spec(tmp_path)
    out = tmp_path / "out"
    build(spec, out)
    before = tree_bytes(out)
    spec.write_text(spec.read_text().replace("seed: 7", "seed: 8"))
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, str(spec), str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env={**os.environ, "DSC_NO_PROGRESS": "1"})
    assert child.stdout.readline().strip() == "rendering"
    os.killpg(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted; nothing was replaced" in err and "Traceback" not in err, err
    assert tree_bytes(out) == before
