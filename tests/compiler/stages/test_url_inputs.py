"""Sources at fsspec URLs: `path: s3://…` (or gs://, az://, hf://, file://…) reads through fsspec.

A remote store is simulated two ways: `file://` URLs (a real fsspec protocol every worker process
reads, so a parallel build uses them) and `memory://` (fsspec's in-process store: not local files
at all, so globbing, sizes, hashes, seeks and ranged reads go through fsspec's API; used inline,
with one worker)."""
from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.compiler.stages.read.ranges import plan_ranges, read_range, scan_file, scan_tasks
from dsc.compiler.stages.read.sources import iter_raw_rows, resolve_files
from dsc.core.errors import SpecError
from dsc.spec.sources import SourceSpec

REPO = Path(__file__).resolve().parents[3]
EXCERPT = REPO / "specs" / "data" / "fireact" / "gpt_format__multitask.excerpt.jsonl"

SPEC = """\
dsc: 1
name: t
seed: 7
sources:
  chat:
    path: {chat}
    format: openai
  alpaca:
    path: {alpaca}
    format: alpaca
template: chatml
loss: assistant
split: {{validation: 0.2}}
output: {{shard_rows: 25, row_group_rows: 10}}
"""


def scanned(name, spec, base, target=None):
    """The source's files as the build scans them (cut for ranges of `target` bytes, if given)."""
    return [scan_file(t) for t in scan_tasks(name, spec, base, 1 if target else None, target)]


def alpaca_rows(n: int) -> list[dict]:
    return [{"instruction": f"question {i}", "input": "", "output": f"answer {i}"} for i in range(n)]


def parquet_bytes(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf, row_group_size=7)
    return buf.getvalue()


def local_inputs(root: Path) -> None:
    lines = EXCERPT.read_text().splitlines()
    (root / "data").mkdir(parents=True)
    (root / "data" / "a.jsonl").write_text("\n".join(lines[:30]) + "\n")
    (root / "data" / "b.jsonl").write_text("\n".join(lines[30:]) + "\n")
    (root / "data" / "c.parquet").write_bytes(parquet_bytes(alpaca_rows(40)))


