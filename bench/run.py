"""Benchmark: the hand-written baseline, `dsc build` and the bare tokenizer, on one corpus.

    python bench/run.py --n 20000                       # plain ReAct corpus
    python bench/run.py --n 20000 --tool-schemas 32     # repeated tool-schema system prompts
    python bench/run.py --n 1000000 --only dsc --repeats 1 --no-startup   # memory at scale

Every measured run is its own subprocess, started back to back from this process, on the same
corpus and tokenizer, with runs of different configurations interleaved across repeats (so
drifting load on a shared machine hits all of them alike). Per run it records:

- time: for the baseline and dsc, process spawn -> exit (imports, reading, tokenising, writing:
  what a user waits for); for the limit, only the `encode_batch` calls;
- CPU seconds (user + sys of the whole process tree, from wait4);
- memory: peak RSS summed over the process tree (sampled every 50 ms; forked workers share
  pages, so it over-counts them), peak PSS summed over the tree (shared pages counted once;
  sampled every second, so a short spike can be missed) and the largest single process's peak
  RSS (sampled every 50 ms);
- output size on disk, and rows / tokens / supervised tokens of the output, which must equal
  the baseline's (same output, else the speed is not comparable).

Reports medians of --repeats runs as a markdown table (stdout and a .md file) and JSON.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
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
import make_corpus  # noqa: E402
from _common import OFFLINE_ENV, dir_size, dsc_token_counts, parse_result, write_spec  # noqa: E402

KINDS = ("baseline", "dsc", "limit")


@dataclass(frozen=True)
class Config:
    kind: str  # baseline | dsc | limit
    par: int  # num_proc / --workers / tokenizer threads

    @property
    def name(self) -> str:
        if self.kind == "baseline":
            return f"baseline num_proc={self.par}"
        if self.kind == "dsc":
            return f"dsc build --workers {self.par}"
        return f"limit, {self.par} thread{'s' if self.par > 1 else ''}"


@dataclass
class Run:
    """One measured subprocess."""
    config: str
    rc: int
    time_s: float  # the headline time (see module doc)
    wall_s: float
    cpu_s: float
    peak_rss_tree: int | None
    peak_pss_tree: int | None
    max_rss_proc: int | None
    out_bytes: int | None
    rows: int | None = None
    tokens: int | None = None
    supervised: int | None = None
    first_row_s: float | None = None  # spawn to the first tokenised rows
    first_read_s: float | None = None  # dsc: spawn to the first rows read and normalised
    phases: dict[str, float] = field(default_factory=dict)
    load1_before: float = 0.0
    error: str | None = None


# --- preparation ------------------------------------------------------------------------------

def _child_env(extra: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV, **(extra or {})}
    for k in drop:
        env.pop(k, None)
    return env


def _check(cmd: list[str], **kw) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(), cwd=REPO, **kw)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def prepare_tokenizer(work: Path, vocab_size: int) -> Path:
    tok = work / f"tokenizer-v{vocab_size}"
    if not (tok / "tokenizer.json").exists():
        tmp = work / f".tokenizer-v{vocab_size}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"training the bench tokenizer (vocab {vocab_size}) -> {tok}", file=sys.stderr)
        _check([PY, str(BENCH / "make_tokenizer.py"), "--out", str(tmp), "--vocab-size", str(vocab_size)])
        tmp.replace(tok)
    return tok


def prepare_corpus(work: Path, tokenizer: Path, n: int, seed: int, tool_schemas: int,
                   observation_role: str, rendered: bool) -> Path:
    """A spec dir: corpus.jsonl, tokenizer/, bench_template.jinja, spec.yaml [, rendered.parquet].
    Cached by its parameters (the generator is deterministic)."""
    d = work / f"corpus-n{n}-s{seed}-k{tool_schemas}-{observation_role}-{tokenizer.name}"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "corpus.jsonl").exists():
        print(f"generating {n} conversations -> {d / 'corpus.jsonl'}", file=sys.stderr)
        make_corpus.write_corpus(d / "corpus.jsonl", n, seed, tool_schemas, observation_role)
    if not (d / "tokenizer" / "tokenizer.json").exists():
        shutil.copytree(tokenizer, d / "tokenizer", dirs_exist_ok=True)
    write_spec(d)
    if rendered and not (d / "rendered.parquet").exists():
        print(f"rendering {n} conversations for the limit (not timed)", file=sys.stderr)
        _check([PY, str(BENCH / "limit.py"), "render", "--corpus", str(d / "corpus.jsonl"),
                "--tokenizer", str(d / "tokenizer"), "--out", str(d / "rendered.parquet")])
    return d


def find_dsc() -> tuple[list[str] | None, str]:
    """The `dsc` command if `dsc build --workers` exists, else (None, why not)."""
    try:
        found = importlib.util.find_spec("dsc.compiler.engine.driver") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return None, "not measured yet: `dsc.compiler.engine.driver` does not exist"
    exe = Path(PY).parent / "dsc"
    cmd = [str(exe)] if exe.exists() else [PY, "-c", "import sys; from dsc.cli import main; sys.exit(main())"]
    r = subprocess.run(cmd + ["build", "--help"], capture_output=True, text=True, env=_child_env(), cwd=REPO)
    if r.returncode != 0 or "--workers" not in r.stdout + r.stderr:
        return None, "not measured yet: `dsc build --help` does not offer --workers"
    return cmd, ""


# --- measuring --------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree_pids(pid: int) -> list[int]:
    """pid and its descendants, from /proc children lists (a few reads, unlike a scan of every
    process: cheap enough to sample often on a 2-core machine)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):  # the process ended between reads
            continue
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _pss(pid: int) -> int:
    # Proportional set size: shared pages (forked workers) counted once in the sum. It costs a
    # page-table walk (~16 ms per GB), so it is sampled less often than RSS.
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class _RssSampler(threading.Thread):
    """Peaks of the summed RSS (every 50 ms) and PSS (every second) of a process tree."""

    def __init__(self, pid: int, interval: float = 0.05, pss_every: int = 20):
        super().__init__(daemon=True)
        self.pid, self.interval, self.pss_every = pid, interval, pss_every
        ok = Path(f"/proc/{pid}/task/{pid}/children").exists()
        self.peak_rss: int | None = 0 if ok else None
        self.peak_proc: int | None = 0 if ok else None
        self.peak_pss: int | None = 0 if ok and Path(f"/proc/{pid}/smaps_rollup").exists() else None
        self._stop_evt = threading.Event()

    def run(self) -> None:
        if self.peak_rss is None:  # no /proc children lists here: report no memory figures
            return
        tick = 0
        while not self._stop_evt.is_set():
            pids = _tree_pids(self.pid)
            rss = [_rss(p) for p in pids]
            self.peak_rss = max(self.peak_rss, sum(rss))
            self.peak_proc = max(self.peak_proc, max(rss))
            if self.peak_pss is not None and tick % self.pss_every == 0:
                self.peak_pss = max(self.peak_pss, sum(map(_pss, pids)))
            tick += 1
            self._stop_evt.wait(self.interval)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join()


