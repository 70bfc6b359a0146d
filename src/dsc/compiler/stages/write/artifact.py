"""Writing the artifact directory: parquet shards, manifest, card, quarantine, template.

The whole directory is written under a temporary sibling and swapped into place at the end,
so an interrupted build never leaves a half-written artifact where the last good one was.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dsc.artifact.manifest import (
    DATA_DIR,
    MANIFEST,
    SCHEMA_VERSION,
    Manifest,
    manifest_text,
)
from dsc.core.canonical import canonical_json, content_hash
from dsc.core.errors import BuildError
from dsc.core.files import held_lock, lock_path
from dsc.core.hashing import sha256_text

ARTIFACT_FORMAT = SCHEMA_VERSION  # the manifest's `format`

TOOL_CALL_TYPE = pa.struct([("id", pa.string()), ("name", pa.string()), ("arguments", pa.string())])
MESSAGE_TYPE = pa.struct([
    ("role", pa.string()),
    ("content", pa.string()),
    ("tool_calls", pa.list_(TOOL_CALL_TYPE)),
    ("name", pa.string()),
    ("tool_call_id", pa.string()),
    ("loss", pa.bool_()),
    ("capability", pa.string()),
])
PROVENANCE_TYPE = pa.struct([
    ("file", pa.string()),
    ("file_sha256", pa.string()),
    ("row", pa.int64()),
    ("steps", pa.list_(pa.string())),
])
META_TYPE = pa.struct([
    ("source", pa.string()),
    ("task", pa.string()),
    ("method", pa.string()),
    ("capability", pa.string()),
    ("success", pa.bool_()),
    ("score", pa.float64()),
    ("label", pa.string()),
    ("extra", pa.string()),
    ("provenance", PROVENANCE_TYPE),
])


# `loss_weights`: the weighted pieces of `loss_spans` (a spec with `loss.weights` only): sorted,
# non-overlapping, covering the loss spans exactly; `weights`: per token, float32, 0 where labels
# are -100 (tokenised artifacts of such a spec).
WEIGHTED_SPAN_TYPE = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("weight", pa.float32())])


def row_schema(tokenized: bool, weighted: bool = False) -> pa.Schema:
    fields = [
        ("id", pa.string()),
        ("group", pa.string()),
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("tools", pa.string()),
        ("meta", META_TYPE),
        ("text", pa.string()),
        ("loss_spans", pa.list_(pa.list_(pa.int64()))),
    ]
    if weighted:
        fields.append(("loss_weights", pa.list_(WEIGHTED_SPAN_TYPE)))
    if tokenized:
        fields += [("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))]
        if weighted:
            fields.append(("weights", pa.list_(pa.float32())))
    return pa.schema(fields)


def shard_names(split: str, n_rows: int, shard_rows: int) -> list[str]:
    n = max(1, -(-n_rows // shard_rows))
    return [f"{DATA_DIR}/{split}-{i:05d}-of-{n:05d}.parquet" for i in range(n)]


def shard_row_groups(n_rows: int, shard_rows: int, row_group_rows: int) -> list[list[tuple[int, int]]]:
    """Each shard's row groups as [start, end) row positions in the split: a shard every
    `shard_rows` rows, a row group every `row_group_rows` rows from its shard's start (a split
    with no rows: one shard, no row group)."""
    shards = []
    for i in range(len(shard_names("", n_rows, shard_rows))):
        a, z = i * shard_rows, min(n_rows, (i + 1) * shard_rows)
        shards.append([(g, min(z, g + row_group_rows)) for g in range(a, z, row_group_rows)])
    return shards


def write_split(out: Path, split: str, rows: Iterable[dict[str, Any]] | Iterable[pa.Table | pa.RecordBatch],
                n_rows: int, *, tokenized: bool, shard_rows: int, row_group_rows: int,
                weighted: bool = False, schema: pa.Schema | None = None) -> list[str]:
    """Write one split's rows (already in their final order) as parquet shards; returns relative paths.

    `rows`: row dicts, or Arrow tables / record batches of rows in the row schema. `schema`:
    another row schema (preference rows)."""
    schema = schema if schema is not None else row_schema(tokenized, weighted)
    names = shard_names(split, n_rows, shard_rows)
    take = _row_taker(iter(rows), schema)
    for name, groups in zip(names, shard_row_groups(n_rows, shard_rows, row_group_rows)):
        # rows that end early end the split (a shard stops at its last row, as before)
        write_shard(out / name, schema, takewhile(lambda t: t is not None, (take(z - a) for a, z in groups)),
                    row_group_rows)
    return names


def write_shard(path: Path, schema: pa.Schema, row_groups: Iterable[pa.Table], row_group_rows: int) -> None:
    """One parquet shard, a row group per table (each of at most `row_group_rows` rows). The one
    place shard bytes are made: the build's shard tasks and `write_split` both write through it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema, compression="zstd", write_statistics=True) as writer:
        for table in row_groups:
            writer.write_table(table, row_group_size=row_group_rows)


