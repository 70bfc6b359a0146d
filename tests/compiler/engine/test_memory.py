"""A build's peak memory does not grow with its number of rows: sources are streamed into on-disk
segments, selection reads compact keys, rendering reads rows by number, and the artifact is
written a row group at a time (`dsc.compiler.engine.driver`). Holding the rows as Python objects, as the
build once did, costs several KB per row (about 65 MB more for the larger build below)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import resource, sys
from dsc.compiler.engine.driver import build
build(sys.argv[1], sys.argv[2], workers=1, cache=False)
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_project(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    with open(root / "rows.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [
                {"role": "system", "content": "You are a helpful assistant. " * 8},
                {"role": "user", "content": f"Question number {i}: " + "what is the answer? " * 10},
                {"role": "assistant", "content": f"Thought: row {i} " + "let me think about it. " * 20}]}) + "\n")
    spec = root / "spec.yaml"
    spec.write_text("dsc: 1\nname: mem\nsources:\n  rows: {path: rows.jsonl, format: openai}\ntemplate: chatml\n"
                    "split: {validation: 0.1}\n")
    return spec


def peak_mb(root: Path, n: int) -> float:
    """Peak RSS of a fresh process building n rows (imports and the card's charts included)."""
    spec = make_project(root, n)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(spec), str(root / "out")], capture_output=True,
                         text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("PEAK_KB"))
    return int(line.split()[1]) / 1024


@pytest.mark.slow  # two builds in fresh processes: ~15-30 s
def test_peak_memory_does_not_grow_with_the_number_of_rows(tmp_path):
    small = peak_mb(tmp_path / "small", 1_500)
    large = peak_mb(tmp_path / "large", 12_000)
    # ~12 MB measured (keys, allocator noise); rows held in memory would add ~65 MB.
    assert large - small < 35, f"peak RSS {small:.0f} MB for 1.5k rows, {large:.0f} MB for 12k rows"