def measure(config: Config, cmd: list[str], env: dict[str, str], log_dir: Path, out: Path | None) -> Run:
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = config.name.replace(" ", "_").replace(",", "").replace("=", "")
    load1 = os.getloadavg()[0]
    with open(log_dir / f"{stem}.out", "w") as fo, open(log_dir / f"{stem}.err", "w") as fe:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env, cwd=REPO)
        sampler = _RssSampler(proc.pid)
        sampler.start()
        _, status, ru = os.wait4(proc.pid, 0)
        t1 = time.time()
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
    stdout = (log_dir / f"{stem}.out").read_text()
    run = Run(config=config.name, rc=proc.returncode, time_s=t1 - t0, wall_s=t1 - t0,
              cpu_s=ru.ru_utime + ru.ru_stime, peak_rss_tree=sampler.peak_rss, peak_pss_tree=sampler.peak_pss,
              # Not wait4's ru_maxrss: Linux carries it across fork+exec, so a child would
              # inherit this (larger) process's figure.
              max_rss_proc=sampler.peak_proc,
              out_bytes=dir_size(out) if out is not None and out.exists() else None, load1_before=load1)
    if proc.returncode != 0:
        err = (log_dir / f"{stem}.err").read_text()
        run.error = f"exit {proc.returncode}: " + (err.strip().splitlines() or ["(no stderr)"])[-1][:300]
        return run
    if config.kind == "dsc":
        marks = dsc_timings((log_dir / f"{stem}.err").read_text())
        run.first_read_s = marks.get("read + normalise: first rows")
        run.first_row_s = marks.get("render + tokenise: first rows")
        run.phases = marks
        try:
            run.__dict__.update(dsc_token_counts(out))
        except Exception as e:  # a dsc artifact without the expected columns is a reportable result
            run.error = f"cannot read the artifact: {type(e).__name__}: {e}"
        return run
    res = parse_result(stdout)
    if res is None:
        run.error = "no BENCH_RESULT line on stdout"
        return run
    run.rows, run.tokens, run.supervised = res["rows"], res["tokens"], res.get("supervised")
    times = res["times"]
    run.phases = {k: round(v - t0, 4) for k, v in times.items() if v is not None}
    if times.get("first_row"):
        run.first_row_s = times["first_row"] - t0
    if config.kind == "limit":
        run.time_s = res["encode_s"]
    return run


