"""Benchmark: the two build backends (`--executor local` and `--executor ray`) on one machine,
per-stage timings, peak memory per worker, and a scaling estimate for N workers.

    python bench/executors.py                                   # the default bench (≈ 10 minutes on 2 cores)
    python bench/executors.py --n-plain 2000 --n-tool 600 --repeats 1 --scale 2   # a quick look

For each corpus (plain ReAct, `--n-plain` rows; tool schemas, `--n-tool` rows with
`--tool-schemas K`), built from `bench/make_corpus.py` with the `bench/make_tokenizer.py` tokenizer
and `_common.write_spec`'s spec (the corpora `run.py` uses, cached in `--work-dir`):

- at 1× rows, `--repeats` rounds of `local --workers 1`, `local --workers 2`, `ray --workers 2`
  (interleaved, so drifting load hits all alike); at `--scale`× rows one round of the same three;
- every run is its own process (`executors.py child`, which calls `build_loaded` as `dsc build`
  does), with a fresh build cache (a cold build); `--executor ray` starts a local Ray in that
  process (`ray.init(num_cpus=workers)`, as `dsc build --executor ray` does), and the time of
  `ray.init` and `ray.shutdown` is reported apart from the build's stages;
- every run's artifact (every file, sha256) must equal the `local --workers 1` artifact of the same
  corpus and size: the byte-identity claim, checked on every run;
- per-stage wall time from the build's own progress events (`compiler/timings.TimedProgress`, the
  events `dsc build --timings` prints); the per-row tasks' own seconds, timed at the executor
  (`Executor.map`) where they run inline (`--workers 1`): the parallel part; the rest is serial,
  split by driver-side timers (reading input lines into tasks, writing segments, the global
  select, gathering output rows, writing the parquet shards, hashes, the card);
- peak RSS of every process of the build (psutil, every 0.1 s): the driver, each local pool worker,
  each Ray worker (`ray::…` processes started by the raylet) and Ray's own services (gcs, raylet,
  dashboard, agents), at 1× and `--scale`× rows: memory per worker should not grow with rows;
- one untimed `local --workers 1` run per corpus with byte accounting (`--account`): what the
  driver sends and receives per task (pickled), the per-row selection keys it holds, the files
  it reads back to write the shards;
- a scaling estimate from the `--workers 1` timings: T(N) = serial + parallel / N, the bound
  total / serial, and the same with Ray's overheads fitted over the two sizes (start, stop, a
  fixed part per build, a part per task); see `decompose()`, `fit_overheads()`, `project()`.

Results: JSON (`--json`, default `bench/results/executors-<params>.json`) and a markdown summary
on stdout. Run it under the shared CPU lock: `flock /work/cpu.lock nice -n 5 python bench/executors.py`.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PY = sys.executable
sys.path.insert(0, str(BENCH))

from _common import emit, parse_result, set_offline  # noqa: E402

CONFIGS = (("local", 1), ("local", 2), ("ray", 2))  # (executor, workers); the first is the reference
REFERENCE = CONFIGS[0]


def config_name(kind: str, workers: int) -> str:
    return f"{kind} --workers {workers}"


# ---------------------------------------------------------------------------------------------
# the child: one build, in this process, with timers on the driver's serial steps
# ---------------------------------------------------------------------------------------------

# Driver-side steps, timed in the driver only (a function a forked worker runs would be timed in
# that worker, whose totals are not collected): (name, module[:Class], attribute, kind) as in
# profile_build.STAGES, wrapped where the driver looks the name up.
# These only split the serial part; the parallel part is timed at the executor (TaskStats).
DRIVER_STEPS: list[tuple[str, str, str, str]] = [
    ("setup: template, tokenizer, transforms", "dsc.compiler.engine.driver", "build_context", "fn"),
    ("setup: scan inputs (hash, JSONL cuts)", "dsc.compiler.engine.driver", "resolve_inputs", "fn"),
    ("read: plan input ranges", "dsc.compiler.engine.normalise", "plan_ranges", "fn"),
    ("select: plan", "dsc.compiler.engine.selecting", "make_plan", "fn"),
    ("render: list the cached parts", "dsc.compiler.engine.cache:RenderedStore", "parts", "method"),
    ("write: lay out the shards", "dsc.compiler.engine.spill:Layout", "__init__", "method"),
    ("write: manifest, card, quarantine", "dsc.compiler.engine.driver", "write_artifact_files", "fn"),
    ("release memory", "dsc.compiler.engine.resources", "release_memory", "fn"),
]
SELECT_STEP = ("select", "dsc.compiler.engine.driver", "select_partitioned", "fn")  # wrapped for the accounting


@dataclass
class TaskStats:
    """What one stage's executor.map calls moved: tasks, and (with --account) pickled bytes each way."""
    stage: str = ""  # the build stage (progress stage) whose tasks these are (MAPPED)
    tasks: int = 0
    rows_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    wall_s: float = 0.0  # from the map's start to its last result back
    task_s: float = 0.0  # the tasks' own seconds, where they run inline (local --workers 1); else 0
    task_cpu_s: float = 0.0  # their CPU seconds (every thread of the process: the tokenizer's too)


def _sized(x: Any) -> int:
    return len(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL))


def _executor_class(kind: str) -> type:
    if kind == "ray":
        from dsc.compiler.engine.executors.ray import RayExecutor

        return RayExecutor
    from dsc.compiler.engine.executors.local import LocalExecutor

    return LocalExecutor


