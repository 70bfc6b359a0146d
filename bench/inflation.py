"""Benchmark: what the file exchange of the partitioned build costs in work.

The build moves rows between its phases only through files (segment pieces, rendered parts,
route buckets, shards) so that every phase runs as independent tasks. This measures the work
that adds: `dsc build --workers 1 --no-cache` (every task inline, one process, so wall and CPU
seconds are the build's whole work) of this checkout against the same build of a baseline commit
(`--baseline`, default the last commit before the partitioned phases), on the same corpora,
interleaved, each run its own process; the artifacts must be byte-identical.

    python bench/inflation.py                          # plain 20k and tool-schema 5k corpora, 3 rounds
    python bench/inflation.py --n-plain 2000 --n-tool 500 --repeats 1   # a quick look

Inflation = median seconds of this checkout / median seconds of the baseline (goal ≤ 1.3×).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import run as bench_run  # noqa: E402  (corpora and tokenizer, as the main bench makes them)
from executors import artifact_hashes  # noqa: E402

BASELINE = "4048440"  # main before the partitioned phases (issue 22)


def baseline_tree(work: Path, commit: str) -> Path:
    """The baseline commit's sources, unpacked once (git archive)."""
    tree = work / f"src-{commit}"
    if not (tree / "src" / "dsc").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = work / f"src-{commit}.tar"
        subprocess.run(["git", "archive", "-o", str(archive), commit], cwd=REPO, check=True)
        with tarfile.open(archive) as t:
            t.extractall(tree, filter="data")
        archive.unlink()
    return tree / "src"


def one_build(src: Path, spec: Path, out: Path) -> dict[str, float]:
    """A `dsc build --workers 1 --no-cache` of `spec` with the package at `src`: wall and CPU s."""
    env = {**os.environ, "PYTHONPATH": str(src), "DSC_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "dsc", "build", str(spec), "--out", str(out), "--workers", "1",
                        "--no-cache"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"build failed ({src}):\n{r.stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-plain", type=int, default=20000)
    p.add_argument("--n-tool", type=int, default=5000)
    p.add_argument("--tool-schemas", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--baseline", default=BASELINE)
    p.add_argument("--work-dir", type=Path, default=BENCH / ".work")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    work = a.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    tok = bench_run.prepare_tokenizer(work, 16000)
    corpora = {"plain": bench_run.prepare_corpus(work, tok, a.n_plain, 0, 0, "tool", False),
               "tool schemas": bench_run.prepare_corpus(work, tok, a.n_tool, 0, a.tool_schemas, "tool", False)}
    trees = {"baseline": baseline_tree(work, a.baseline), "this checkout": REPO / "src"}
    runs: dict[str, dict[str, list[dict[str, float]]]] = {c: {t: [] for t in trees} for c in corpora}
    for rep in range(a.repeats):
        for corpus, d in corpora.items():
            hashes = {}
            for tree, src in trees.items():
                out = work / "inflation-out" / f"{corpus.replace(' ', '-')}-{tree.replace(' ', '-')}"
                runs[corpus][tree].append(one_build(src, d / "spec.yaml", out))
                hashes[tree] = artifact_hashes(out)
            if hashes["baseline"] != hashes["this checkout"]:
                raise SystemExit(f"{corpus}: the artifacts differ")
            print(f"round {rep + 1} {corpus}: " + ", ".join(f"{t} {runs[corpus][t][-1]['wall_s']:.2f} s"
                                                         for t in trees), file=sys.stderr)
    report = {"baseline": a.baseline, "n_plain": a.n_plain, "n_tool": a.n_tool, "repeats": a.repeats, "corpora": {}}
    print("| corpus | baseline wall s | this checkout wall s | inflation (wall) | baseline CPU s | "
          "this checkout CPU s | inflation (CPU) |\n|---|---:|---:|---:|---:|---:|---:|")
    for corpus, by_tree in runs.items():
        med = {t: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s")} for t, rs in by_tree.items()}
        b, n = med["baseline"], med["this checkout"]
        report["corpora"][corpus] = {"median": med, "runs": by_tree,
                                     "inflation_wall": n["wall_s"] / b["wall_s"], "inflation_cpu": n["cpu_s"] / b["cpu_s"]}
        print(f"| {corpus} | {b['wall_s']:.2f} | {n['wall_s']:.2f} | {n['wall_s'] / b['wall_s']:.2f}× | "
              f"{b['cpu_s']:.2f} | {n['cpu_s']:.2f} | {n['cpu_s'] / b['cpu_s']:.2f}× |")
    path = a.json or BENCH / "results" / f"inflation-plain{a.n_plain}-tool{a.n_tool}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"(byte-identical artifacts in every round; results in {path})")


if __name__ == "__main__":
    main()
