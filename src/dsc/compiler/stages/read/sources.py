"""Sources: the spec's `sources:` entries, reading their rows (streamed), and normalising a
raw row into the canonical `Conversation`.

Reading never holds a whole corpus as Python objects: JSONL is read line by line, JSON arrays
and objects-of-rows are parsed incrementally (ijson), CSV by the `csv` module, Parquet in record
batches, `datasets` save_to_disk directories memory-mapped, hub datasets in streaming mode.

Files are matched from `path` (files or glob patterns relative to the spec's directory) and
always read in sorted order, so the order in which they are listed or stored never matters.
A row that cannot be parsed (a broken JSONL line, a CSV record with the wrong number of
fields) becomes a `RawRow` with `error` set, and the build quarantines it; a file that cannot
be read at all is a `BuildError`; a path that matches nothing is a `SpecError`.
"""
from __future__ import annotations

import codecs
import csv
import glob
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dsc.compiler.stages.read.formats.common import kind
from dsc.core.canonical import content_hash
from dsc.core.environment import flags_set
from dsc.core.errors import BuildError, DscError, SpecError, allowed_list, did_you_mean
from dsc.core.files import files_under
from dsc.core.hashing import sha256_bytes, sha256_file, sha256_files, sha256_listing, sha256_stream
from dsc.record import MISSING, BadRow, Conversation, Meta, Provenance, get_path
from dsc.spec.registries import get_format
from dsc.spec.sources import EXTENSIONS, SOURCE_TYPES, HubSource, SourceSpec

# Field path of the key of a row in a JSON object-of-rows (`{"key": {...row...}, ...}`).
KEY_FIELD = "__key__"
# `save_to_disk` writes these; `state.json` also holds a path/mtime-dependent fingerprint, so
# it is left out of a directory's hash (the data files and dataset_info.json are hashed).
ARROW_MARKERS = ("dataset_info.json", "state.json")
UNHASHED_IN_ARROW_DIR = ("state.json",)

_READ_BATCH = 1024


# ---------------------------------------------------------------------------------------------
# Rows and files
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RawRow:
    source: str
    file: str  # as the user sees it: relative to the spec's directory (or hf://id@revision/...)
    file_sha256: str
    row: int  # 0-based: record index (JSONL: line index, so the line number is row + 1)
    data: dict[str, Any] | None
    error: str | None = None  # why the row could not be parsed (data is None then)
    key: str | None = None  # the row's key in a JSON object-of-rows (field path `__key__`)
    line: bytes | None = None  # a JSONL line not parsed yet (`iter_raw_rows(defer_parsing=True)`)
    text: str | None = None  # a line that could not be parsed: as read (capped), for the quarantine

    def parsed(self) -> "RawRow | None":
        """The row with its deferred line parsed (None: the line is blank, so it is no row)."""
        if self.line is None:
            return self
        return _parse_jsonl_line(self.source, self.file, self.file_sha256, self.row, self.line)


_REMOTE_BUFFER = 1 << 20
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(path: str) -> bool:
    """An fsspec URL (`s3://bucket/x.jsonl`, `gs://…`, `file:///…`), read through fsspec; anything
    else is a local path (relative to the spec's directory)."""
    return _URL.match(path) is not None


def _protocol(url: str) -> str:
    return url.split("://", 1)[0].lower()


