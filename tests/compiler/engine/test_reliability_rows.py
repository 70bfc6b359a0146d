"""Reliability, bad rows: corrupted input rows of every kind end in the quarantine with file, row
and reason (or stop the build with one message), and `read = written + quarantined + filtered`
holds exactly, in the manifest counts, the card and the build summary. A 50 MB row builds, and
its peak memory does not grow with the worker count. See docs/RELIABILITY.md."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dsc.compiler.engine.driver import build
from dsc.compiler.stages.write.card import row_accounting
from dsc.core.errors import BuildError

REPO = Path(__file__).resolve().parents[3]
EXCERPT = REPO / "specs" / "data" / "fireact" / "gpt_format__multitask.excerpt.jsonl"
GOOD = EXCERPT.read_text(encoding="utf-8").splitlines()[:12]
OK_MSGS = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]

# Bad JSONL lines (bytes), one per way a row can be broken for the openai format.
BAD_LINES = {
    "truncated": GOOD[0].encode()[: len(GOOD[0]) // 2],
    "invalid utf-8": b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "raw NUL": b'{"messages": [{"role": "user", "content": "a\x00b"}]}',
    "not an object": b"[1, 2, 3]",
    "a bare string": b'"just text"',
    "messages missing": b'{"conversation": []}',
    "messages a string": b'{"messages": "hello"}',
    "messages an object": b'{"messages": {"role": "user"}}',
    "message a list": b'{"messages": [["user", "hi"]]}',
    "role a number": json.dumps({"messages": [{"role": 5, "content": "x"}, OK_MSGS[1]]}).encode(),
    "role unknown": json.dumps({"messages": [{"role": "wizard", "content": "x"}, OK_MSGS[1]]}).encode(),
    "role missing": json.dumps({"messages": [{"content": "x"}, OK_MSGS[1]]}).encode(),
    "content a number": json.dumps({"messages": [{"role": "user", "content": 7}, OK_MSGS[1]]}).encode(),
    "content an object": json.dumps({"messages": [{"role": "user", "content": {"a": 1}}, OK_MSGS[1]]}).encode(),
    "content list of numbers": json.dumps({"messages": [{"role": "user", "content": [1, 2]}, OK_MSGS[1]]}).encode(),
    "tool_calls a string": json.dumps({"messages": [OK_MSGS[0], {"role": "assistant", "content": "",
                                                                 "tool_calls": "call it"}]}).encode(),
    "tool call arguments a list": json.dumps({"messages": [OK_MSGS[0], {"role": "assistant", "content": None,
                                              "tool_calls": [{"type": "function", "function": {"name": "f",
                                                                                               "arguments": [1]}}]}]}).encode(),
    "tools a string": json.dumps({"messages": OK_MSGS, "tools": "search"}).encode(),
    "empty messages": b'{"messages": []}',
}

SPEC = """\
dsc: 1
name: rows
sources:
  chat: {{path: "data/*.jsonl", format: openai}}
{extra}max_bad_rows: 99%
template: chatml
"""


def write_spec(tmp: Path, extra: str = "") -> Path:
    spec = tmp / "spec.yaml"
    spec.write_text(SPEC.format(extra=extra))
    return spec


def quarantine(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]


def assert_accounted(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    read, written = sum(counts["read"].values()), sum(counts["written"].values())
    assert read == written + counts["quarantined"] + sum(counts["dropped"].values())
    line = row_accounting(counts)
    assert "left out by selection" not in line
    assert f"Row accounting: {line}." in (out / "README.md").read_text()
    return counts


def test_every_corrupted_jsonl_row_is_quarantined_with_file_row_and_reason(tmp_path):
    (tmp_path / "data").mkdir()
    lines = [g.encode() for g in GOOD]
    bad_at = {}
    for i, (what, raw) in enumerate(BAD_LINES.items()):
        bad_at[len(lines)] = what
        lines.append(raw)
        lines.append(GOOD[i % len(GOOD)].encode().replace(b'"content": "', b'"content": "v%d ' % i, 1))
    (tmp_path / "data" / "mixed.jsonl").write_bytes(b"\n".join(lines))  # (no final newline either)
    (tmp_path / "data" / "empty.jsonl").write_bytes(b"")
    out = tmp_path / "out"
    build(write_spec(tmp_path), out, cache=False)

    q = {e["row"] - 1: e for e in quarantine(out) if e["stage"] != "dedup"}  # quarantine rows are 1-based
    assert set(q) == set(bad_at), {bad_at.get(r, r): e["reason"] for r, e in q.items()} | {
        "missed": [bad_at[r] for r in set(bad_at) - set(q)]}
    for row, entry in q.items():
        assert entry["file"] == "data/mixed.jsonl" and entry["source"] == "chat"
        assert entry["reason"] and "Traceback" not in entry["reason"], (bad_at[row], entry)
    counts = assert_accounted(out)
    assert counts["bad_rows"] == len(BAD_LINES)
    assert sum(counts["written"].values()) == len(lines) - len(BAD_LINES) - sum(
        1 for e in quarantine(out) if e["stage"] == "dedup")


def test_a_ragged_csv_row_and_bad_csv_cells(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows.csv").write_text(
        "instruction,input,output\nq1,,a1\nq2,,a2,EXTRA\nq3\nq4,,a4\n", encoding="utf-8")
    spec = tmp_path / "spec.yaml"
    spec.write_text("dsc: 1\nname: csv\nsources:\n  s: {path: data/rows.csv, format: alpaca}\nmax_bad_rows: 99%\n")
    out = tmp_path / "out"
    build(spec, out, cache=False)
    q = quarantine(out)
    assert sorted(e["row"] for e in q) == [2, 3]  # 1-based records (the header is not a record)
    assert all("fields, the header has 3" in e["reason"] for e in q)
    assert assert_accounted(out)["written"] == {"train": 2}


def test_a_parquet_file_with_the_wrong_schema(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", "b", "c"]}), tmp_path / "data" / "wrong.parquet")
    pq.write_table(pa.table({"messages": [json.dumps(OK_MSGS)] * 2}), tmp_path / "data" / "strings.parquet")
    spec = tmp_path / "spec.yaml"
    spec.write_text("dsc: 1\nname: pq\nsources:\n  s: {path: \"data/*.parquet\", format: openai}\n"
                    "max_bad_rows: 99%\n")
    with pytest.raises(BuildError, match="5 of 5 rows were quarantined while reading"):  # one clear message
        build(spec, tmp_path / "out", cache=False)
    (tmp_path / "data" / "good.jsonl").write_text(GOOD[0] + "\n")
    spec.write_text(spec.read_text().replace('"data/*.parquet"', '["data/*.parquet", "data/*.jsonl"]'))
    out = tmp_path / "out"
    build(spec, out, cache=False)
    q = quarantine(out)
    assert {(e["file"], e["row"]) for e in q} == {("data/wrong.parquet", r) for r in range(1, 4)} | {
        ("data/strings.parquet", r) for r in range(1, 3)}
    assert all("messages" in e["reason"] for e in q), [e["reason"] for e in q]
    assert_accounted(out)


def test_only_bad_rows_stop_the_build_with_one_message(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bad.jsonl").write_bytes(b"\n".join(BAD_LINES.values()))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(extra="").replace("max_bad_rows: 99%", "max_bad_rows: 2"))
    with pytest.raises(BuildError) as e:
        build(spec, tmp_path / "out", cache=False)
    assert "\n" not in str(e.value).strip() or str(e.value).count("\n") < 8
    assert re.search(r"\d+ bad rows", str(e.value)) or "bad" in str(e.value)
    assert not (tmp_path / "out").exists()


PEAK_CHILD = """
import json, sys, threading, time, psutil
from dsc.compiler.engine.driver import build
peak = {"total": 0, "driver": 0, "worker": 0}
stop = threading.Event()
def sample():
    me = psutil.Process()
    while not stop.is_set():
        try:
            own = me.memory_info().rss
            workers = [c.memory_info().rss for c in me.children(recursive=True)]
        except psutil.Error:
            continue
        peak["total"] = max(peak["total"], own + sum(workers))
        peak["driver"] = max(peak["driver"], own)
        peak["worker"] = max([peak["worker"], *workers])
        time.sleep(0.02)