@pytest.fixture
def memory_root():
    """A fresh directory in fsspec's in-process memory store, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/dsc-test-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)


def artifact_rows(out: Path) -> list[dict]:
    """The artifact's rows, without the input file names (a URL or a path)."""
    rows = []
    for shard in sorted((out / "data").rglob("*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            row["meta"]["provenance"].pop("file")
            rows.append(row)
    return rows


def test_file_urls_build_what_local_paths_build_with_workers(tmp_path):
    local_inputs(tmp_path)
    data = (tmp_path / "data").as_uri()
    (tmp_path / "local.yaml").write_text(SPEC.format(chat="data/*.jsonl", alpaca="data/c.parquet"))
    (tmp_path / "url.yaml").write_text(SPEC.format(chat=f"{data}/*.jsonl", alpaca=f"{data}/c.parquet"))
    local = build(tmp_path / "local.yaml", tmp_path / "out-local", cache=False)
    url = build(tmp_path / "url.yaml", tmp_path / "out-url", workers=2, cache=False)
    assert artifact_rows(tmp_path / "out-local") == artifact_rows(tmp_path / "out-url")
    assert len(artifact_rows(tmp_path / "out-url")) == sum(url.written.values()) > 40
    # the manifest pins the same bytes under the URL names
    by_name = {(i["source"], i["path"].rsplit("/", 1)[-1]): (i["size"], i["sha256"]) for i in local.manifest["inputs"]}
    assert {(i["source"], i["path"].rsplit("/", 1)[-1]): (i["size"], i["sha256"])
            for i in url.manifest["inputs"]} == by_name
    assert all(i["path"].startswith("file:///") for i in url.manifest["inputs"])
    row = pq.read_table(next((tmp_path / "out-url" / "data").rglob("*.parquet"))).to_pylist()[0]
    assert row["meta"]["provenance"]["file"].startswith(data)


def test_a_memory_store_is_read_through_fsspec(tmp_path, memory_root):
    fs, root = memory_root
    local_inputs(tmp_path)
    for p in (tmp_path / "data").iterdir():
        fs.pipe(f"{root}/data/{p.name}", p.read_bytes())
    fs.pipe(f"{root}/data/skip.txt", b"not matched")
    url = f"memory://{root}/data"
    (tmp_path / "local.yaml").write_text(SPEC.format(chat="data/*.jsonl", alpaca="data/c.parquet"))
    (tmp_path / "mem.yaml").write_text(SPEC.format(chat=f"{url}/*.jsonl", alpaca=f"{url}/c.parquet"))
    local = build(tmp_path / "local.yaml", tmp_path / "out-local", cache=False)
    mem = build(tmp_path / "mem.yaml", tmp_path / "out-mem", cache=False)
    assert artifact_rows(tmp_path / "out-local") == artifact_rows(tmp_path / "out-mem")
    assert sorted(i["sha256"] for i in mem.manifest["inputs"]) == sorted(i["sha256"] for i in local.manifest["inputs"])
    assert [i["path"] for i in mem.manifest["inputs"]] == [
        f"memory://{root}/data/c.parquet", f"memory://{root}/data/a.jsonl", f"memory://{root}/data/b.jsonl"]


def test_ranges_of_a_remote_jsonl_read_what_the_whole_file_reads(memory_root):
    fs, root = memory_root
    lines = [json.dumps({"i": i, "pad": "x" * (i % 37)}) for i in range(400)] + ["{broken", "", "[1]"]
    fs.pipe(f"{root}/big.jsonl", ("\n".join(lines) + "\n").encode())
    spec = SourceSpec(path=f"memory://{root}/big.jsonl", format="openai")
    whole = [(r.row, r.data, r.error) for r in iter_raw_rows("s", spec, ".")]
    for target in (97, 1000, 4096):
        ranges = plan_ranges("s", spec, scanned("s", spec, ".", target))
        assert len(ranges) > 1 and {r.kind for r in ranges} == {"lines"}
        got = [(p.row, p.data, p.error) for r in ranges for raw in read_range(r, spec, Path("."))
               if (p := raw.parsed()) is not None]
        assert got == whole


def test_a_remote_parquet_is_cut_into_row_group_runs(memory_root):
    fs, root = memory_root
    fs.pipe(f"{root}/t.parquet", parquet_bytes(alpaca_rows(100)))
    spec = SourceSpec(path=f"memory://{root}/t.parquet", format="alpaca")
    ranges = plan_ranges("s", spec, scanned("s", spec, ".", 500))
    assert len(ranges) > 1 and {r.kind for r in ranges} == {"row_groups"}
    rows = [raw.data["instruction"] for r in ranges for raw in read_range(r, spec, Path("."))]
    assert rows == [f"question {i}" for i in range(100)]


def test_a_remote_datasets_directory_has_one_hash_over_its_files(tmp_path, memory_root):
    import datasets

    fs, root = memory_root
    local = tmp_path / "ds"
    datasets.Dataset.from_list(alpaca_rows(12)).save_to_disk(str(local))
    for p in local.iterdir():
        fs.pipe(f"{root}/ds/{p.name}", p.read_bytes())
    remote = SourceSpec(path=f"memory://{root}/ds", format="alpaca")
    (scan,) = scanned("s", remote, ".")
    (local,) = scanned("s", SourceSpec(path="ds", format="alpaca"), tmp_path)
    assert (scan.size, scan.sha256) == (local.size, local.sha256)
    assert [r.data["instruction"] for r in iter_raw_rows("s", remote, ".")] == [f"question {i}" for i in range(12)]


def test_missing_remote_files_are_spec_errors(memory_root):
    fs, root = memory_root
    fs.pipe(f"{root}/dir/x.txt", b"")
    with pytest.raises(SpecError, match="does not exist"):
        resolve_files(SourceSpec(path=f"memory://{root}/nope.jsonl", format="openai"), ".")
    with pytest.raises(SpecError, match="matches no file"):
        resolve_files(SourceSpec(path=f"memory://{root}/*.jsonl", format="openai"), ".")
    with pytest.raises(SpecError, match="not a `datasets` save_to_disk directory"):
        resolve_files(SourceSpec(path=f"memory://{root}/dir", type="arrow", format="openai"), ".")


def _uninstalled_protocol() -> str:
    import importlib.util

    for protocol, package in (("gs", "gcsfs"), ("s3", "s3fs"), ("az", "adlfs"), ("oci", "ocifs")):
        if importlib.util.find_spec(package) is None:
            return protocol
    pytest.skip("every cloud file system package is installed")


@pytest.mark.parametrize("url, message", [
    ("htps://example.org/data.jsonl", "unknown URL protocol 'htps://' (did you mean 'https'?)"),
    (None, "needs a package that is not installed"),
])
def test_cli_names_the_line_of_a_url_it_cannot_read(tmp_path, url, message):
    url = url or f"{_uninstalled_protocol()}://bucket/data.jsonl"
    local_inputs(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(chat=url, alpaca="data/c.parquet"))
    result = CliRunner().invoke(app, ["build", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "spec.yaml:6" in result.output and "Traceback" not in result.output


class _RangeFile(AbstractBufferedFile):
    """A file served by byte ranges, as object stores serve them (fsspec's buffered file)."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.blobs[self.path][start:end]

    def read(self, length: int = -1) -> bytes:
        data = super().read(length)
        self.fs.bytes_read += len(data)
        return data


class _RangeFS(AbstractFileSystem):
    """An object store in memory whose files are fsspec's AbstractBufferedFile (like s3fs's)."""

    protocol = "rangestore"
    blobs: dict[str, bytes] = {}
    bytes_read = 0

    def _open(self, path, mode="rb", block_size=None, **kwargs):
        return _RangeFile(self, path, mode, block_size=block_size or 5 << 20, size=len(self.blobs[path]))

    def info(self, path, **kwargs):
        path = self._strip_protocol(path)
        if path in self.blobs:
            return {"name": path, "size": len(self.blobs[path]), "type": "file"}
        raise FileNotFoundError(path)

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path).rstrip("/")
        found = [self.info(p) for p in sorted(self.blobs) if p.rsplit("/", 1)[0] == path]
        return found if detail else [f["name"] for f in found]


def test_a_remote_jsonl_is_read_in_chunks_not_a_block_per_line():
    """fsspec's buffered files read (and copy) a whole block for each readline: a 16 MB JSONL
    of 20k lines would move 100 GB. Reading it must move about its own size."""
    fsspec.register_implementation("rangestore", _RangeFS, clobber=True)
    data = ("\n".join(json.dumps({"i": i, "pad": "x" * 800}) for i in range(20_000)) + "\n").encode()
    _RangeFS.blobs = {"bucket/big.jsonl": data}
    fs = fsspec.filesystem("rangestore")
    fs.bytes_read = 0
    spec = SourceSpec(path="rangestore://bucket/big.jsonl", format="openai")
    (scan,) = scanned("s", spec, ".", 1 << 20)
    assert scan.sha256 == hashlib.sha256(data).hexdigest() and len(scan.lines) > 10
    assert fs.bytes_read <= 2 * len(data)  # one pass hashes it and finds its cuts
    fs.bytes_read = 0
    rows = [raw.data["i"] for raw in iter_raw_rows("s", spec, ".", known_sha256={scan.file.display: scan.sha256})]
    assert rows == list(range(20_000))
    assert fs.bytes_read <= 2 * len(data)


def test_a_store_error_while_reading_is_one_line_naming_the_source(tmp_path):
    """A remote store raises its own exception types (here not an OSError): still one line."""

    class _Failing(_RangeFile):
        def _fetch_range(self, start: int, end: int) -> bytes:
            raise RuntimeError("server hung up")

    class _FailingFS(_RangeFS):
        protocol = "failingstore"

        def _open(self, path, mode="rb", block_size=None, **kwargs):
            return _Failing(self, path, mode, block_size=block_size or 5 << 20, size=len(self.blobs[path]))

    fsspec.register_implementation("failingstore", _FailingFS, clobber=True)
    _FailingFS.blobs = {"bucket/a.jsonl": b'{"x": 1}\n'}
    local_inputs(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(chat="failingstore://bucket/a.jsonl", alpaca="data/c.parquet"))
    result = CliRunner().invoke(app, ["build", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "source 'chat': cannot read failingstore://bucket/a.jsonl: RuntimeError: server hung up" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_a_dangling_link_in_a_glob_is_a_located_spec_error(tmp_path):
    local_inputs(tmp_path)
    (tmp_path / "data" / "z.jsonl").symlink_to(tmp_path / "data" / "gone.jsonl")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(chat="data/*.jsonl", alpaca="data/c.parquet"))
    result = CliRunner().invoke(app, ["build", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "spec.yaml:5" in result.output and "gone.jsonl" in result.output and "Traceback" not in result.output


def test_a_remote_globs_files_are_sized_by_its_listing_not_a_request_each(memory_root, monkeypatch):
    """Sizing the inputs of `s3://bucket/runs/*.jsonl` must not ask the store once per file after
    the glob's listing gave every size (a serial request per file on the driver)."""
    fs, root = memory_root
    for i in range(5):
        fs.pipe(f"{root}/runs/r{i}.jsonl", (json.dumps({"i": i}) + "\n").encode() * (i + 1))
    asked: list[str] = []
    info = type(fs).info

    def counted_info(self, path, **kw):
        asked.append(path)
        return info(self, path, **kw)

    monkeypatch.setattr(type(fs), "info", counted_info)
    spec = SourceSpec(path=f"memory://{root}/runs/*.jsonl", format="openai")
    tasks = scan_tasks("s", spec, ".", 1)
    assert [t.size for t in tasks] == [len((json.dumps({"i": i}) + "\n").encode()) * (i + 1) for i in range(5)]
    assert not [p for p in asked if p.endswith(".jsonl")]
    assert [scan_file(t).size for t in tasks] == [t.size for t in tasks]  # the scan checks the listed size
