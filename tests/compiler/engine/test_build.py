"""The build: artifact layout, determinism, versioning, quarantine, atomic replacement."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.core.errors import BuildError

REPO = Path(__file__).resolve().parents[3]
EXCERPT = REPO / "specs" / "data" / "fireact" / "gpt_format__multitask.excerpt.jsonl"

SPEC = """\
dsc: 1
name: t
seed: 7
sources:
  chat:
    path: {path}
    format: openai
    tags: {{task: hotpotqa, method: react}}
template: chatml
loss: assistant
split: {{validation: 0.2}}
max_bad_rows: 2
output: {{shard_rows: 25, row_group_rows: 10}}
"""


def make_spec(tmp: Path, path: str = "data/*.jsonl", extra: str = "") -> Path:
    spec = tmp / "spec.yaml"
    spec.write_text(SPEC.format(path=path) + extra)
    return spec


def split_excerpt(tmp: Path, names=("a.jsonl", "b.jsonl")) -> list[Path]:
    lines = EXCERPT.read_text().splitlines()
    (tmp / "data").mkdir(exist_ok=True)
    half = len(lines) // 2
    out = []
    for name, part in zip(names, (lines[:half], lines[half:])):
        p = tmp / "data" / name
        p.write_text("\n".join(part) + "\n")
        out.append(p)
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_artifact_layout_and_loading(tmp_path):
    split_excerpt(tmp_path)
    result = build(make_spec(tmp_path), tmp_path / "out")
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "assets", "chat_template.jinja", "data", "manifest.json", "quarantine.jsonl"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == result.manifest["version"] and len(manifest["version"]) == 16
    assert manifest["counts"]["read"] == {"chat": 60}
    written = manifest["counts"]["written"]
    assert written["train"] + written.get("validation", 0) == 60 and written.get("validation", 0) > 0
    assert set(manifest["files"]) == {str(p.relative_to(out)) for p in (out / "data").iterdir()}
    assert manifest["template"]["sha256"] and manifest["inputs"][0]["sha256"]
    # three shards of <= 25 rows for the train split
    shards = sorted((out / "data").glob("train-*.parquet"))
    assert [s.name for s in shards][0].startswith("train-00000-of-")
    table = pq.read_table(shards[0])
    for col in ("id", "group", "messages", "tools", "meta", "text", "loss_spans"):
        assert col in table.column_names
    row = table.slice(0, 1).to_pylist()[0]
    assert row["meta"]["task"] == "hotpotqa" and row["meta"]["source"] == "chat"
    for a, b in row["loss_spans"]:
        assert row["text"][b - len("<|im_end|>"):b] == "<|im_end|>"
    from datasets import load_dataset

    ds = load_dataset("parquet", data_dir=str(out / "data"))
    assert ds["train"].num_rows == written["train"]
    assert "configs:" in (out / "README.md").read_text()


def test_byte_identical_across_runs_workers_and_file_order(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    split_excerpt(a)
    build(make_spec(a), a / "out1")
    build(make_spec(a), a / "out2", workers=2)
    assert tree_bytes(a / "out1") == tree_bytes(a / "out2")
    # the same rows, split over files named (and so listed) the other way round
    b = tmp_path / "b"
    b.mkdir()
    split_excerpt(b, names=("z.jsonl", "y.jsonl"))
    build(make_spec(b), b / "out")
    m1 = json.loads((a / "out1" / "manifest.json").read_text())
    m2 = json.loads((b / "out" / "manifest.json").read_text())
    # data rows are identical (provenance names differ, so compare without it)
    def rows(root):
        out = {}
        for p in sorted((root / "data").glob("*.parquet")):
            for r in pq.read_table(p).to_pylist():
                r["meta"]["provenance"] = None
                out[r["id"]] = r
        return out
    assert rows(a / "out1") == rows(b / "out")
    assert m1["counts"]["written"] == m2["counts"]["written"]


def test_one_byte_change_changes_version(tmp_path):
    files = split_excerpt(tmp_path)
    v1 = build(make_spec(tmp_path), tmp_path / "o1").manifest["version"]
    assert build(make_spec(tmp_path), tmp_path / "o2").manifest["version"] == v1
    data = files[0].read_bytes()
    i = data.index(b"American")
    files[0].write_bytes(data[:i] + b"b" + data[i + 1:])
    assert build(make_spec(tmp_path), tmp_path / "o3").manifest["version"] != v1
    files[0].write_bytes(data)
    assert build(make_spec(tmp_path, extra="description: changed\n"), tmp_path / "o4").manifest["version"] != v1


def test_broken_line_goes_to_quarantine(tmp_path):
    files = split_excerpt(tmp_path)
    with open(files[0], "a") as f:
        f.write('{"messages": [{"role": "user", "content": "x"}\n')  # broken JSON
        f.write('{"messages": []}\n')  # empty conversation
    result = build(make_spec(tmp_path), tmp_path / "out")
    q = [json.loads(l) for l in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert len(q) == 2 == result.quarantined
    assert {e["row"] for e in q} == {31, 32}  # 1-based: the lines of the file
    assert all(e["file"] == "data/a.jsonl" and e["reason"] for e in q)
    broken = next(e for e in q if e["stage"] == "read")
    assert broken["reason"].startswith("broken JSON on line 31: ")
    assert broken["raw"] == '{"messages": [{"role": "user", "content": "x"}'  # the line as read, not the error
    assert sum(result.written.values()) == 60


def test_too_many_bad_rows_fails_the_build(tmp_path):
    files = split_excerpt(tmp_path)
    with open(files[0], "a") as f:
        for _ in range(3):
            f.write("not json\n")
    with pytest.raises(BuildError, match="max_bad_rows"):
        build(make_spec(tmp_path), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    runner = CliRunner()
    result = runner.invoke(app, ["build", str(make_spec(tmp_path)), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "max_bad_rows" in result.output and "Traceback" not in result.output


def test_cli_build_prints_summary(tmp_path):
    split_excerpt(tmp_path)
    result = CliRunner().invoke(app, ["build", str(make_spec(tmp_path)), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "version" in result.output and "train" in result.output and "supervised" in result.output


def test_cli_build_timings_name_every_stage_in_order(tmp_path):
    split_excerpt(tmp_path)
    # --no-cache: rows served by the cache would report no "first rows" for reading and rendering
    result = CliRunner().invoke(app, ["build", str(make_spec(tmp_path)), "--out", str(tmp_path / "out"), "--timings",
                                      "--no-cache"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = lines.index("timings (seconds since the process started):")
    events = []
    for line in lines[at + 1:]:
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[0].replace(".", "").isdigit():
            break
        events.append((float(parts[0]), parts[1]))
    stages = ["scan inputs", "read + normalise", "select", "render + tokenise", "tally", "route rows", "write shards"]
    expected = [f"{s}: {e}" for s in stages for e in ("started", "first rows", "done")]
    expected += ["write manifest and card: started", "write manifest and card: done"]  # no rows to count
    assert [what for _, what in events] == expected + ["artifact in place"]
    times = [t for t, _ in events]
    assert times == sorted(times) and times[0] > 0


def test_process_age_counts_from_process_start():
    import time

    from dsc.compiler.engine.timings import process_age

    a = process_age()
    time.sleep(0.05)
    assert 0.04 <= process_age() - a < 1.0 and a > 0


def test_failed_build_leaves_previous_artifact_untouched(tmp_path, monkeypatch):
    split_excerpt(tmp_path)
    out = tmp_path / "out"
    build(make_spec(tmp_path), out)
    before = tree_bytes(out)
    from dsc.compiler.stages.write import artifact

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifact, "write_jsonl", crash)
    with pytest.raises(KeyboardInterrupt):
        build(make_spec(tmp_path, extra="description: other\n"), out)
    assert tree_bytes(out) == before
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_killed_build_leaves_previous_artifact_untouched(tmp_path):
    split_excerpt(tmp_path)
    out = tmp_path / "out"
    build(make_spec(tmp_path), out)
    before = tree_bytes(out)
    marker = tmp_path / "writing"
    # A child build that stops (and is SIGKILLed) after writing its first shard.
    child = f"""
