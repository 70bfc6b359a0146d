"""The one artifact reader: `open_artifact(path) -> Artifact`.

Every reader of a compiled artifact (inspect, verify, diff, report, plan, lock, the lm-eval
export, train and eval) opens it here, so each gets the same checks and the same messages: the
manifest's schema version and keys (`manifest.py`), data files present and real (not git-lfs
pointers, as a clone without `git lfs pull` holds), the chat template when asked for.

Layout (the compiler's contract, see docs/ARCHITECTURE.md):
    <dir>/manifest.json, <dir>/chat_template.jinja, <dir>/data/<split>-0000i-of-0000N.parquet
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from dsc.artifact.manifest import DATA_DIR, MANIFEST, TEMPLATE_FILE, Manifest, read_manifest
from dsc.core.errors import ArtifactError, did_you_mean
from dsc.core.hashing import sha256_text

log = logging.getLogger("dsc.artifact")

SPLIT_ORDER = ("train", "validation", "test")
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"


def is_lfs_pointer(path: Path) -> bool:
    """A git-lfs pointer file (what a clone without `git lfs pull` holds instead of the data)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX
    except OSError:
        return False


def lfs_hint(what: str) -> str:
    return (f"{what} is a git-lfs pointer, not the data; fetch the data with `git lfs pull` "
            "(install git-lfs first: https://git-lfs.com)")


def split_sort_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


@dataclass
class Artifact:
    path: Path
    manifest: Manifest
    _tables: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- manifest ------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def spec(self) -> dict[str, Any]:
        """The resolved spec, as the build recorded it."""
        return self.manifest.spec

    @property
    def spec_hash(self) -> str:
        return self.manifest.spec_sha256

    @property
    def tokenised(self) -> bool:
        return self.manifest.tokenised

    @property
    def template_ref(self) -> str:
        return self.manifest.template.ref

    @property
    def template_sha256(self) -> str:
        return self.manifest.template.sha256

    @property
    def end_of_turn(self) -> list[str]:
        """The template's end-of-turn marker(s), e.g. ['<|im_end|>'] or ['</s>']; [] for none."""
        eot = self.manifest.template.end_of_turn
        return [eot] if eot else []

    @property
    def inference(self) -> dict[str, Any]:
        """{"messages": [{"role", "content" (Jinja over `question`)}...], "label": ..., "condition"?}."""
        return self.manifest.inference.model_dump(mode="json", exclude_unset=True)

    @cached_property
    def template_source(self) -> str:
        """The artifact's exact chat template (train and eval render with it)."""
        path = self.path / TEMPLATE_FILE
        if not path.is_file():
            raise ArtifactError(f"{self.path} has no {TEMPLATE_FILE}: train and eval need the artifact's exact template")
        source = path.read_text(encoding="utf-8")
        if sha256_text(source) != self.template_sha256:
            log.warning("%s does not match the manifest's template sha256 %s: the file was edited after the build",
                        TEMPLATE_FILE, self.template_sha256)
        return source

    # --- data ----------------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        return sorted(self.manifest.counts.written, key=split_sort_key)

    def check_split(self, split: str) -> None:
        if split not in self.manifest.counts.written:
            raise ArtifactError(f"the artifact {self.path} has no split '{split}'{did_you_mean(split, self.splits)}; "
                                f"splits: {', '.join(self.splits) or 'none'}")

    def shards(self, split: str) -> list[Path]:
        """The split's parquet files, in shard order."""
        prefix = f"{DATA_DIR}/{split}-"
        return [self.path / name for name in sorted(self.manifest.files) if name.startswith(prefix)]

    def batches(self, split: str, columns: list[str] | None = None) -> Iterator[Any]:
        """The split's rows in artifact order, as pyarrow record batches of the requested columns
        (a column the split lacks is skipped)."""
        import pyarrow.parquet as pq

        for shard in self.shards(split):
            pf = pq.ParquetFile(shard)
            names = pf.schema_arrow.names
            cols = [c for c in columns if c in names] if columns is not None else None
            yield from pf.iter_batches(batch_size=1024, columns=cols)

    def rows(self, split: str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        for batch in self.batches(split, columns):
            yield from batch.to_pylist()

    def rows_with_ids(self, split: str, ids: Iterable[str]) -> Iterator[dict[str, Any]]:
        """The split's rows whose id is one of `ids`, in artifact order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        value_set = pa.array(sorted(set(ids)), pa.string())
        for batch in self.batches(split):
            yield from batch.filter(pc.is_in(batch.column("id"), value_set=value_set)).to_pylist()

    def table(self, split: str):
        """The split as one pyarrow Table (shards concatenated in order; read once)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.check_split(split)
        if split not in self._tables:
            tables = [pq.read_table(p) for p in self.shards(split)]
            self._tables[split] = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        return self._tables[split]

    def dataset(self, split: str):
        """The split as an in-memory `datasets.Dataset` (no cache files are written)."""
        import datasets

        return datasets.Dataset(self.table(split))

    def has_column(self, split: str, column: str) -> bool:
        return column in self.table(split).column_names


def open_artifact(path: str | Path) -> Artifact:
    """Read an artifact's manifest (its schema version and keys checked) and check that its data
    files are present and real (not git-lfs pointers). ArtifactError (exit 2) otherwise, naming
    what is wrong."""
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact directory not found: {p}")
    if not p.is_dir():
        raise ArtifactError(f"{p} is not an artifact directory (run `dsc build SPEC` to make one)")
    mpath = p / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{p} is not a dsc artifact (no {MANIFEST})")
    if is_lfs_pointer(mpath):
        raise ArtifactError(lfs_hint(str(mpath)))
    manifest = read_manifest(mpath)
    for name in sorted(manifest.files):
        f = p / name
        if not f.is_file():
            raise ArtifactError(f"{p}: {name} is listed in the manifest but missing")
        if is_lfs_pointer(f):
            raise ArtifactError(lfs_hint(f"{p}/{name}"))
    return Artifact(p, manifest)