def _install_map_counters(stats: dict[str, TaskStats], account: bool, kind: str) -> None:
    from dsc.compiler.engine.executors.base import Executor

    def wrap(cls: type[Executor]) -> None:
        original = cls.map

        def counted_map(self: Any, fn: Any, tasks: Any) -> Any:
            s = stats.setdefault(fn.__name__, TaskStats(stage=MAPPED[fn.__name__]))

            def counted(ts: Any) -> Any:
                for t in ts:
                    s.tasks += 1
                    s.rows_in += len(t) if isinstance(t, list) else 0  # a render block's: from its result
                    if account:
                        s.bytes_in += _sized(t)
                    yield t

            def timed(task: Any) -> Any:
                t, c = time.perf_counter(), time.process_time()
                try:
                    return fn(task)
                finally:
                    s.task_s += time.perf_counter() - t
                    s.task_cpu_s += time.process_time() - c

            # Inline (nothing pickled, no worker finds fn by name) the tasks themselves are timed:
            # with --workers 1 their sum is the work that more workers could share.
            run_fn = fn if self.parallel else timed
            t0, base = time.perf_counter(), s.wall_s
            for out in original(self, run_fn, counted(tasks)):
                # Set at every result: the consumer may stop asking once it has them all (zip).
                s.wall_s = base + time.perf_counter() - t0
                if isinstance(getattr(out, "rows", None), int):  # a render block's selected rows
                    s.rows_in += out.rows
                if account:
                    s.bytes_out += _sized(out)
                yield out

        cls.map = counted_map  # type: ignore[method-assign]

    wrap(_executor_class(kind))


def _time_executor_lifecycle(seconds: dict[str, float], kind: str) -> None:
    """Executor start and stop (a pool's fork; `ray.init` / `ray.shutdown`), apart from the stages."""
    for cls in (_executor_class(kind),):
        enter, exit_ = cls.__enter__, cls.__exit__

        def timed_enter(self: Any, _enter: Any = enter, _kind: str = kind) -> Any:
            t = time.perf_counter()
            try:
                return _enter(self)
            finally:
                seconds[f"executor start ({_kind})"] = seconds.get(f"executor start ({_kind})", 0.0) + time.perf_counter() - t

        def timed_exit(self: Any, *exc: Any, _exit: Any = exit_, _kind: str = kind) -> Any:
            t = time.perf_counter()
            try:
                return _exit(self, *exc)
            finally:
                seconds[f"executor stop ({_kind})"] = seconds.get(f"executor stop ({_kind})", 0.0) + time.perf_counter() - t

        cls.__enter__, cls.__exit__ = timed_enter, timed_exit  # type: ignore[method-assign]