def url_filesystem(url: str) -> tuple[Any, str]:
    """(the fsspec file system of a URL, the path in it). SpecError when the protocol is unknown
    or its package is not installed."""
    import fsspec

    protocol = _protocol(url)
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as e:
        raise SpecError(f"reading {protocol}:// URLs needs a package that is not installed ({e})") from None
    except ValueError as e:
        known = fsspec.available_protocols()
        if protocol not in known:
            raise SpecError(f"unknown URL protocol '{protocol}://'{did_you_mean(protocol, known)}; fsspec reads "
                            "local paths and URLs such as s3://, gs://, az://, hf://, http(s)://, file://") from None
        raise SpecError(f"cannot open '{url}': {e}") from None


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input: a local file or directory (absolute path), or an fsspec URL to one."""

    path: str
    display: str  # relative to the spec's directory when the pattern was; a URL as fsspec names it
    type: str
    # a remote file's size as the listing that found it gave it (asking the store again would be
    # a request per file)
    listed_size: int | None = field(default=None, compare=False)

    @property
    def remote(self) -> bool:
        return is_url(self.path)

    def open(self) -> IO[bytes]:
        """The file, binary, positioned at its start (an fsspec file seeks and reads in ranges)."""
        if not self.remote:
            return open(self.path, "rb")
        fs, path = url_filesystem(self.path)
        # fsspec's own readline reads (and copies) a whole block per line; a BufferedReader
        # reads the file in MiB chunks and splits lines in C.
        return io.BufferedReader(fs.open(path, "rb"), buffer_size=_REMOTE_BUFFER)

    def size(self) -> int:
        """Bytes: of the file, or of a directory's files."""
        if self.listed_size is not None:
            return self.listed_size
        if not self.remote:
            p = Path(self.path)
            return sum(q.stat().st_size for q in _dir_files(p)) if p.is_dir() else p.stat().st_size
        fs, path = url_filesystem(self.path)
        info = fs.info(path)
        if info["type"] == "directory":
            return sum(_known_size(self, q_info) for _, _, q_info in _remote_dir_files(fs, path))
        return _known_size(self, info)

    def sha256(self) -> str:
        """The input's hash: a file's, or a directory's (saved `datasets`) over its files."""
        if not self.remote:
            p = Path(self.path)
            return sha256_files(p, _dir_files(p)) if p.is_dir() else sha256_file(p)
        fs, path = url_filesystem(self.path)
        if not fs.isdir(path):
            with fs.open(path, "rb") as f:
                return sha256_stream(f)
        entries = []
        for rel, q, _ in _remote_dir_files(fs, path):
            with fs.open(q, "rb") as f:
                entries.append((rel, sha256_stream(f)))
        return sha256_listing(entries)


def _known_size(f: InputFile, info: dict[str, Any]) -> int:
    if info.get("size") is None:  # e.g. an HTTP server that sends no Content-Length
        raise BuildError(f"{f.display}: its store does not say how large it is ({info.get('name')}); "
                         "the manifest pins every input's size and hash")
    return int(info["size"])