_TIMING_LINE = re.compile(r"^\s+([0-9.]+)\s+(\S.*)$")


def dsc_timings(stderr: str) -> dict[str, float]:
    """`dsc build --timings` events (seconds since the dsc process started) from its stderr."""
    out: dict[str, float] = {}
    lines = stderr.splitlines()
    if "timings (seconds since the process started):" not in lines:
        return out
    for line in lines[lines.index("timings (seconds since the process started):") + 1:]:
        m = _TIMING_LINE.match(line)
        if not m:
            break
        out[m.group(2)] = float(m.group(1))
    return out


def _cache_dir(out: Path) -> Path:
    return out.with_name(out.name + "-cache")


def command(config: Config, d: Path, out: Path, dsc_cmd: list[str] | None) -> tuple[list[str], dict[str, str]]:
    if config.kind == "baseline":
        # What a user gets by default: TOKENIZERS_PARALLELISM unset (the Rust encoder may use both
        # cores inside one process, and turns itself off in forked workers).
        return ([PY, str(BENCH / "baseline.py"), "--corpus", str(d / "corpus.jsonl"),
                 "--tokenizer", str(d / "tokenizer"), "--out", str(out), "--num-proc", str(config.par)],
                _child_env(drop=("TOKENIZERS_PARALLELISM",)))
    if config.kind == "dsc":
        assert dsc_cmd is not None
        # A cold build, like the baseline's fresh datasets cache: dsc's build cache (which would
        # serve every run after the first) goes to a fresh directory that run_series removes.
        return (dsc_cmd + ["build", str(d / "spec.yaml"), "--out", str(out), "--workers", str(config.par),
                           "--timings"],
                _child_env({"DSC_CACHE_DIR": str(_cache_dir(out))}, drop=("TOKENIZERS_PARALLELISM",)))
    threads = str(config.par)
    return ([PY, str(BENCH / "limit.py"), "run", "--texts", str(d / "rendered.parquet"),
             "--tokenizer", str(d / "tokenizer")],
            _child_env({"TOKENIZERS_PARALLELISM": "true", "RAYON_NUM_THREADS": threads,
                        "RAYON_RS_NUM_CPUS": threads}))