import time, pathlib
from dsc.compiler.stages.write import artifact
from dsc.compiler.engine import driver as build
real = artifact.write_shard
def slow(*a, **k):
    real(*a, **k)
    pathlib.Path({str(marker)!r}).write_text("x")
    time.sleep(60)
artifact.write_shard = slow
build.build({str(make_spec(tmp_path, extra='description: other' + chr(10)))!r}, {str(out)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", child], env={**os.environ})
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, "child exited early"
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert tree_bytes(out) == before
    assert list(tmp_path.glob(".out.tmp-*"))  # the half-written temporary, not the artifact
    build(make_spec(tmp_path), out)  # the next build cleans stale temporaries up
    assert not list(tmp_path.glob(".out.tmp-*"))
    assert tree_bytes(out) == before


def test_refuses_to_replace_a_non_artifact_directory(tmp_path):
    split_excerpt(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(BuildError, match="not a dsc artifact"):
        build(make_spec(tmp_path), out)
    assert (out / "precious.txt").read_text() == "keep me"


def test_full_fireact_multitask_file(tmp_path, fireact_dir):
    spec = make_spec(tmp_path, path=str(fireact_dir / "gpt_format__multitask.jsonl")).read_text()
    spec = spec.replace("max_bad_rows: 2", "max_bad_rows: 0").replace("shard_rows: 25", "shard_rows: 1000")
    (tmp_path / "spec.yaml").write_text(spec)
    result = build(tmp_path / "spec.yaml", tmp_path / "out", workers=2)
    m = result.manifest["counts"]
    assert m["read"] == {"chat": 1344}
    # every row is written, or in quarantine with its reason (exact duplicates included)
    assert sum(result.written.values()) + result.quarantined == 1344
    assert m["bad_rows"] == 0
    q = [json.loads(l) for l in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert len(q) == result.quarantined and all(e["reason"] for e in q)
    assert sum(m["duplicates_removed"].values()) == sum(1 for e in q if e["stage"] == "dedup")


def test_a_build_reads_each_input_file_once_for_its_hash(tmp_path, monkeypatch):
    """The manifest's input hashes serve the rows' provenance: a multi-GB input is not hashed twice."""
    from collections import Counter

    from dsc.compiler.stages.read import ranges, sources

    split_excerpt(tmp_path)
    scanned: Counter[str] = Counter()
    rehashed: Counter[str] = Counter()
    scan, sha256_file = ranges.scan_file, sources.sha256_file
    monkeypatch.setattr(ranges, "scan_file", lambda task: (scanned.update([task.file.display]), scan(task))[1])
    monkeypatch.setattr(sources, "sha256_file", lambda path: (rehashed.update([str(path)]), sha256_file(path))[1])
    result = build(make_spec(tmp_path), tmp_path / "out", cache=False)
    assert scanned == {"data/a.jsonl": 1, "data/b.jsonl": 1} and not rehashed, (scanned, rehashed)
    shas = {i["sha256"] for i in result.manifest["inputs"]}
    rows = pq.read_table(next((tmp_path / "out" / "data").glob("train-*.parquet"))).column("meta").to_pylist()
    assert {m["provenance"]["file_sha256"] for m in rows} <= shas


def test_cli_build_timings_say_which_tokenizer_fast_paths_ran(tmp_path):
    from artifact_helpers import make_project
    from tiny import make_tokenizer

    tok = make_tokenizer(tmp_path / "tok")
    spec = make_project(tmp_path / "p", rows=10, extra=f"tokenize: {{tokenizer: {tok}}}\n")
    result = CliRunner().invoke(app, ["build", str(spec), "--out", str(tmp_path / "out"), "--timings"])
    assert result.exit_code == 0, result.output
    assert "tokenizer: segment reuse on; offsets from ids" in result.output
