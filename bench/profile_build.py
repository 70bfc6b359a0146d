"""Where `dsc build` spends its time: per-stage seconds (all processes), or a cProfile / py-spy profile.

    python bench/profile_build.py SPEC --out DIR [--workers N] [--mode timers|cprofile|py-spy]

Modes:
- `timers` (default): wraps the build's stage functions with wall-clock accumulators in the main
  process and in every worker (each worker writes its totals after every chunk, because the pool
  is terminated, not joined), then prints seconds per stage summed over processes, the main
  process's wall time per phase, and the measured cost of pickling a chunk across the pool.
  Overhead is one `perf_counter` pair per call (per row for render/normalise).
- `cprofile`: cProfile of the main process and of every worker (merged), top functions by own
  time and by cumulative time, plus the same stage table read off the profile (inflated by
  cProfile's per-call overhead: Jinja rendering and other call-heavy code look slower than they are).
- `py-spy`: `py-spy record --subprocesses` of `python -m dsc.cli build` (needs py-spy on PATH:
  `pip install py-spy`); writes a speedscope JSON and prints py-spy's own summary.

Wrapping works by replacing names in the modules that call them (`dsc.compiler.engine.driver`, the
stage modules it calls) before the build starts; forked workers inherit the replacements. A stage
whose function is not found (the code moved) is reported as such, not silently dropped.
"""
from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "DSC_NO_PROGRESS": "1"}.items():
    os.environ.setdefault(_k, _v)

# (stage, module, attribute, kind). kind: "fn" a plain function, "gen" a generator function (time
# spent producing each item), "method" an attribute of a class given as "module:Class". Where
# build.py has moved a stage, "module|module2" and "attr|attr2" list candidates, paired in order:
# the first one found is timed.
STAGES: list[tuple[str, str, str, str]] = [
    ("read (parse source files)", "dsc.compiler.engine.normalise", "iter_raw_rows", "gen"),
    ("normalise (format → Conversation)", "dsc.compiler.engine.normalise", "normalise_row", "fn"),
    ("transforms", "dsc.compiler.stages.transforms.pipeline:RowPipeline", "run", "method"),
    ("normalised rows → Arrow (segment_row)", "dsc.compiler.engine.normalise", "segment_row", "fn"),
    ("segment write (SegmentWriter.add)", "dsc.compiler.engine.rowfiles:SegmentWriter", "add", "method"),
    ("select (dedup/mix)", "dsc.compiler.stages.select.mix", "select", "fn"),
    ("split + order", "dsc.compiler.engine.selected", "final_order", "fn"),
    ("read back Conversations (read_conversations)", "dsc.compiler.engine.rendering", "read_conversations", "fn"),
    ("special-token policy", "dsc.compiler.engine.rendering", "apply_special_token_policy", "fn"),
    ("render (template + spans)", "dsc.compiler.engine.rendering", "render", "fn"),
    ("tokenize (encode_arrays)", "dsc.chat.tokenize:RowTokenizer", "encode_arrays", "method"),
    ("render batch → Arrow (render_batch, includes the 3 above)", "dsc.compiler.engine.rendering", "render_batch", "fn"),
    ("rendered part write (write_part)", "dsc.compiler.engine.rendering", "write_part", "fn"),
    ("route output rows (segments + parts → artifact rows in route files)", "dsc.compiler.engine.spill",
     "route_rows", "fn"),
    ("parquet write (write_shard)", "dsc.compiler.stages.write.artifact", "write_shard", "fn"),
    ("hash outputs (sha256_file)", "dsc.compiler.engine.spill", "sha256_file", "fn"),
    ("scan inputs: hash, JSONL cuts (resolve_inputs)", "dsc.compiler.engine.driver", "resolve_inputs", "fn"),
    ("dataset card", "dsc.compiler.engine.driver", "write_card", "fn"),
]
# what a worker runs per chunk: (module, function)
CHUNK_FUNCTIONS = (("dsc.compiler.engine.normalise", "normalise_chunk"), ("dsc.compiler.engine.rendering", "render_part"))


def _resolve(module: str, attr: str) -> tuple[Any, str] | None:
    if "|" in module:
        for m, a in zip(module.split("|"), attr.split("|")):
            found = _resolve(m, a)
            if found is not None:
                return found
        return None
    import importlib

    mod_name, _, cls = module.partition(":")
    try:
        owner: Any = importlib.import_module(mod_name)
        if cls:
            owner = getattr(owner, cls)
    except (ImportError, AttributeError):
        return None
    return (owner, attr) if hasattr(owner, attr) else None


# ---------------------------------------------------------------------------------------------
# timers mode
# ---------------------------------------------------------------------------------------------