def run_series(configs: list[Config], d: Path, repeats: int, scratch: Path, dsc_cmd: list[str] | None,
               keep: bool) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {c.name: [] for c in configs}
    for r in range(repeats):
        for c in configs:
            out = scratch / f"out-{r}-{c.kind}-{c.par}"
            for old in (out, _cache_dir(out)):
                shutil.rmtree(old, ignore_errors=True)
            cmd, env = command(c, d, out, dsc_cmd)
            run = measure(c, cmd, env, scratch / "logs" / f"{d.name}-{r}", out if c.kind != "limit" else None)
            shutil.rmtree(_cache_dir(out), ignore_errors=True)
            if not keep:
                shutil.rmtree(out, ignore_errors=True)
            print(f"  [{r + 1}/{repeats}] {c.name:28s} {run.time_s:8.2f} s"
                  + (f"  ERROR {run.error}" if run.error else ""), file=sys.stderr)
            runs[c.name].append(run)
    return runs


# --- reporting --------------------------------------------------------------------------------

def _median(xs: list[float | int | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(runs: list[Run], n: int, expected: dict[str, int] | None) -> dict[str, Any]:
    ok = [r for r in runs if r.error is None]
    if not ok:
        return {"error": runs[0].error if runs else "no runs", "runs": len(runs)}
    t = _median([r.time_s for r in ok])
    tokens = ok[0].tokens
    s: dict[str, Any] = {
        "runs": len(ok), "time_s": t, "rows_per_s": n / t, "tokens_per_s": tokens / t if tokens else None,
        "cpu_s": _median([r.cpu_s for r in ok]), "peak_rss_tree": _median([r.peak_rss_tree for r in ok]),
        # PSS is sampled once a second: meaningless for runs of a few seconds.
        "peak_pss_tree": _median([r.peak_pss_tree for r in ok if r.wall_s >= 5]),
        "max_rss_proc": _median([r.max_rss_proc for r in ok]), "out_bytes": _median([r.out_bytes for r in ok]),
        "first_row_s": _median([r.first_row_s for r in ok]), "first_read_s": _median([r.first_read_s for r in ok]),
        "rows": ok[0].rows, "tokens": tokens,
        "supervised": ok[0].supervised, "time_s_all": [round(r.time_s, 3) for r in ok],
    }
    if len(ok) < len(runs):
        s["failed_runs"] = [r.error for r in runs if r.error]
    if expected:
        keys = ["rows", "tokens"] + (["supervised"] if ok[0].supervised is not None else [])
        s["same_output"] = all(getattr(r, k) == expected[k] for r in ok for k in keys)
    return s


def _mib(b: float | None) -> str:
    if b is None:
        return "–"
    mib = b / 2**20
    return f"{mib:,.1f} MiB" if mib < 10 else f"{mib:,.0f} MiB"


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "–" if x is None else format(x, fmt)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for lib in ("transformers", "tokenizers", "datasets", "pyarrow", "jinja2"):
        try:
            libs[lib] = version(lib)
        except PackageNotFoundError:
            pass
    return {"nproc": os.cpu_count(), "cpu": model, "ram_bytes": mem, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "libs": libs}


def ratios(summary: dict[str, dict[str, Any]], configs: list[Config]) -> list[tuple[str, float]]:
    def t(c: Config) -> float | None:
        return summary.get(c.name, {}).get("time_s")

    by_kind = {k: [c for c in configs if c.kind == k and t(c)] for k in KINDS}
    out: list[tuple[str, float]] = []
    if not by_kind["dsc"]:
        return out
    best = {k: min(cs, key=t) for k, cs in by_kind.items() if cs}
    d = best["dsc"]
    if "baseline" in best:
        b = best["baseline"]
        out.append((f"speed-up, dsc best ({d.name}) vs baseline best ({b.name}): baseline time / dsc time",
                    t(b) / t(d)))
        for c in by_kind["dsc"]:
            for b2 in by_kind["baseline"]:
                if b2.par == c.par:
                    out.append((f"speed-up at {c.par} process(es): {b2.name} / {c.name}", t(b2) / t(c)))
                    # CPU seconds move less than wall time when the machine is shared.
                    out.append((f"CPU seconds at {c.par} process(es): {b2.name} / {c.name}",
                                summary[b2.name]["cpu_s"] / summary[c.name]["cpu_s"]))
    if "limit" in best:
        lim = best["limit"]
        out.append((f"dsc best ({d.name}) time / limit best ({lim.name}) time (target <= 1.2)", t(d) / t(lim)))
    return out


def markdown(report: dict[str, Any], configs: list[Config]) -> str:
    m, p, s = report["machine"], report["params"], report["summary"]
    loads = [r["load1_before"] for rs in report["runs"].values() for r in rs]
    tok = next((v.get("tokens") for v in s.values() if v.get("tokens")), None)
    lines = [
        f"### n = {p['n']:,} conversations ({'tool-schema system prompts, K = ' + str(p['tool_schemas']) if p['tool_schemas'] else 'plain ReAct'}), "
        f"{_f(tok)} tokens, seed {p['seed']}, median of {p['repeats']}",
        "",
        f"Machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_bytes'] / 2**30:.0f} GiB RAM; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["libs"].items()) + f". Date: {m['date']}.",
        f"Load average (1 min) before each run: min {min(loads):.2f}, median {statistics.median(loads):.2f}, "
        f"max {max(loads):.2f}." if loads else "",
        "",
        "| run | time (s) | rows/s | tokens/s | CPU (s) | peak RSS, tree | peak PSS, tree | peak RSS, one process "
        "| output | same output |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for c in configs:
        v = s.get(c.name)
        if v is None or "error" in v:
            why = (v or {}).get("error") or report["notes"].get(c.kind, "not run")
            lines.append(f"| {c.name} | {why} | | | | | | | | |")
            continue
        same = {True: "yes", False: "**NO**", None: "–"}[v.get("same_output")]
        out = _mib(v["out_bytes"]) if c.kind != "limit" else "none"
        lines.append(
            f"| {c.name} | {v['time_s']:.2f} | {_f(v['rows_per_s'])} | {_f(v['tokens_per_s'])} | {v['cpu_s']:.1f} "
            f"| {_mib(v['peak_rss_tree'])} | {_mib(v['peak_pss_tree'])} | {_mib(v['max_rss_proc'])} | {out} | {same} |")
    lines += ["", "Time: baseline and dsc from process spawn to exit; limit: the `encode_batch` calls only. "
              "Every run's time (s): " + "; ".join(
                  f"{name} " + ", ".join(f"{x:.1f}" for x in v["time_s_all"])
                  for name, v in s.items() if "time_s_all" in v) + "."]
    if report["ratios"]:
        lines += ["", *[f"- {name}: **{x:.2f}×**" for name, x in report["ratios"]]]
    elif "dsc" in report["notes"]:
        lines += ["", f"- dsc ratios: {report['notes']['dsc']}"]
    st = report.get("startup")
    if st:
        lines += ["", "Start-up (1-row corpus, process spawn to exit, median):"]
        lines += [f"- {name}: {v['time_s']:.2f} s" if "time_s" in v else f"- {name}: {v['error']}"
                  for name, v in st.items()]
        for name, v in st.items():
            if v.get("first_read_s") is not None and v.get("first_row_s") is not None:
                lines.append(f"- {name}, 1-row corpus, spawn to the row read and normalised: {v['first_read_s']:.2f} s"
                             f"; tokenised: {v['first_row_s']:.2f} s")
        for c in configs:
            v = s.get(c.name, {})
            if v.get("first_read_s") is not None:
                lines.append(f"- {c.name}, full corpus, spawn to first rows read and normalised: "
                             f"{v['first_read_s']:.2f} s")
            if v.get("first_row_s") is not None:
                lines.append(f"- {c.name}, full corpus, spawn to first tokenised batch: {v['first_row_s']:.2f} s")
    return "\n".join(lines) + "\n"


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="conversations in the corpus")
    p.add_argument("--tool-schemas", type=int, default=0, metavar="K", help="second corpus: K distinct tool schemas")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--observation-role", choices=("tool", "user"), default="tool")
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-proc", type=_ints, default=[1, 2], help="baseline num_proc values, e.g. 1,2")
    p.add_argument("--workers", type=_ints, default=[1, 2], help="dsc --workers values")
    p.add_argument("--limit-threads", type=_ints, default=[1, 2], help="tokenizer threads for the limit")
    p.add_argument("--only", default=",".join(KINDS), help="comma list of baseline,dsc,limit")
    p.add_argument("--no-startup", action="store_true", help="skip the 1-row start-up runs")
    p.add_argument("--work-dir", type=Path, default=BENCH / ".work",
                   help="corpora, tokenizer, scratch outputs and results (default bench/.work)")
    p.add_argument("--json", type=Path, default=None, help="results JSON (default in --work-dir)")
    p.add_argument("--md", type=Path, default=None, help="results markdown (default in --work-dir)")
    p.add_argument("--keep-outputs", action="store_true")
    a = p.parse_args(argv)
    only = {k.strip() for k in a.only.split(",") if k.strip()}
    if not only <= set(KINDS) or a.n < 1 or a.repeats < 1:
        p.error("--only takes baseline,dsc,limit; --n and --repeats must be >= 1")

    work = a.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    notes: dict[str, str] = {}
    dsc_cmd = None
    if "dsc" in only:
        dsc_cmd, why = find_dsc()
        if dsc_cmd is None:
            notes["dsc"] = why
            print(f"dsc: {why}; skipping it", file=sys.stderr)
    pars = {"baseline": a.num_proc, "dsc": a.workers, "limit": a.limit_threads}
    configs = [Config(kind, k) for kind in KINDS if kind in only for k in pars[kind]]
    runnable = [c for c in configs if c.kind != "dsc" or dsc_cmd]

    tokenizer = prepare_tokenizer(work, a.vocab_size)
    need_rendered = "limit" in only
    d = prepare_corpus(work, tokenizer, a.n, a.seed, a.tool_schemas, a.observation_role, need_rendered)
    scratch = work / "scratch"
    print(f"benchmarking {[c.name for c in runnable]} on {d}", file=sys.stderr)
    runs = run_series(runnable, d, a.repeats, scratch, dsc_cmd, a.keep_outputs)

    summary: dict[str, Any] = {}
    expected = None
    for c in runnable:
        summary[c.name] = summarise(runs[c.name], a.n, None)
        if c.kind == "baseline" and expected is None and "error" not in summary[c.name]:
            expected = {k: summary[c.name][k] for k in ("rows", "tokens", "supervised")}
    if expected:
        for c in runnable:
            summary[c.name] = summarise(runs[c.name], a.n, expected)

    startup: dict[str, Any] = {}
    if not a.no_startup:
        one = prepare_corpus(work, tokenizer, 1, a.seed, a.tool_schemas, a.observation_role, need_rendered)
        # One configuration per kind, the smallest parallelism (start-up is not about throughput).
        firsts = [min(cs, key=lambda c: c.par) for kind in KINDS
                  if (cs := [c for c in runnable if c.kind == kind])]
        print("start-up runs on a 1-row corpus", file=sys.stderr)
        sruns = run_series(firsts, one, a.repeats, scratch, dsc_cmd, False)
        for c in firsts:
            v = summarise(sruns[c.name], 1, None)
            # For start-up every kind is timed spawn to exit, the limit included.
            if "error" not in v:
                v["time_s"] = _median([r.wall_s for r in sruns[c.name] if r.error is None])
            startup[c.name] = v

    report = {
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "machine": machine(), "notes": notes, "summary": summary, "startup": startup,
        "ratios": ratios(summary, runnable),
        "runs": {name: [asdict(r) for r in rs] for name, rs in runs.items()},
    }
    md = markdown(report, configs)
    tag = f"n{a.n}-k{a.tool_schemas}"
    (a.json or work / f"results-{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    (a.md or work / f"results-{tag}.md").write_text(md)
    print(md)
    return report


if __name__ == "__main__":
    main()