class _Silent:
    """A build progress that shows nothing (TimedProgress records the events)."""

    def start(self, stage: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def done(self) -> None: ...


def _key_bytes(chosen: Any) -> dict[str, int]:
    """Bytes the driver holds for the selected rows once selection is done: the render blocks'
    batch lists (the rows themselves stay in the exchange files)."""
    return {"rows": chosen.rows, "batch lists after selection": len(pickle.dumps(chosen.to_render))}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def run_child(a: argparse.Namespace) -> None:
    from dsc.compiler.engine.timings import process_age

    started = process_age()  # interpreter start to here: imports of this script
    set_offline()
    import profile_build  # the bench's stage-timer machinery (per-call wall/CPU accumulators)

    from dsc.compiler.engine.driver import build_loaded
    from dsc.compiler.engine.executors.base import ExecutorChoice
    from dsc.compiler.engine.timings import TimedProgress
    from dsc.compiler.engine.validation import load_spec

    imported = process_age()
    missing = []
    for name, module, attr, kind in DRIVER_STEPS:
        found = profile_build._resolve(module, attr)
        if found is None:
            missing.append(f"{name} ({module}.{attr})")
            continue
        owner, attr_name = found
        setattr(owner, attr_name, profile_build._timed(name, getattr(owner, attr_name), kind))
    lifecycle: dict[str, float] = {}
    if a.executor == "ray":  # a local build never imports ray; a Ray build pays for it in its start-up
        t = time.perf_counter()
        importlib.import_module("dsc.compiler.engine.executors.ray")

        lifecycle["executor start (import ray)"] = time.perf_counter() - t
    _time_executor_lifecycle(lifecycle, a.executor)
    maps: dict[str, TaskStats] = {}
    _install_map_counters(maps, a.account, a.executor)
    keys: dict[str, int] = {}
    if a.account:
        found = profile_build._resolve(SELECT_STEP[1], SELECT_STEP[2])
        if found is None:
            missing.append("the select step, for the key accounting")
        else:
            owner, attr_name = found
            choose = getattr(owner, attr_name)

            def accounted_choose(*args: Any, **kw: Any) -> Any:
                chosen = choose(*args, **kw)
                keys.update(_key_bytes(chosen))
                return chosen

            setattr(owner, attr_name, accounted_choose)

    progress = TimedProgress(_Silent())
    progress.mark("build: started")
    res = build_loaded(load_spec(a.spec), a.out, executor=ExecutorChoice(a.executor, a.workers), progress=progress,
                       cache=True, cache_dir=a.cache_dir)
    progress.mark("build: done")
    result: dict[str, Any] = {
        "started_s": started, "imported_s": imported, "events": progress.events,
        "driver_s": dict(profile_build.TIMERS.seconds), "driver_cpu_s": dict(profile_build.TIMERS.cpu),
        "driver_calls": dict(profile_build.TIMERS.calls), "lifecycle_s": lifecycle,
        "maps": {k: asdict(v) for k, v in maps.items()}, "missing": missing,
        "version": res.manifest["version"], "written": res.written,
        "driver_cpu_total_s": time.process_time(),
    }
    if a.account:
        cache = Path(a.cache_dir)
        result["keys_bytes"] = keys
        result["cache_bytes"] = {d.name: _dir_bytes(d) for d in sorted(cache.glob("*/*")) if d.is_dir()}
        result["artifact_bytes"] = _dir_bytes(Path(a.out))
        result["input_bytes"] = (Path(a.spec).parent / "corpus.jsonl").stat().st_size
    emit(result)


# ---------------------------------------------------------------------------------------------
# the parent: corpora, runs, memory sampling, identity checks, the report
# ---------------------------------------------------------------------------------------------

def _role(pid: int, cmd: list[str], driver_pid: int, driver_cmd: list[str]) -> str:
    """What a process of the build is: the driver, a local pool worker (forked: the driver's
    command line), a Ray worker (`ray::IDLE`, `ray::MapBatches(...)`: Ray renames its workers once
    they start, so this is decided on the last command line seen), or one of Ray's services."""
    if pid == driver_pid:
        return "driver"
    if cmd == driver_cmd:
        return "local worker"
    head = cmd[0] if cmd else ""
    if head.startswith("ray::"):  # agents and Ray Data's own actors (`ray::_StatsActor`) serve no task
        return "ray service" if head.endswith("Agent") or head.startswith("ray::_") else "ray worker"
    joined = " ".join(cmd)
    if "/ray/" in joined or "ray." in joined:
        return "ray service"
    return "other"


class ProcessSampler(threading.Thread):
    """Peak RSS of every process in a tree (psutil, every `interval` s), with each process's role."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(pid)
        self.cmd = self.root.cmdline()
        self.interval = interval
        self.peak: dict[int, int] = {}
        self.cmdlines: dict[int, list[str]] = {}  # the last one seen
        self.cpu: dict[int, float] = {}  # user + system seconds, the last seen
        self.peak_sum = 0
        self.samples = 0
        self._stop_evt = threading.Event()

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            return
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except self.psutil.Error:
                continue
            try:
                self.cmdlines[p.pid] = p.cmdline()
                t = p.cpu_times()
                self.cpu[p.pid] = t.user + t.system
            except self.psutil.Error:
                self.cmdlines.setdefault(p.pid, [])
            self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
            total += rss
        self.peak_sum = max(self.peak_sum, total)
        self.samples += 1

    def run(self) -> None:
        while not self._stop_evt.is_set():
            self.sample()
            self._stop_evt.wait(self.interval)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join()

    def by_role(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for pid, rss in self.peak.items():
            cmd = self.cmdlines.get(pid, [])
            role = _role(pid, cmd, self.root.pid, self.cmd)
            r = out.setdefault(role, {"processes": 0, "max_peak_rss": 0, "sum_peak_rss": 0, "peaks": []})
            r["processes"] += 1
            r["max_peak_rss"] = max(r["max_peak_rss"], rss)
            r["sum_peak_rss"] += rss
            name = (cmd[0].rsplit("/", 1)[-1] if cmd else "?")
            if name.startswith("python") and len(cmd) > 1:  # a Python service: name its script
                name = next((c.rsplit("/", 1)[-1] for c in cmd[1:] if c.endswith(".py")), name)
            r["peaks"].append([name[:60], rss])
        for r in out.values():
            r["peaks"].sort(key=lambda x: -x[1])
        return out


@dataclass
class Run:
    corpus: str
    scale: int
    config: str
    repeat: int
    rc: int = 0
    wall_s: float = 0.0  # spawn to exit
    cpu_s: float = 0.0  # user + sys of the process tree, summed over its processes as last sampled
    cpu_wait4_s: float = 0.0  # the same from wait4: misses Ray's workers (the raylet's children, not reaped here)
    load1_before: float = 0.0
    memory: dict[str, Any] = field(default_factory=dict)
    peak_rss_tree: int = 0
    child: dict[str, Any] = field(default_factory=dict)
    files_sha256: dict[str, str] = field(default_factory=dict)
    identical_to_reference: bool | None = None
    differing_files: list[str] = field(default_factory=list)
    error: str | None = None


def artifact_hashes(out: Path) -> dict[str, str]:
    """sha256 of every file of an artifact, by relative path."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def _child_env(cache_dir: Path) -> dict[str, str]:
    from run import _child_env as run_child_env  # the same environment `run.py` gives dsc

    return run_child_env({"DSC_CACHE_DIR": str(cache_dir)}, drop=("TOKENIZERS_PARALLELISM",))


def measure(corpus: str, scale: int, kind: str, workers: int, repeat: int, spec: Path, scratch: Path,
            account: bool = False) -> Run:
    name = config_name(kind, workers)
    tag = f"{corpus}-x{scale}-{kind}{workers}-r{repeat}" + ("-account" if account else "")
    out, cache, log = scratch / f"out-{tag}", scratch / f"cache-{tag}", scratch / "logs" / tag
    for d in (out, cache):
        shutil.rmtree(d, ignore_errors=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [PY, str(Path(__file__).resolve()), "child", "--spec", str(spec), "--out", str(out), "--cache-dir", str(cache),
           "--executor", kind, "--workers", str(workers)] + (["--account"] if account else [])
    run = Run(corpus, scale, name, repeat, load1_before=os.getloadavg()[0])
    with open(f"{log}.out", "w") as fo, open(f"{log}.err", "w") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=_child_env(cache), cwd=REPO)
        sampler = ProcessSampler(proc.pid)
        sampler.start()
        _, status, ru = os.wait4(proc.pid, 0)
        run.wall_s = time.perf_counter() - t0
        sampler.stop()
    run.rc = os.waitstatus_to_exitcode(status)
    run.cpu_wait4_s = ru.ru_utime + ru.ru_stime
    run.cpu_s = sum(sampler.cpu.values())
    run.memory, run.peak_rss_tree = sampler.by_role(), sampler.peak_sum
    res = parse_result(Path(f"{log}.out").read_text())
    if run.rc != 0 or res is None:
        err = Path(f"{log}.err").read_text().strip().splitlines() or ["(no stderr)"]
        run.error = f"exit {run.rc}: {err[-1][:300]}"
    else:
        run.child = res
        run.files_sha256 = artifact_hashes(out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    # A Ray session leaves its logs under /tmp/ray/session_*; they are not the build's output.
    return run


def check_identity(run: Run, reference: Run | None) -> None:
    if run.error or reference is None or reference.error:
        return
    ref = reference.files_sha256
    run.differing_files = sorted(k for k in set(ref) | set(run.files_sha256) if ref.get(k) != run.files_sha256.get(k))
    run.identical_to_reference = not run.differing_files


# --- per-stage timings --------------------------------------------------------------------------

def stages(run: Run) -> dict[str, float]:
    """Wall seconds per stage of one run, from its progress events (seconds since process start).
    `select` is the gap between reading and rendering (its tasks, the driver's targets and the
    plan); `executor stop`
    (the pool's or Ray's shutdown) falls between rendering and writing, and is taken out of it."""
    ev = {what: t for t, what in run.child["events"]}
    life = run.child["lifecycle_s"]
    start = sum(v for k, v in life.items() if k.startswith("executor start"))
    stop = sum(v for k, v in life.items() if k.startswith("executor stop"))
    out = {
        "interpreter + imports": run.child["imported_s"],
        # From the imports to the first stage, less the executor's start (import ray, ray.init).
        "setup (spec, template, tokenizer, inputs)": ev["read + normalise: started"] - run.child["imported_s"] - start,
        "executor start": start,
        "read + normalise": ev["read + normalise: done"] - ev["read + normalise: started"],
        "select": ev["render + tokenise: started"] - ev["read + normalise: done"],
        "render + tokenise": ev["render + tokenise: done"] - ev["render + tokenise: started"],
        "write artifact": ev["write manifest and card: done"] - ev["render + tokenise: done"],
        "executor stop": stop,
        "place artifact": ev["build: done"] - ev["write manifest and card: done"] - stop,
    }
    out["exit"] = run.wall_s - ev["build: done"]
    out["total (spawn to exit)"] = run.wall_s
    return out


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def median_stages(runs: list[Run]) -> dict[str, float]:
    per = [stages(r) for r in runs if not r.error]
    return {k: _median([p[k] for p in per]) for k in per[0]} if per else {}


def median_driver(runs: list[Run]) -> dict[str, float]:
    ok = [r for r in runs if not r.error]
    keys = sorted({k for r in ok for k in r.child["driver_s"]})
    return {k: _median([r.child["driver_s"].get(k, 0.0) for r in ok]) for k in keys}


# --- the scaling estimate -----------------------------------------------------------------------

# The build's task functions and the stage each runs in (a progress stage; "write artifact": the
# progress stages "tally", "route rows", "write shards" and "write manifest and card").
# `scan_file` (an input file's hash and JSONL cuts) is a task too, but this bench's corpus is one
# file, so its scan is one task on the build's critical path: it counts as serial (stage "").
MAPPED = {"read_piece": "read + normalise", "merge_pieces": "read + normalise",
          **{f: "select" for f in ("scatter_keys", "dedup_part", "mix_pool_part", "mix_take_part", "caps_pool_part",
                                   "caps_take_part", "order_part")},
          "render_block": "render + tokenise", "tally_range": "write artifact", "route_rows": "write artifact",
          "write_shard_file": "write artifact", "count_groups": "write artifact", "scan_file": ""}
# the stages with tasks, in order
STAGE_NAMES = ("read + normalise", "select", "render + tokenise", "write artifact")


def stage_maps(run: Run) -> list[dict[str, Any]]:
    """The run's TaskStats summed per stage of STAGE_NAMES, in that order (zeros for a stage not mapped)."""
    out = [{"tasks": 0, "task_s": 0.0, "task_cpu_s": 0.0, "rows_in": 0, "bytes_in": 0, "bytes_out": 0}
           for _ in STAGE_NAMES]
    for m in run.child["maps"].values():
        if not m["stage"]:  # a task on the critical path: serial
            continue
        into = out[STAGE_NAMES.index(m["stage"])]
        for k in into:
            into[k] += m.get(k, 0)
    return out


def decompose(ref: list[Run], others: dict[str, tuple[list[Run], int]]) -> dict[str, Any]:
    """A `--workers 1` build split into serial and parallel seconds, and how far each other
    configuration's two per-row stages ran beyond `serial + parallel / workers` ("excess")."""
    s1 = median_stages(ref)
    d1 = median_driver(ref)
    ok = [r for r in ref if not r.error]
    task_s = [_median([stage_maps(r)[i]["task_s"] for r in ok]) for i in range(len(STAGE_NAMES))]
    parallel = sum(task_s)
    # The same split in CPU seconds, which a machine's other tenants inflate less than wall time.
    cpu_total = _median([r.child["driver_cpu_total_s"] for r in ok])
    cpu_parallel = _median([sum(m.get("task_cpu_s", 0.0) for m in stage_maps(r)) for r in ok])
    total = s1["total (spawn to exit)"]
    tasks = {STAGE_NAMES[i]: _median([stage_maps(r)[i]["tasks"] for r in ok]) for i in range(len(STAGE_NAMES))}
    rendered_rows = _median([stage_maps(r)[STAGE_NAMES.index("render + tokenise")].get("rows_in", 0) for r in ok])
    out: dict[str, Any] = {
        "total_w1_s": total, "parallel_s": parallel, "serial_s": total - parallel,
        "parallel_by_stage_s": dict(zip(STAGE_NAMES, task_s)),
        "parallel_fraction": parallel / total, "max_speedup": total / (total - parallel),
        "cpu_total_s": cpu_total, "cpu_parallel_s": cpu_parallel, "cpu_serial_s": cpu_total - cpu_parallel,
        "max_speedup_cpu": cpu_total / (cpu_total - cpu_parallel),
        "serial_breakdown_s": d1, "tasks": tasks, "n_tasks": sum(tasks.values()), "rendered_rows": rendered_rows,
        "excess": {},
    }
    for name, (runs, workers) in others.items():
        s = median_stages(runs)
        if not s:
            continue
        extra = 0.0
        for stage, work in zip(STAGE_NAMES, task_s):
            serial_in_stage = s1[stage] - work
            extra += s[stage] - serial_in_stage - work / workers
        mine = [r for r in runs if not r.error]
        out["excess"][name] = {"workers": workers, "stage_excess_s": extra, "start_s": s["executor start"],
                               "stop_s": s["executor stop"], "measured_total_s": s["total (spawn to exit)"],
                               # render tasks depend on the worker count (about four per worker)
                               "n_tasks": _median([sum(m["tasks"] for m in stage_maps(r)) for r in mine])}
    return out


def fit_overheads(small: dict[str, Any], large: dict[str, Any], name: str) -> dict[str, float]:
    """Fixed and per-task parts of a configuration's excess, from two corpus sizes (each with that
    configuration's own task count): excess = fixed + per_task × tasks / workers. `fixed` holds
    what a build pays once whatever its size (Ray: each Dataset's planning and start, Ray Data's
    actors, each worker's context load at its first task); `per_task` what a task costs beyond
    its work (scheduling, pickling, the object store), which grows with the bytes a task moves."""
    a, b = small["excess"][name], large["excess"][name]
    w = a["workers"]
    dk = b["n_tasks"] - a["n_tasks"]
    per_task = (b["stage_excess_s"] - a["stage_excess_s"]) * w / dk if dk else 0.0
    fixed = a["stage_excess_s"] - per_task * a["n_tasks"] / w
    return {"fixed_s": fixed, "per_task_s": per_task, "start_s": a["start_s"], "stop_s": a["stop_s"],
            "excess_small_s": a["stage_excess_s"], "excess_large_s": b["stage_excess_s"],
            "tasks_small": a["n_tasks"], "tasks_large": b["n_tasks"]}


def marginal(small: dict[str, Any], large: dict[str, Any], rows_small: int, rows_large: int) -> dict[str, float]:
    """Serial and parallel seconds per row, from the growth between the two sizes (what is fixed
    per build, start-up, drops out): the bound on the speed-up of a very large corpus on any
    number of workers is (serial + parallel) / serial per row."""
    dr = rows_large - rows_small
    serial = (large["serial_s"] - small["serial_s"]) / dr
    parallel = (large["parallel_s"] - small["parallel_s"]) / dr
    return {"serial_s_per_row": serial, "parallel_s_per_row": parallel,
            "fixed_serial_s": small["serial_s"] - serial * rows_small,
            "bound_large_corpus": (serial + parallel) / serial if serial > 0 else float("inf")}


def render_tasks(rows: int, workers: int) -> int:
    """How many render tasks (blocks) the build makes for a segment of `rows` rows on `workers`
    workers (its own rule)."""
    from dsc.compiler.engine.rendering import render_block_rows

    return math.ceil(rows / render_block_rows(rows, workers)) if rows > 0 else 0


def project(d: dict[str, Any], ray: dict[str, float], ns: list[int]) -> list[dict[str, float]]:
    """T(N) = serial + parallel / N (the ideal: no overhead), and with Ray's measured overheads:
    serial + start + stop + fixed + (parallel + per_task × tasks) / N."""
    serial, parallel, total = d["serial_s"], d["parallel_s"], d["total_w1_s"]
    ray_fixed = ray["start_s"] + ray["stop_s"] + max(0.0, ray["fixed_s"])
    # read, select and write tasks: not per worker
    chunks = sum(d["tasks"][s] for s in ("read + normalise", "select", "write artifact"))
    out = []
    for n in ns:
        ideal = serial + parallel / n
        tasks = chunks + render_tasks(int(d["rendered_rows"]), n)
        t_ray = serial + ray_fixed + (parallel + max(0.0, ray["per_task_s"]) * tasks) / n
        ideal_cpu = d["cpu_serial_s"] + d["cpu_parallel_s"] / n
        out.append({"workers": n, "ideal_s": ideal, "speedup_ideal": total / ideal, "ray_s": t_ray,
                    "speedup_ray": total / t_ray, "ideal_cpu_s": ideal_cpu,
                    "speedup_cpu": d["cpu_total_s"] / ideal_cpu})
    return out


# --- the report --------------------------------------------------------------------------------

def _mib(b: float | None) -> str:
    return "–" if not b else f"{b / 2**20:,.0f} MiB"


def memory_summary(runs: list[Run]) -> dict[str, Any]:
    """Per config and scale: the driver's peak RSS, the largest worker's, Ray's services'."""
    out: dict[str, Any] = {}
    for r in runs:
        if r.error:
            continue
        m = r.memory
        worker_role = "ray worker" if r.config.startswith("ray") else "local worker"
        w = m.get(worker_role, {})
        svc = m.get("ray service", {})
        now = {"driver": m.get("driver", {}).get("max_peak_rss", 0), "worker_max": w.get("max_peak_rss"),
               "workers": w.get("processes", 0), "ray_services_sum": svc.get("sum_peak_rss", 0),
               "tree_sum": r.peak_rss_tree}
        slot = out.setdefault(r.config, {}).setdefault(f"x{r.scale}", {})
        for k, v in now.items():  # the largest over the repeats (None: no such process)
            slot[k] = v if slot.get(k) is None else slot[k] if v is None else max(slot[k], v)
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    loads = [r["load1_before"] for r in report["runs"]]
    lines: list[str] = [
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_bytes'] / 2**30:.0f} GiB RAM; Python {m['python']}; "
        f"ray {report['ray_version']}; commit {report['commit']}; started {report['started']}; "
        f"bench wall {report['bench_wall_s'] / 60:.1f} min; load average (1 min) before each run: "
        f"min {min(loads):.2f}, median {statistics.median(loads):.2f}, max {max(loads):.2f}.", ""]
    missing = sorted({m for r in report["runs"] for m in r.get("child", {}).get("missing", [])})
    if missing:  # the build's code moved: those driver steps are not in the serial breakdown
        lines += ["Driver steps not found (not timed): " + "; ".join(missing) + ".", ""]
    for corpus, c in report["corpora"].items():
        if "error" in c:
            lines += [f"#### {corpus}: no `local --workers 1` run at one of the sizes: {c['error']}", ""]
            continue
        lines += [f"#### {corpus}: {c['rows']:,} rows (1×), {c['rows'] * report['params']['scale']:,} rows "
                  f"({report['params']['scale']}×)", ""]
        lines += ["| stage (wall s, median) | " + " | ".join(c["stages"]) + " |",
                  "|---|" + "---:|" * len(c["stages"])]
        keys = list(next(iter(c["stages"].values())).keys())
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(f"{v.get(k, float('nan')):.2f}" for v in c["stages"].values()) + " |")
        lines.append("| byte-identical to local w1 (all runs) | " + " | ".join(
            {True: "yes", False: "**NO**", None: "–"}[c["identical"][n]] for n in c["stages"]) + " |")
        lines.append("| CPU s (all processes, median) | " + " | ".join(f"{c['cpu_s'][n]:.1f}" for n in c["stages"]) + " |")
        lines += ["", "| peak RSS | 1× driver | 1× largest worker | "
                  f"{report['params']['scale']}× driver | {report['params']['scale']}× largest worker | Ray services (sum, 1×) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, by_scale in c["memory"].items():
            one = by_scale.get("x1", {})
            big = by_scale.get(f"x{report['params']['scale']}", {})
            lines.append(f"| {name} | {_mib(one.get('driver'))} | {_mib(one.get('worker_max'))} | "
                         f"{_mib(big.get('driver'))} | {_mib(big.get('worker_max'))} | {_mib(one.get('ray_services_sum'))} |")
        scale = report["params"]["scale"]
        for label, d, proj in (("1×", c["decomposition"], c.get("projection")),
                               (f"{scale}×", c["decomposition_scaled"], c.get("projection_scaled"))):
            lines += ["", f"Scaling at {label} (local w1: total {d['total_w1_s']:.2f} s = serial {d['serial_s']:.2f} s "
                      f"+ parallel {d['parallel_s']:.2f} s; parallel fraction {d['parallel_fraction']:.2f}; "
                      f"bound total/serial = **{d['max_speedup']:.2f}×**; in CPU s: {d['cpu_total_s']:.2f} = serial "
                      f"{d['cpu_serial_s']:.2f} + parallel {d['cpu_parallel_s']:.2f}, bound **{d['max_speedup_cpu']:.2f}×**; "
                      f"{d['n_tasks']:.0f} tasks)"]
            if proj:
                lines += ["", "| workers N | T ideal, wall (s) | speed-up | T ideal, CPU s | speed-up "
                          "| T with Ray's overheads (s) | speed-up |", "|---:|---:|---:|---:|---:|---:|---:|"]
                lines += [f"| {r['workers']} | {r['ideal_s']:.2f} | {r['speedup_ideal']:.2f}× | {r['ideal_cpu_s']:.2f} | "
                          f"{r['speedup_cpu']:.2f}× | {r['ray_s']:.2f} | {r['speedup_ray']:.2f}× |" for r in proj]
            lines += ["", "Serial part, driver steps of local w1 (s): " + "; ".join(
                f"{k} {v:.2f}" for k, v in d["serial_breakdown_s"].items()) + "."]
        pr = c.get("per_row")
        if pr:
            lines += ["", f"Per row (growth from 1× to {scale}×): serial {pr['serial_s_per_row'] * 1e6:.0f} µs, parallel "
                      f"{pr['parallel_s_per_row'] * 1e6:.0f} µs, fixed serial {pr['fixed_serial_s']:.2f} s per build: "
                      f"a very large corpus is bound at **{pr['bound_large_corpus']:.1f}×** on any number of workers.", ""]
        for name, o in c.get("overheads", {}).items():
            lines.append(f"- {name}: the two per-row stages took {o['excess_small_s']:.2f} s ({o['tasks_small']:.0f} tasks) "
                         f"and {o['excess_large_s']:.2f} s ({o['tasks_large']:.0f} tasks) beyond serial + parallel/workers; "
                         f"fitted: {o['fixed_s']:.2f} s per build + {o['per_task_s'] * 1000:.0f} ms per task; "
                         f"executor start {o['start_s']:.2f} s, stop {o['stop_s']:.2f} s")
        lines += ["", *data_lines(c)]
        lines.append("")
    return "\n".join(lines)


def data_lines(c: dict[str, Any]) -> list[str]:
    """What the driver sends, receives and holds, per row (from the accounting run)."""
    acc = c.get("account")
    if not acc or not acc.get("keys_bytes"):
        return ["(no accounting run)"]
    keys = acc["keys_bytes"]
    rows = keys["rows"]
    held = keys["batch lists after selection"]
    maps = acc["maps"]
    by_stage: dict[str, dict[str, int]] = {}
    for m in maps.values():
        for k in ("bytes_in", "bytes_out"):
            by_stage.setdefault(m["stage"], {}).setdefault(k, 0)
            by_stage[m["stage"]][k] += m.get(k, 0)
    n1, n3, nw = (by_stage.get(name, {}) for name in ("read + normalise", "render + tokenise", "write artifact"))
    cache = acc["cache_bytes"]
    return [f"Data per row (accounting run, {rows:,} rows): input {acc['input_bytes'] / rows:,.0f} B; "
            f"read tasks sent {n1.get('bytes_in', 0) / rows:,.1f} B, results received "
            f"{n1.get('bytes_out', 0) / rows:,.1f} B (counts); render tasks sent {n3.get('bytes_in', 0) / rows:,.1f} B, "
            f"results received {n3.get('bytes_out', 0) / rows:,.1f} B (part paths); write tasks sent "
            f"{nw.get('bytes_in', 0) / rows:,.1f} B (row numbers and positions), results received "
            f"{nw.get('bytes_out', 0) / rows:,.1f} B (counts, hashes, card statistics); the driver holds after selection "
            f"{held / rows:,.1f} B (batch lists); "
            "build cache files (read by the write tasks): "
            + ", ".join(f"{k} {v / rows:,.0f} B" for k, v in cache.items() if v)
            + f"; artifact {acc['artifact_bytes'] / rows:,.0f} B."]


def _git_commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=REPO).stdout.strip()
    return r.stdout.strip() + ("+dirty" if dirty else "")


def summarise(runs: list[Run], accounts: dict[str, Run], rows: dict[str, int], scale: int) -> dict[str, Any]:
    """Per corpus: median stages, identity, CPU, memory, the decomposition, fitted overheads, projections."""
    ns = [1, 2, 4, 8, 16, 32, 64]
    report_corpora: dict[str, Any] = {}
    for corpus, n in rows.items():
        mine = [r for r in runs if r.corpus == corpus]
        if not any(not r.error and r.config == config_name(*REFERENCE) for r in mine if r.scale == 1) or \
                not any(not r.error and r.config == config_name(*REFERENCE) for r in mine if r.scale == scale):
            report_corpora[corpus] = {"rows": n, "error": next((r.error for r in mine if r.error), "no runs")}
            continue
        by = {config_name(*c): [r for r in mine if r.config == config_name(*c) and r.scale == 1] for c in CONFIGS}
        entry: dict[str, Any] = {
            "rows": n,
            "stages": {name: median_stages(rs) for name, rs in by.items()},
            "stages_scaled": {r.config: stages(r) for r in mine if r.scale == scale and not r.error},
            "driver_steps_w1": median_driver(by[config_name(*REFERENCE)]),
            "driver_steps_w1_scaled": next((r.child["driver_s"] for r in mine if r.scale == scale
                                            and r.config == config_name(*REFERENCE) and not r.error), {}),
            "cpu_s": {name: _median([r.cpu_s for r in rs if not r.error]) for name, rs in by.items()},
            "identical": {name: (None if not rs or any(r.identical_to_reference is None for r in rs)
                                 else all(r.identical_to_reference for r in rs))
                          for name, rs in {config_name(*c): [r for r in mine if r.config == config_name(*c)]
                                           for c in CONFIGS}.items()},
            "memory": memory_summary(mine),
            "decomposition": decompose(by[config_name(*REFERENCE)], {n_: (by[n_], w) for (k, w) in CONFIGS[1:]
                                                                      if (n_ := config_name(k, w))}),
            "account": None if accounts[corpus].error else {
                k: accounts[corpus].child.get(k) for k in ("keys_bytes", "cache_bytes", "artifact_bytes", "input_bytes",
                                                          "maps")},
            "account_identical": accounts[corpus].identical_to_reference,
        }
        scaled = {config_name(*c): [r for r in mine if r.scale == scale and r.config == config_name(*c)] for c in CONFIGS}
        entry["decomposition_scaled"] = decompose(scaled[config_name(*REFERENCE)],
                                                  {n_: (scaled[n_], w) for (k, w) in CONFIGS[1:] if (n_ := config_name(k, w))})
        entry["overheads"] = {n_: fit_overheads(entry["decomposition"], entry["decomposition_scaled"], n_)
                              for n_ in entry["decomposition"]["excess"] if n_ in entry["decomposition_scaled"]["excess"]}
        entry["per_row"] = marginal(entry["decomposition"], entry["decomposition_scaled"], n, n * scale)
        ray_fit = entry["overheads"].get(config_name("ray", 2))
        if ray_fit:
            entry["projection"] = project(entry["decomposition"], ray_fit, ns)
            entry["projection_scaled"] = project(entry["decomposition_scaled"], ray_fit, ns)
        report_corpora[corpus] = entry
    return report_corpora


def run_bench(a: argparse.Namespace) -> dict[str, Any]:
    import run as run_bench_module  # corpora, tokenizer and machine facts, as the main bench makes them

    work = a.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    scratch = work / "scratch-executors"
    tok = run_bench_module.prepare_tokenizer(work, a.vocab_size)
    corpora = {"plain": (a.n_plain, 0), f"tool schemas K={a.tool_schemas}": (a.n_tool, a.tool_schemas)}
    specs = {(name, scale): run_bench_module.prepare_corpus(work, tok, n * scale, a.seed, k, "tool", False) / "spec.yaml"
             for name, (n, k) in corpora.items() for scale in (1, a.scale)}
    t_start = time.time()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs: list[Run] = []
    refs: dict[tuple[str, int], Run] = {}

    def one(corpus: str, scale: int, kind: str, workers: int, repeat: int) -> None:
        r = measure(corpus, scale, kind, workers, repeat, specs[corpus, scale], scratch)
        if (kind, workers) == REFERENCE and (corpus, scale) not in refs and not r.error:
            refs[corpus, scale] = r
        check_identity(r, refs.get((corpus, scale)))
        runs.append(r)
        same = {True: "identical", False: f"DIFFERS {r.differing_files[:3]}", None: "–"}[r.identical_to_reference]
        print(f"  {corpus:22s} x{scale} {r.config:18s} r{repeat} {r.wall_s:7.2f} s  load {r.load1_before:.2f}  "
              f"{same}" + (f"  ERROR {r.error}" if r.error else ""), file=sys.stderr, flush=True)

    for repeat in range(a.repeats):
        for corpus in corpora:
            for kind, workers in CONFIGS:
                one(corpus, 1, kind, workers, repeat)
    for corpus in corpora:
        for kind, workers in CONFIGS:
            one(corpus, a.scale, kind, workers, 0)
    accounts = {corpus: measure(corpus, 1, *REFERENCE, 0, specs[corpus, 1], scratch, account=True) for corpus in corpora}
    for corpus, acc in accounts.items():
        check_identity(acc, refs.get((corpus, 1)))
    load_after = os.getloadavg()
    report = {
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k != "func"},
        "machine": run_bench_module.machine(), "commit": _git_commit(), "started": started,
        "bench_wall_s": time.time() - t_start, "load_after": load_after,
        "ray_version": _version("ray"), "psutil_version": _version("psutil"),
        "corpora": summarise(runs, accounts, {c: n for c, (n, _k) in corpora.items()}, a.scale),
        "runs": [asdict(r) for r in runs],
        "account_runs": {k: asdict(v) for k, v in accounts.items()},
    }
    out = a.json or BENCH / "results" / (f"executors-plain{a.n_plain}-tool{a.n_tool}k{a.tool_schemas}"
                                         f"-x{a.scale}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    md = markdown(report)
    print(md)
    print(f"results: {out}", file=sys.stderr)
    return report


def rerun_report(path: Path) -> None:
    report = json.loads(path.read_text())
    runs = [Run(**r) for r in report["runs"]]
    accounts = {k: Run(**v) for k, v in report["account_runs"].items()}
    prm = report["params"]
    rows = {"plain": prm["n_plain"], f"tool schemas K={prm['tool_schemas']}": prm["n_tool"]}
    report["corpora"] = summarise(runs, accounts, rows, prm["scale"])
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(markdown(report))


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    c = sub.add_parser("child", help="internal: one build in this process, timed (a BENCH_RESULT line on stdout)")
    c.add_argument("--spec", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--cache-dir", type=Path, required=True)
    c.add_argument("--executor", choices=("local", "ray"), required=True)
    c.add_argument("--workers", type=int, required=True)
    c.add_argument("--account", action="store_true", help="also count pickled bytes per task and key bytes (slower)")
    p.add_argument("--n-plain", type=int, default=10000, help="plain ReAct rows at 1×")
    p.add_argument("--n-tool", type=int, default=3000, help="tool-schema rows at 1×")
    p.add_argument("--tool-schemas", type=int, default=32, metavar="K")
    p.add_argument("--scale", type=int, default=4, help="the second corpus size, as a multiple of the first")
    p.add_argument("--repeats", type=int, default=3, help="rounds at 1× (the scaled size runs once)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--work-dir", type=Path, default=BENCH / ".work")
    p.add_argument("--json", type=Path, default=None)
    rp = sub.add_parser("report", help="summarise a results JSON again (after a change to the summary) and print it")
    rp.add_argument("results", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "child":
        run_child(a)
    elif a.cmd == "report":
        rerun_report(a.results)
    else:
        if a.scale < 2 or a.repeats < 1:
            p.error("--scale must be >= 2 and --repeats >= 1")
        run_bench(a)


if __name__ == "__main__":
    main()