t = threading.Thread(target=sample, daemon=True); t.start()
r = build(sys.argv[1], sys.argv[2], workers=int(sys.argv[3]), cache=False)
stop.set(); t.join()
print(json.dumps({"peak": peak, "written": r.written}))
"""


def _peak(spec: Path, out: Path, workers: int) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(spec), str(out), str(workers)],
                          capture_output=True, text=True, timeout=300, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["peak"], result["written"]


def test_a_50_mb_row_builds_and_only_the_task_holding_it_pays(tmp_path):
    for name in ("small", "big"):
        (tmp_path / name / "data").mkdir(parents=True)
    big = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "z" * (50 << 20)}]}
    (tmp_path / "small" / "data" / "rows.jsonl").write_text("\n".join(GOOD) + "\n")
    with open(tmp_path / "big" / "data" / "rows.jsonl", "w") as f:
        f.write("\n".join(GOOD[:6]) + "\n" + json.dumps(big) + "\n" + "\n".join(GOOD[6:]) + "\n")
    peaks = {}
    for name in ("small", "big"):
        spec = write_spec(tmp_path / name)
        for workers in (1, 2):
            out = tmp_path / name / f"out{workers}"
            peaks[name, workers], written = _peak(spec, out, workers)
            assert sum(written.values()) == len(GOOD) + (name == "big")
            assert_accounted(out)
    mib = {k: {p: round(v / 2**20) for p, v in peak.items()} for k, peak in peaks.items()}
    print(f"peak RSS (MiB: the tree, the driver, the largest worker): {mib}")
    # The driver never holds rows: with workers, the 50 MB row does not reach its memory.
    assert peaks["big", 2]["driver"] < peaks["small", 2]["driver"] + (32 << 20), mib
    # The row costs the task that holds it: no worker needs more than the whole 1-worker build.
    assert peaks["big", 2]["worker"] < peaks["big", 1]["total"], mib
    assert peaks["big", 1]["total"] - peaks["small", 1]["total"] < 8 * (50 << 20), mib  # a few copies at most