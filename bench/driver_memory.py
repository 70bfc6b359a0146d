"""The build driver's peak RSS, stage by stage: one cold build (no cache) of SPEC in this process,
a thread sampling this process's RSS every 20 ms and charging each sample to the progress stage
running then ("after X": between X's end and the next stage's start). Workers are other processes
and are not counted: this is what the driver itself holds as the corpus grows.

    .venv/bin/python bench/driver_memory.py bench/.work/corpus-n20000-s0-k0-tool-tokenizer-v16000/spec.yaml
    .venv/bin/python bench/driver_memory.py SPEC --workers 2 --json out.json

The corpora are `bench/run.py`'s (`make_corpus.py`); a 1M-row plain build takes about 7 minutes on
2 cores.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil

from _common import set_offline  # bench/ is the script's directory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    set_offline()
    from dsc.compiler.engine.driver import build
    from dsc.compiler.engine.progress import Progress

    me = psutil.Process()
    state: dict = {"stage": "setup", "peak": {}}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = me.memory_info().rss
            peak = state["peak"]
            peak[state["stage"]] = max(peak.get(state["stage"], 0), rss)
            time.sleep(0.02)

    class Stages(Progress):
        def start(self, stage: str, total: int | None = None) -> None:
            state["stage"] = stage

        def done(self) -> None:
            state["stage"] = f"after {state['stage']}"

    threading.Thread(target=sample, daemon=True).start()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        build(a.spec, Path(out) / "artifact", workers=a.workers, progress=Stages(), cache=False)
    seconds = time.perf_counter() - t
    time.sleep(0.05)
    stop.set()
    mib = {k: v / 2**20 for k, v in state["peak"].items()}
    for stage, m in mib.items():
        print(f"{m:8.0f} MiB  {stage}")
    print(f"{max(mib.values()):8.0f} MiB  peak ({seconds:.0f} s, --workers {a.workers})")
    if a.json:
        Path(a.json).write_text(json.dumps({"spec": a.spec, "workers": a.workers, "seconds": seconds,
                                            "peak_mib": max(mib.values()), "by_stage_mib": mib}, indent=1))


if __name__ == "__main__":
    main()