class _Timers:
    """Per-process accumulators; forked workers inherit an empty copy (reset on first use)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.depth: dict[str, int] = defaultdict(int)

    def check_pid(self) -> None:
        if os.getpid() != self.pid:  # a forked worker: start from zero
            self.__init__()

    def add(self, name: str, dt: float, dcpu: float) -> None:
        self.seconds[name] += dt
        self.cpu[name] += dcpu
        self.calls[name] += 1

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps({"seconds": self.seconds, "cpu": self.cpu, "calls": self.calls}))


TIMERS = _Timers()


def _timed(name: str, fn: Any, kind: str) -> Any:
    if kind == "gen":
        @functools.wraps(fn)
        def gen_wrapper(*a: Any, **k: Any) -> Any:
            TIMERS.check_pid()
            it = iter(fn(*a, **k))
            while True:
                t, c = time.perf_counter(), time.process_time()
                try:
                    item = next(it)
                except StopIteration:
                    TIMERS.add(name, time.perf_counter() - t, time.process_time() - c)
                    return
                TIMERS.add(name, time.perf_counter() - t, time.process_time() - c)
                yield item
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*a: Any, **k: Any) -> Any:
        TIMERS.check_pid()
        # Recursive or nested calls (to_dict inside to_dict) are counted once, at the outermost.
        TIMERS.depth[name] += 1
        t, c = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **k)
        finally:
            TIMERS.depth[name] -= 1
            if TIMERS.depth[name] == 0:
                TIMERS.add(name, time.perf_counter() - t, time.process_time() - c)
    return wrapper


def install_timers(dump_dir: Path, pickle_every: int) -> list[str]:
    """Wrap every stage function; returns the stages that could not be found."""
    missing = []
    for stage, module, attr, kind in STAGES:
        found = _resolve(module, attr)
        if found is None:
            missing.append(f"{stage} ({module}.{attr})")
            continue
        owner, name = found
        setattr(owner, name, _timed(stage, getattr(owner, name), kind))
    main_pid = os.getpid()
    counter = {"n": 0}
    for module, fname in CHUNK_FUNCTIONS:
        b = importlib.import_module(module)
        fn = getattr(b, fname, None)
        if fn is None:
            missing.append(f"chunk function {module}.{fname}")
            continue

        def chunk_wrapper(chunk: list[Any], _fn: Any = fn, _name: str = fname) -> Any:
            TIMERS.check_pid()
            t, c = time.perf_counter(), time.process_time()
            out = _fn(chunk)
            TIMERS.add(f"chunk: {_name}", time.perf_counter() - t, time.process_time() - c)
            counter["n"] += 1
            # What the pool would pay to move this chunk: measured on a sample of chunks, in the
            # process that has the objects, and scaled up by the sampling rate in the report.
            if pickle_every and counter["n"] % pickle_every == 0:
                for what, obj in (("in", chunk), ("out", out)):
                    t = time.perf_counter()
                    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
                    t1 = time.perf_counter()
                    pickle.loads(data)
                    t2 = time.perf_counter()
                    key = f"pickle {_name} {what}"
                    TIMERS.seconds[key + " dumps"] += (t1 - t) * pickle_every
                    TIMERS.seconds[key + " loads"] += (t2 - t1) * pickle_every
                    TIMERS.seconds[key + " MiB"] += len(data) * pickle_every / 2**20
            if os.getpid() != main_pid:
                TIMERS.dump(dump_dir / f"timers-{os.getpid()}.json")
            return out

        # Picklable by reference: the pool sends "dsc.compiler.engine.rendering.render_part".
        chunk_wrapper.__module__, chunk_wrapper.__qualname__ = b.__name__, fname
        chunk_wrapper.__name__ = fname
        setattr(b, fname, chunk_wrapper)
    return missing


def _main_phases() -> Any:
    """Wall time of the main process between progress events (the build's own phases)."""
    import dsc.compiler.engine.driver as b

    class Phases(b.Progress):
        def __init__(self) -> None:
            self.t = time.perf_counter()
            self.stage = "setup (template, tokenizer, inputs)"
            self.phases: dict[str, float] = defaultdict(float)

        def _close(self, next_stage: str) -> None:
            now = time.perf_counter()
            self.phases[self.stage] += now - self.t
            self.t, self.stage = now, next_stage

        def start(self, stage: str, total: int | None = None) -> None:
            self._close(stage)

        def done(self) -> None:
            self._close("between stages / write")

        def finish(self) -> None:
            self._close("")

    return Phases()


def _cache_kwargs(build_loaded: Any, cache: bool) -> dict[str, Any]:
    """cache=False (a cold build) where build_loaded has a build cache."""
    import inspect

    return {"cache": cache} if "cache" in inspect.signature(build_loaded).parameters else {}


def run_timers(spec: Path, out: Path, workers: int, pickle_every: int, cache: bool = False) -> dict[str, Any]:
    t_import = time.perf_counter()
    from dsc.compiler.engine.driver import build_loaded
    from dsc.compiler.engine.validation import load_spec

    imported = time.perf_counter()
    dump_dir = Path(tempfile.mkdtemp(prefix="dsc-timers-"))
    try:
        missing = install_timers(dump_dir, pickle_every)
        phases = _main_phases()
        t = time.perf_counter()
        loaded = load_spec(spec)
        res = build_loaded(loaded, out, workers=workers, progress=phases, **_cache_kwargs(build_loaded, cache))
        phases.finish()
        wall = time.perf_counter() - t
        cpu_main = time.process_time()
        per_process = {"main": {"seconds": dict(TIMERS.seconds), "cpu": dict(TIMERS.cpu), "calls": dict(TIMERS.calls)}}
        for f in sorted(dump_dir.glob("timers-*.json")):
            per_process[f"worker {f.stem.split('-')[1]}"] = json.loads(f.read_text())
    finally:
        shutil.rmtree(dump_dir, ignore_errors=True)
    total: dict[str, float] = defaultdict(float)
    total_cpu: dict[str, float] = defaultdict(float)
    for p in per_process.values():
        for k, v in p["seconds"].items():
            total[k] += v
        for k, v in p.get("cpu", {}).items():
            total_cpu[k] += v
    return {"spec": str(spec), "workers": workers, "rows": res.written, "wall_s": wall,
            "import_s": imported - t_import, "script_start_to_import_s": t_import - _T0,
            "cpu_main_process_s": cpu_main, "load1": os.getloadavg()[0],
            "main_phases_s": dict(phases.phases), "stages_s": dict(total), "stages_cpu_s": dict(total_cpu),
            "per_process": per_process, "missing": missing, "pickle_every": pickle_every}


def print_timers(r: dict[str, Any]) -> None:
    print(f"\n== dsc build {r['spec']} --workers {r['workers']}: {r['wall_s']:.2f} s wall "
          f"(build_loaded; imports {r['import_s']:.2f} s before), rows {r['rows']}; main process CPU "
          f"{r['cpu_main_process_s']:.2f} s (all threads); load average after {r['load1']:.2f}")
    print("\nmain process, wall time per phase:")
    for k, v in r["main_phases_s"].items():
        print(f"  {v:8.2f} s  {k}")
    print("\nstage seconds, summed over all processes (nested stages are inside the chunk totals);"
          " CPU counts every thread of the process (the tokenizer's own threads too):")
    print(f"  {'wall':>8s}   {'CPU':>8s}")
    cpu = r["stages_cpu_s"]
    for stage, *_ in STAGES:
        if stage in r["stages_s"]:
            print(f"  {r['stages_s'][stage]:8.2f} s {cpu.get(stage, 0):8.2f} s  {stage}")
    for k in sorted(r["stages_s"]):
        if k.startswith("chunk: "):
            print(f"  {r['stages_s'][k]:8.2f} s {cpu.get(k, 0):8.2f} s  {k} (whole chunk function)")
    pk = sorted(k for k in r["stages_s"] if k.startswith("pickle "))
    if pk:
        print(f"\npickling across the pool (estimated from 1 in {r['pickle_every']} chunks; with --workers 1 "
              "nothing is pickled, this is what workers would pay):")
        for k in pk:
            unit = "MiB" if k.endswith("MiB") else "s"
            print(f"  {r['stages_s'][k]:8.2f} {unit:3s} {k.removesuffix(' MiB')}")
    if r["missing"]:
        print("\nnot found (not timed): " + "; ".join(r["missing"]))


# ---------------------------------------------------------------------------------------------
# cprofile mode
# ---------------------------------------------------------------------------------------------

def install_worker_profilers(dump_dir: Path) -> None:
    import cProfile

    main_pid = os.getpid()
    state: dict[str, Any] = {"pid": None, "prof": None}
    for module, fname in CHUNK_FUNCTIONS:
        b = importlib.import_module(module)
        fn = getattr(b, fname, None)
        if fn is None:
            continue

        def chunk_wrapper(chunk: list[Any], _fn: Any = fn) -> Any:
            if os.getpid() == main_pid:  # inline (workers=1): the main profiler sees it
                return _fn(chunk)
            if state["pid"] != os.getpid():
                state["pid"], state["prof"] = os.getpid(), cProfile.Profile()
            prof = state["prof"]
            prof.enable()
            try:
                return _fn(chunk)
            finally:
                prof.disable()
                prof.dump_stats(str(dump_dir / f"worker-{os.getpid()}.pstats"))

        chunk_wrapper.__module__, chunk_wrapper.__qualname__ = b.__name__, fname
        chunk_wrapper.__name__ = fname
        setattr(b, fname, chunk_wrapper)


def run_cprofile(spec: Path, out: Path, workers: int, top: int, save: Path | None, cache: bool = False) -> None:
    import cProfile
    import pstats

    from dsc.compiler.engine.driver import build_loaded
    from dsc.compiler.engine.validation import load_spec

    dump_dir = Path(tempfile.mkdtemp(prefix="dsc-prof-"))
    try:
        install_worker_profilers(dump_dir)
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        build_loaded(load_spec(spec), out, workers=workers, **_cache_kwargs(build_loaded, cache))
        prof.disable()
        wall = time.perf_counter() - t
        main_file = dump_dir / "main.pstats"
        prof.dump_stats(str(main_file))
        files = [main_file, *sorted(dump_dir.glob("worker-*.pstats"))]
        stats = pstats.Stats(*map(str, files))
        if save is not None:
            stats.dump_stats(str(save))
        print(f"\n== cProfile of dsc build --workers {workers}: {wall:.2f} s wall (profiled), "
              f"{len(files) - 1} worker profile(s) merged")
        print("\nstages (cumulative seconds from the merged profile):")
        for stage, module, attr, _kind in STAGES:
            cum: list[float] = []
            for m, a in zip(module.split("|"), attr.split("|")):
                mod_file = m.partition(":")[0].rsplit(".", 1)[-1] + ".py"
                cum += [v[3] for (fname, _line, func), v in stats.stats.items()  # type: ignore[attr-defined]
                        if func == a and fname.endswith(mod_file)]
                if cum:
                    break
            if cum:
                print(f"  {sum(cum):8.2f} s  {stage}")
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
    finally:
        shutil.rmtree(dump_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# py-spy mode
# ---------------------------------------------------------------------------------------------

def run_pyspy(spec: Path, out: Path, workers: int, save: Path | None, cache: bool = False) -> None:
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if exe is None:
        sys.exit("py-spy is not installed (pip install py-spy), or use --mode timers / cprofile")
    save = save or Path(tempfile.gettempdir()) / "dsc-build.speedscope.json"
    cmd = [exe, "record", "--subprocesses", "--rate", "200", "--format", "speedscope", "-o", str(save), "--",
           sys.executable, "-m", "dsc.cli", "build", str(spec), "--out", str(out), "--workers", str(workers)]
    print(" ".join(cmd), file=sys.stderr)
    env = dict(os.environ)
    scratch = None
    if not cache:  # the CLI builds with the cache: point it at an empty one
        scratch = tempfile.mkdtemp(prefix="dsc-cache-")
        env["DSC_CACHE_DIR"] = scratch
    try:
        subprocess.run(cmd, check=True, env=env)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"speedscope profile: {save} (open at speedscope.app or `py-spy` docs)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", type=Path)
    p.add_argument("--out", type=Path, default=None, help="artifact dir (default: a temp dir, removed)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--mode", choices=("timers", "cprofile", "py-spy"), default="timers")
    p.add_argument("--top", type=int, default=30, help="cprofile: functions listed")
    p.add_argument("--save", type=Path, default=None, help="cprofile: merged .pstats; py-spy: output file")
    p.add_argument("--json", type=Path, default=None, help="timers: write the results as JSON")
    p.add_argument("--pickle-every", type=int, default=8,
                   help="timers: measure pickling on 1 in N chunks (0: never)")
    p.add_argument("--cache", action="store_true",
                   help="use the build cache (default: a cold build, cache=False; py-spy mode: a fresh "
                        "DSC_CACHE_DIR)")
    a = p.parse_args(argv)
    tmp = None
    out = a.out
    if out is None:
        tmp = Path(tempfile.mkdtemp(prefix="dsc-profile-out-"))
        out = tmp / "artifact"
    try:
        if a.mode == "timers":
            r = run_timers(a.spec, out, a.workers, a.pickle_every, a.cache)
            print_timers(r)
            if a.json:
                a.json.write_text(json.dumps(r, indent=2) + "\n")
        elif a.mode == "cprofile":
            run_cprofile(a.spec, out, a.workers, a.top, a.save, a.cache)
        else:
            run_pyspy(a.spec, out, a.workers, a.save, a.cache)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