@contextmanager
def read_errors(source: str, what: str, remote: bool) -> Iterator[None]:
    """A file that cannot be read ends the build with one line naming the source and the file.
    A remote store raises its own exception types (aiohttp, cloud SDKs), not only OSError."""
    try:
        yield
    except DscError:
        raise
    except OSError as e:
        raise BuildError(f"source '{source}': cannot read {what}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 — only around a remote file's reads (see `remote`)
        if not remote:
            raise
        raise BuildError(f"source '{source}': cannot read {what}: {type(e).__name__}: {e}") from None


def _type_of(path: str, is_dir: bool, explicit: str | None) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if is_dir:
        if explicit not in (None, "arrow"):
            raise SpecError(f"'{name}' is a directory, which only `type: arrow` reads")
        return "arrow"
    if explicit is not None:
        return explicit
    t = EXTENSIONS.get(Path(name).suffix.lower())
    if t is None:
        raise SpecError(f"cannot tell the type of '{name}' from its extension; set `type:` to one of "
                        f"{allowed_list(SOURCE_TYPES)}")
    return t


def _is_arrow_dir(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in (*ARROW_MARKERS, "dataset_dict.json"))


def _has_remote_arrow_markers(fs: Any, directory: str) -> bool:
    return any(fs.isfile(f"{directory.rstrip('/')}/{m}") for m in (*ARROW_MARKERS, "dataset_dict.json"))


def resolve_files(spec: SourceSpec, base_dir: Path | str, name: str | None = None) -> list[InputFile]:
    """The files a `path` source reads, sorted by their displayed path and deduplicated.

    SpecError when a file is missing or a pattern matches nothing (named in the message)."""
    base = Path(base_dir)
    who = f"source '{name}': " if name else ""
    found: dict[str, InputFile] = {}
    for pattern in spec.patterns():
        try:
            matches = _remote_matches(pattern) if is_url(pattern) else _local_matches(pattern, base)
            for path, display, is_dir, size in matches:
                found.setdefault(display, InputFile(path, display, _type_of(path, is_dir, spec.type), size))
        except SpecError as e:
            raise SpecError(who + e.message) from None
    return [found[k] for k in sorted(found)]


def _local_matches(pattern: str, base: Path) -> list[tuple[str, str, bool, None]]:
    """(absolute path, display, is a directory, None) of what a local pattern names (a local
    size is a stat away: taken when needed)."""
    if glob.has_magic(pattern):
        matches = sorted(glob.glob(pattern, root_dir=base, recursive=True))
        # Plain directories matched by a wide pattern are skipped; save_to_disk dirs are rows.
        matches = [m for m in matches if not (base / m).is_dir() or _is_arrow_dir(base / m)]
        if not matches:
            raise SpecError(f"pattern '{pattern}' matches no file (relative to {base})")
    else:
        p = base / pattern
        if not p.exists():
            raise SpecError(f"file '{pattern}' does not exist (relative to {base})")
        if p.is_dir() and not _is_arrow_dir(p):
            raise SpecError(f"'{pattern}' is a directory but not a `datasets` save_to_disk directory "
                            f"(it has no {' or '.join(ARROW_MARKERS)})")
        matches = [pattern]
    out = []
    for m in matches:
        path = (base / m).resolve()
        out.append((str(path), Path(os.path.normpath(m)).as_posix(), path.is_dir(), None))
    return out


def _remote_matches(url: str) -> list[tuple[str, str, bool, int | None]]:
    """(URL, display, is a directory, a file's size as listed) of what a URL or URL pattern names
    (the URL is both). An http(s) URL is never a pattern: `?` starts its query."""
    try:
        fs, path = url_filesystem(url)
        if glob.has_magic(path) and _protocol(url) not in ("http", "https"):
            found = fs.glob(path, detail=True)
            found = {p: info for p, info in found.items()
                     if info["type"] != "directory" or _has_remote_arrow_markers(fs, p)}
            if not found:
                raise SpecError(f"pattern '{url}' matches no file")
        else:
            try:
                found = {path: fs.info(path)}
            except FileNotFoundError:
                raise SpecError(f"'{url}' does not exist") from None
            if found[path]["type"] == "directory" and not _has_remote_arrow_markers(fs, path):
                raise SpecError(f"'{url}' is a directory but not a `datasets` save_to_disk directory "
                                f"(it has no {' or '.join(ARROW_MARKERS)})")
        return [(fs.unstrip_protocol(p), fs.unstrip_protocol(p), info["type"] == "directory",
                 info.get("size") if info["type"] != "directory" else None) for p, info in sorted(found.items())]
    except SpecError:
        raise
    except Exception as e:  # noqa: BLE001 — each file system raises its own (auth, network, permissions)
        raise SpecError(f"cannot list '{url}': {type(e).__name__}: {e}") from None


def _dir_files(path: Path) -> list[Path]:
    return files_under(path, keep=lambda p: p.name not in UNHASHED_IN_ARROW_DIR)


def _remote_dir_files(fs: Any, path: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(relative path, path, info) of a remote directory's files, as `_dir_files` picks and orders
    them: one listing gives their sizes too."""
    root = path.rstrip("/") + "/"
    files = [(p[len(root):], p, info) for p, info in fs.find(path, detail=True).items() if p.startswith(root)]
    return sorted((f for f in files if f[0].rsplit("/", 1)[-1] not in UNHASHED_IN_ARROW_DIR), key=lambda f: f[0])


# ---------------------------------------------------------------------------------------------
# Readers (one per type; each yields RawRows of one file)
# ---------------------------------------------------------------------------------------------


def _read_jsonl(name: str, f: InputFile, sha: str, defer_parsing: bool = False) -> Iterator[RawRow]:
    """Rows of a JSONL file; with `defer_parsing`, each non-blank line as a RawRow holding its
    bytes (`RawRow.parsed()` does the rest), so that the parsing can happen in a worker."""
    return read_jsonl_range(name, f, sha, 0, None, 0, defer_parsing=defer_parsing)


def read_jsonl_range(name: str, f: InputFile, sha: str, start: int, end: int | None, first_row: int, *,
                     defer_parsing: bool = True) -> Iterator[RawRow]:
    """The rows of the lines of a JSONL file in bytes [start, end) (None: to the end); `start`
    is the beginning of line `first_row` (0-based), and `end` the end of a line or of the file,
    so that ranges cut at newlines read every line once (`stages.read.ranges`)."""
    with f.open() as fh:
        fh.seek(start)
        pos, row = start, first_row
        for raw in fh:
            if end is not None and pos >= end:
                return
            pos += len(raw)
            if row == 0 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if defer_parsing:
                if raw.strip():
                    yield RawRow(name, f.display, sha, row, None, line=raw)
            else:
                parsed = _parse_jsonl_line(name, f.display, sha, row, raw)
                if parsed is not None:
                    yield parsed
            row += 1


RAW_TEXT_MAX = 10_000  # characters of an unparseable line kept in the quarantine


def _parse_jsonl_line(name: str, display: str, sha: str, row: int, raw: bytes) -> RawRow | None:
    lineno = row + 1

    def broken(why: str) -> RawRow:
        as_read = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        return RawRow(name, display, sha, row, None, why, text=as_read[:RAW_TEXT_MAX])

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return broken(f"line {lineno} is not valid UTF-8 (byte {e.start})")
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return broken(f"broken JSON on line {lineno}: {e.msg}: column {e.colno}")
    if not isinstance(value, dict):
        return broken(f"line {lineno} is {kind(value)}, expected a JSON object")
    return RawRow(name, display, sha, row, value)


def _read_json(name: str, f: InputFile, sha: str) -> Iterator[RawRow]:
    import ijson

    with f.open() as fh:
        head = fh.read(4096)
        start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        first = head[start:].lstrip()[:1]
        fh.seek(start)
        row = 0
        try:
            if first == b"[":
                for value in ijson.items(fh, "item", use_float=True):
                    if isinstance(value, dict):
                        yield RawRow(name, f.display, sha, row, value)
                    else:
                        yield RawRow(name, f.display, sha, row, None,
                                     f"item {row} is {kind(value)}, expected a JSON object")
                    row += 1
            elif first == b"{":
                for key, value in ijson.kvitems(fh, "", use_float=True):
                    if isinstance(value, dict):
                        yield RawRow(name, f.display, sha, row, value, key=key)
                    else:
                        yield RawRow(name, f.display, sha, row, None,
                                     f"the value of key '{key}' is {kind(value)}, expected a JSON object "
                                     "(a .json source holds an array of rows or an object whose values are rows; "
                                     "one row per line is .jsonl)", key=key)
                    row += 1
            else:
                what = ("empty" if not first else
                        f"neither an array nor an object (starts with {first.decode(errors='replace')!r})")
                raise BuildError(f"source '{name}': {f.display} is {what}; a .json source holds an array of rows "
                                 "or an object whose values are rows")
        except ijson.JSONError as e:
            raise BuildError(f"source '{name}': {f.display} has broken JSON after {row} rows "
                             f"({str(e).strip().splitlines()[0]}); the rest of the file cannot be read") from None


# csv's default field limit (128 KiB) is below a long agent trajectory.
_CSV_FIELD_LIMIT = 1 << 30


def _read_csv(name: str, f: InputFile, sha: str) -> Iterator[RawRow]:
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        with io.TextIOWrapper(f.open(), encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                raise BuildError(f"source '{name}': {f.display} has repeated CSV columns {allowed_list(dupes)}")
            row = 0
            for record in reader:
                if not record:
                    continue  # blank line
                if len(record) != len(header):
                    yield RawRow(name, f.display, sha, row, None,
                                 f"CSV line {reader.line_num}: {len(record)} fields, the header has {len(header)}")
                else:
                    yield RawRow(name, f.display, sha, row, dict(zip(header, record)))
                row += 1
    except (UnicodeDecodeError, csv.Error) as e:
        raise BuildError(f"source '{name}': cannot read {f.display} as CSV: {e}") from None


def _read_parquet(name: str, f: InputFile, sha: str) -> Iterator[RawRow]:
    return read_parquet_row_groups(name, f, sha, None, 0)


@contextmanager
def open_parquet(name: str, f: InputFile) -> Iterator[Any]:
    """A `pq.ParquetFile` (BuildError, naming the source, when it is not Parquet)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # a local file by its path: Arrow reads it natively, not through a Python file object
    with f.open() if f.remote else nullcontext(f.path) as source:
        try:
            pf = pq.ParquetFile(source)
        except (pa.ArrowException, OSError) as e:
            raise BuildError(f"source '{name}': cannot read {f.display} as Parquet: {e}") from None
        with pf:
            yield pf


def read_parquet_row_groups(name: str, f: InputFile, sha: str, row_groups: list[int] | None,
                            first_row: int) -> Iterator[RawRow]:
    """The rows of some row groups of a Parquet file (None: all); `first_row` is the index of
    the first one's first row in the file."""
    with open_parquet(name, f) as pf:
        row = first_row
        for batch in pf.iter_batches(batch_size=_READ_BATCH, row_groups=row_groups):
            for d in batch.to_pylist():
                yield RawRow(name, f.display, sha, row, d)
                row += 1


def _read_arrow(name: str, f: InputFile, sha: str) -> Iterator[RawRow]:
    if not f.remote:
        yield from _read_arrow_dir(name, f, sha, f.path)
        return
    # `datasets` would fetch it into a temporary directory that lives as long as the process
    # (a pool or Ray worker serves many builds): fetch it here, and remove it once read.
    fs, path = url_filesystem(f.path)
    with tempfile.TemporaryDirectory(prefix="dsc-input-") as tmp:
        with read_errors(name, f.display, True):
            fs.get(path.rstrip("/") + "/", tmp, recursive=True)
        yield from _read_arrow_dir(name, f, sha, tmp)


def _read_arrow_dir(name: str, f: InputFile, sha: str, local: str) -> Iterator[RawRow]:
    import datasets

    try:
        ds = datasets.load_from_disk(local)  # memory-mapped, never loaded whole
    except Exception as e:  # noqa: BLE001 — datasets raises many types for unreadable dirs
        raise BuildError(f"source '{name}': cannot load {f.display} as a `datasets` save_to_disk "
                         f"directory: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = sorted(ds)
        raise BuildError(f"source '{name}': {f.display} holds a DatasetDict with splits {allowed_list(splits)}; "
                         f"point `path` at one split directory, e.g. '{f.display}/{splits[0] if splits else 'train'}'")
    ds = ds.with_format(None)  # plain Python values whatever format was saved with it
    row = 0
    for batch in ds.iter(batch_size=_READ_BATCH):
        columns = list(batch)
        n = len(batch[columns[0]]) if columns else 0
        for i in range(n):
            yield RawRow(name, f.display, sha, row, {c: batch[c][i] for c in columns})
            row += 1


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet,
            "arrow": _read_arrow}


def _offline_hint() -> str:
    flags = flags_set("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    if flags:
        return f" ({' and '.join(flags)} set: only a copy already in the local cache can be used)"
    return ""


def _read_hub(name: str, hub: HubSource) -> Iterator[RawRow]:
    display = hub.display()

    def fail(what: str, e: Exception) -> BuildError:
        return BuildError(f"source '{name}': cannot {what} hub dataset '{hub.id}' (revision '{hub.revision}', "
                          f"split '{hub.split}'): {type(e).__name__}: {e}{_offline_hint()}")

    try:
        import datasets

        ds = datasets.load_dataset(hub.id, hub.config, revision=hub.revision, split=hub.split, streaming=True)
        it = iter(ds)
    except Exception as e:  # noqa: BLE001 — offline, not found, bad split, auth: all end the build
        raise fail("open", e) from None
    row = 0
    while True:
        try:
            example = next(it)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001
            raise fail(f"read row {row + 1} of", e) from None
        yield RawRow(name, display, hub.revision, row, dict(example))
        row += 1


def _all_rows(name: str, spec: SourceSpec, base: Path, defer_parsing: bool,
              known_sha256: Mapping[str, str]) -> Iterator[RawRow]:
    if spec.hub is not None:
        yield from _read_hub(name, spec.hub)
        return
    for f in resolve_files(spec, base, name):
        yield from read_file(name, f, known_sha256.get(f.display) or f.sha256(), defer_parsing=defer_parsing)


def read_file(name: str, f: InputFile, sha: str, *, defer_parsing: bool = False) -> Iterator[RawRow]:
    """The rows of one input file (`defer_parsing`: JSONL lines come unparsed)."""
    if defer_parsing and f.type == "jsonl":
        return _read_jsonl(name, f, sha, defer_parsing=True)
    return _READERS[f.type](name, f, sha)


def iter_raw_rows(name: str, spec: SourceSpec, base_dir: Path | str, *, defer_parsing: bool = False,
                  known_sha256: Mapping[str, str] | None = None) -> Iterator[RawRow]:
    """The source's rows, streamed, files in sorted order; at most `spec.limit` of them (the
    first ones, unparseable rows included, so a limit always reads the same rows).

    `defer_parsing`: JSONL lines come unparsed (`RawRow.parsed()`), for a caller that parses in
    worker processes; not with a `limit` (which counts parsed rows).
    `known_sha256`: file (as the manifest names it) → its sha256, already computed by
    the caller (the build hashes every input for the manifest): the file is not read twice."""
    if spec.limit == 0:
        return
    rows = _all_rows(name, spec, Path(base_dir), defer_parsing and spec.limit is None, known_sha256 or {})
    try:
        for n, raw in enumerate(rows, 1):
            yield raw
            if spec.limit is not None and n >= spec.limit:
                return
    finally:
        rows.close()  # close the open file now, not when the generator is collected


# ---------------------------------------------------------------------------------------------
# Field values, lookups, normalisation
# ---------------------------------------------------------------------------------------------


def field_value(raw: RawRow, path: str) -> Any:
    """The value of a field path in a raw row (`__key__`: the row's key in a JSON object)."""
    if path == KEY_FIELD:
        return raw.key if raw.key is not None else MISSING
    return get_path(raw.data or {}, path)


def key_str(value: Any) -> str:
    """A scalar as a join/group key: strings as they are, numbers and booleans as JSON, so the
    question id 17 in one file and "17" in another meet. ValueError for other values."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return json.dumps(value)
    raise ValueError(f"is {kind(value)}, expected a string or a number")


def load_lookup(spec: SourceSpec, base_dir: Path | str, name: str = "lookup") -> dict[str, dict[str, Any]]:
    """A lookup source as `{key: row}`, keyed by `key_str` of its `lookup` field.

    Lookup tables are joined into other rows, so they must be clean: a broken row, a row
    without the key, or one key with two different rows is a BuildError."""
    if spec.lookup is None:
        raise ValueError(f"source '{name}' is not a lookup source (it has no `lookup:` key field)")
    table: dict[str, dict[str, Any]] = {}
    where: dict[str, str] = {}
    for raw in iter_raw_rows(name, spec, base_dir):
        at = f"{raw.file} row {raw.row + 1}"
        if raw.error is not None:
            raise BuildError(f"lookup source '{name}': {at}: {raw.error}")
        value = field_value(raw, spec.lookup)
        if value is MISSING or value is None:
            raise BuildError(f"lookup source '{name}': {at} has no key field '{spec.lookup}'")
        try:
            key = key_str(value)
        except ValueError as e:
            raise BuildError(f"lookup source '{name}': {at}: key field '{spec.lookup}' {e}") from None
        assert raw.data is not None
        if key in table and table[key] != raw.data:
            raise BuildError(f"lookup source '{name}': key '{key}' has two different rows ({where[key]} and {at})")
        table.setdefault(key, raw.data)
        where.setdefault(key, at)
    return table


def _jsonable(value: Any) -> Any:
    """Raw values as JSON can hold them (parquet/arrow rows may carry dates, bytes, decimals),
    so that `meta.extra` always serialises the same way."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes, sha256 {sha256_bytes(value)[:16]}>"
    try:
        return float(value)  # Decimal, numpy scalars
    except (TypeError, ValueError):
        return str(value)


def _required_key(raw: RawRow, path: str, what: str) -> str:
    value = field_value(raw, path)
    if value is MISSING or value is None:
        raise BadRow(f"missing {what} field '{path}'")
    try:
        return key_str(value)
    except ValueError as e:
        raise BadRow(f"{what} field '{path}' {e}") from None


def prompt_group(messages: list[dict[str, Any]]) -> str | None:
    """The default group of a row: its prompt, the turns before the first assistant turn (None
    when there are none). Agent data has several trajectories per question, which share their
    prompt as read, before conditioning strings are added; grouping by it keeps a question's
    trajectories in one split (a group of the row's own id would send them to several)."""
    prompt = []
    for m in messages:
        if m["role"] == "assistant":
            break
        prompt.append([m["role"], (m.get("content") or "").strip(), m.get("tool_calls")])  # what was said
    return f"prompt:{content_hash(prompt)}" if prompt else None


def normalise_row(raw: RawRow, name: str, spec: SourceSpec) -> Conversation:
    """A raw row → the canonical `Conversation` (BadRow when it cannot be normalised).

    id = `<source>:<hash>` of the normalised messages, tools and the raw `id` field's value
    (so it does not depend on file order or row position; identical rows share an id and the
    build keeps one); group = the `group` field's value, else the `id` field's value, else the
    row's prompt (`prompt_group`), else (a trajectory with no prompt) the id."""
    if raw.error is not None:
        raise BadRow(raw.error)
    if raw.data is None or spec.format is None:
        raise BadRow(f"source '{name}' has no rows to normalise (lookup source)")
    fmt = get_format(spec.format)
    norm = fmt(raw.data, spec.fields)
    if not norm.messages:
        raise BadRow("empty conversation: the format produced no messages")
    raw_id = _required_key(raw, spec.id, "id") if spec.id else None
    messages = [m.to_dict(canonical=True) for m in norm.messages]
    digest = content_hash({"messages": messages, "tools": norm.tools, "id": raw_id})
    cid = f"{name}:{digest}"
    if spec.group:
        group = _required_key(raw, spec.group, "group")
    else:
        group = raw_id if raw_id is not None else prompt_group(messages) or cid
    extra = _jsonable(norm.extra)
    if raw.key is not None:
        extra.setdefault(KEY_FIELD, raw.key)
    tools = _jsonable(norm.tools) if norm.tools is not None else None
    return Conversation(
        id=cid,
        group=group,
        messages=norm.messages,
        tools=tools,
        meta=Meta(
            source=name,
            provenance=Provenance(raw.file, raw.file_sha256, raw.row, [f"format:{spec.format}"]),
            task=spec.tags.task,
            method=spec.tags.method,
            capability=spec.tags.capability,
            extra=extra,
        ),
    )