def _row_taker(it: Iterator[Any], schema: pa.Schema):
    """A function giving the next n rows of `it` as one table (fewer at the end; None when done)."""
    pending: list[pa.Table] = []
    have = 0

    def take(n: int) -> pa.Table | None:
        nonlocal have
        dicts: list[dict[str, Any]] = []
        while have < n:
            item = next(it, None)
            if item is None:
                break
            if isinstance(item, dict):
                dicts.append(item)
                if len(dicts) >= n:
                    return pa.Table.from_pylist(dicts, schema=schema)
                continue
            table = pa.Table.from_batches([item]) if isinstance(item, pa.RecordBatch) else item
            pending.append(table)
            have += table.num_rows
        if dicts:
            return pa.Table.from_pylist(dicts, schema=schema)
        if not have:
            return None
        table = pa.concat_tables(pending)
        head, rest = table.slice(0, n), table.slice(n)
        pending[:] = [rest] if rest.num_rows else []
        have = rest.num_rows
        return head.combine_chunks()

    return take


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(canonical_json(row) + "\n")


def content_version(manifest_without_version: dict[str, Any]) -> str:
    """The artifact version: a hash over everything that determines its bytes (the data files'
    hashes, the resolved spec, the inputs, the template, the tokenizer, the dsc version)."""
    return content_hash(manifest_without_version, 16)


def write_manifest(out: Path, fields: dict[str, Any]) -> Manifest:
    """Version the manifest (a hash over all its other keys), check it against the `Manifest`
    model and write `out/manifest.json`. Returns the model."""
    manifest = Manifest.model_validate({**fields, "version": content_version(fields)})
    (out / MANIFEST).write_text(manifest_text(manifest), encoding="utf-8")
    return manifest


# ---------------------------------------------------------------------------------------------
# Atomic placement
# ---------------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


@contextmanager
def output_lock(final: Path) -> Iterator[Path]:
    """Hold the lock of `final` (an exclusive flock) for one build into it.

    A second build into the same directory waits here until the first has placed its artifact,
    then builds and replaces it: never two builds staging (and cleaning up) beside one artifact.
    The kernel drops the lock when its holder dies (a SIGKILL included). The lock file lives with
    dsc's other locks in the temporary directory (named by a hash of the resolved path), not
    beside the artifact."""
    final = Path(final).resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    with held_lock(lock_path(f"out-{sha256_text(str(final))[:32]}")) as path:
        yield path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staged_directory(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `final`; on success swap it into place.

    On any failure (or a kill) the temporary directory is all that is touched: the previous
    artifact at `final` stays as it was. Stale temporaries from killed builds are removed."""
    final = final.resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would become the artifact's mode
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not (final / MANIFEST).is_file() and any(final.iterdir()):
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildError(f"{final} exists and is not a dsc artifact (no manifest.json); refusing to replace it")
        if _exchange(tmp, final):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old artifact
            return
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
