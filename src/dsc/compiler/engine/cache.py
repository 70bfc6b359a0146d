"""The incremental build cache: normalised segments and rendered rows, per source.

    <cache dir>/v<CACHE_FORMAT>/normalised/<key>/   rows-NNNNNN.arrow… keys.arrow quarantine.jsonl segment.json entry.json
    <cache dir>/v<CACHE_FORMAT>/rendered/<key>/parts/part-<first row>-<last row>-<uuid>-<size>-<crc32>.arrow
    <cache dir>/v<CACHE_FORMAT>/tmp/                 entries being written

(`cache_root`; a directory of another format, left by an older dsc, is never read: `dsc cache
prune` removes it.)

A **normalised** entry is stage 1 of one source (read, normalise, row transforms; see
`dsc.compiler.engine.rowfiles`). Its key is a sha256 over everything stage 1 reads: the dsc version and a
hash of dsc's own code, the source's name and spec, its inputs' sha256s, the lookup sources (spec
and inputs), every file the spec's sections name (prompt files, tool files), the spec sections
that shape stage-1 rows (those `spec.model.SECTION_READERS` gives to "rows"), the seed, and — when capability
ratios are measured in tokens — the template, loss policy, tokenizer and its settings. An entry
is written in `tmp/` and renamed into place, with the size and CRC-32 of each file in
`entry.json`; an entry that does not check out is deleted and rebuilt.

A **rendered** store holds render + tokenise results for the rows of one normalised entry, keyed
by that entry's key, the template, loss and special-token policies, the tokenizer and its
settings. It is a directory of immutable part files, each covering some rows (by row number in
the segment) and checked by the size and CRC-32 in its name: a build adds a part for the rows it
had to compute, so changing a mix ratio renders only rows never rendered before; two builds
adding parts at once is safe (a row in two parts is the same row).

The normalised key also covers the user code stage 1 runs: the source sha256 of the module that
defines each format, filter, convert step and negative rule the source's rows go through when it
is not dsc's own (`dsc.compiler.engine.fingerprints.stage1_modules`), so editing a plugin's filter misses the
segments of the sources it filters, and editing its scorer misses nothing.

A cache hit gives the same bytes as a cold build: every stage is a pure function of what its key
covers. What no key can see — a plugin's helper in another module of the user's that the spec
does not name, changed in place — needs `--no-cache` or a new cache directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

import dsc
from dsc import __version__
from dsc.compiler.engine.cache_upkeep import max_cache_bytes, prune, remove_dir, touch
from dsc.compiler.engine.fingerprints import stage1_modules
from dsc.compiler.engine.rowfiles import ArrowFileWriter, SegmentInfo, file_crc
from dsc.core.errors import BuildError
from dsc.core.files import files_under, held_lock, is_held
from dsc.core.hashing import sha256_file, sha256_json
from dsc.spec.model import SECTION_READERS, Spec, sections_read_by

if TYPE_CHECKING:
    from dsc.chat.templating import ChatTemplate
    from dsc.chat.tokenize import RowTokenizer

# 4: a rendered part's name carries its first and last row (a render task reads only the parts
# that may hold rows of its block).
CACHE_FORMAT = 4
ENTRY_FILE = "entry.json"
NORMALISED = "normalised"
RENDERED = "rendered"
PARTS = "parts"
STALE_TMP_SECONDS = 24 * 3600

# Spec sections that do not enter a normalised key as they are: every section but the ones that
# shape stage-1 rows (`SECTION_READERS` in the spec model says which part of the build reads each).
# `sources` enters the key as the source itself and the lookup sources; `template`, `loss`,
# `special_tokens` and `tokenize` only when capability ratios are measured in tokens;
# `capabilities.rates` and `.proportions` are selection (stage 2); `plugins` as the code of the
# callables stage 1 runs.
LATER_SECTIONS = frozenset(SECTION_READERS) - sections_read_by("rows")
SELECTION_ONLY_CAPABILITIES = ("rates", "proportions")


def default_cache_dir() -> Path:
    env = os.environ.get("DSC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dsc"


def cache_root(directory: str | Path | None = None) -> Path:
    """The directory of this cache format's entries under the cache dir (default: `default_cache_dir`)."""
    base = Path(directory).expanduser() if directory is not None else default_cache_dir()
    return base / f"v{CACHE_FORMAT}"


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of all of dsc's code and built-in templates (every layer a build runs lives in the
    `dsc` package: core, record, spec, dialects, chat, the compiler...), so that a changed dsc (a
    new release, or a development checkout) never reads entries an older one wrote."""
    root = Path(dsc.__file__).resolve().parent
    h = hashlib.sha256()
    for p in files_under(root, keep=lambda p: p.suffix in (".py", ".jinja") and "__pycache__" not in p.parts):
        h.update(f"{p.relative_to(root).as_posix()}\0".encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def referenced_files(value: Any, base_dir: Path) -> list[dict[str, str]]:
    """`{path, sha256}` of every file a spec section names (a string that is a file relative to
    the spec's directory): prompt files, tool files, a plugin's own files."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str) and 0 < len(v) < 4096 and "\n" not in v and "\0" not in v:
            try:
                if (base_dir / v).is_file():
                    found.add(v)
            except OSError:
                pass

    walk(value)
    return [{"path": p, "sha256": sha256_file(base_dir / p)} for p in sorted(found)]


def _tokens_measured(spec: Spec) -> bool:
    caps = spec.capabilities
    return caps is not None and caps.measure == "tokens" and spec.tokenize is not None


def _rendering(spec: Spec, template: ChatTemplate, tokenizer: RowTokenizer | None) -> dict[str, Any]:
    """What rendering and tokenising read, besides the rows."""
    return {
        "template": {"ref": spec.template, "sha256": template.sha256},
        "loss": spec.loss.value if isinstance(spec.loss, Enum) else spec.loss.model_dump(mode="json"),
        "special_tokens": spec.special_tokens.value,
        "tokenize": spec.tokenize.model_dump(mode="json") if spec.tokenize is not None else None,
        "tokenizer": tokenizer.sha256 if tokenizer is not None else None,
    }


def normalised_key(spec: Spec, source: str, inputs: list[dict[str, Any]], base_dir: Path, *,
                   template: ChatTemplate, tokenizer: RowTokenizer | None) -> str:
    """The key of a source's stage-1 segment (see the module docstring)."""
    sections = spec.model_dump(mode="json", exclude=set(LATER_SECTIONS))
    if isinstance(sections.get("capabilities"), dict):
        for k in SELECTION_ONLY_CAPABILITIES:
            sections["capabilities"].pop(k, None)
    lookups = {n: s for n, s in spec.sources.items() if s.lookup is not None}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for i in inputs:
        by_source.setdefault(i["source"], []).append({k: v for k, v in i.items() if k != "source"})
    key = {
        "cache_format": CACHE_FORMAT,
        "dsc": __version__,
        "code": code_fingerprint(),
        "pyarrow": pa.__version__,
        "jsonschema": _jsonschema_version(),  # it decides which tool calls are quarantined
        "source": source,
        "source_spec": spec.sources[source].model_dump(mode="json"),
        "inputs": by_source.get(source, []),
        "lookups": {n: {"spec": s.model_dump(mode="json"), "inputs": by_source.get(n, [])}
                    for n, s in sorted(lookups.items())},
        "sections": sections,
        "files": referenced_files(sections, base_dir),
        "seed": spec.seed,
        "weights": _rendering(spec, template, tokenizer) if _tokens_measured(spec) else None,
    }
    plugins = stage1_modules(spec, source, base_dir)
    if plugins:  # only when user code runs here (so the keys of plugin-free specs stay as they were)
        key["plugins"] = sorted(m.sha256 for m in plugins)  # the code, wherever its file lies
    return sha256_json(key)


@lru_cache(maxsize=1)
def _jsonschema_version() -> str:
    import importlib.metadata as md

    return md.version("jsonschema")


def rendered_key(spec: Spec, normalised: str, *, template: ChatTemplate, tokenizer: RowTokenizer | None) -> str:
    """The key of the rendered rows of a normalised segment."""
    return sha256_json({"cache_format": CACHE_FORMAT, "normalised": normalised,
                    "rendering": _rendering(spec, template, tokenizer)})


# ---------------------------------------------------------------------------------------------
# The cache directory
# ---------------------------------------------------------------------------------------------


SCRATCH_PREFIX = "dsc-build-"  # a --no-cache build's scratch directory in the temporary directory
SCRATCH_LOCK = ".lock"


def _remove_abandoned_scratch() -> None:
    """Scratch directories of --no-cache builds that were killed: nobody holds their lock (one
    that has no lock yet is a build starting now, unless it is older than a stale temporary)."""
    now = time.time()
    for d in Path(tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*"):
        try:
            lock = d / SCRATCH_LOCK
            abandoned = not is_held(lock) if lock.exists() else now - d.lstat().st_mtime > STALE_TMP_SECONDS
            if abandoned and d.is_dir():
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


class BuildCache:
    """Where a build keeps its segments: the persistent cache, or (without the cache) a
    temporary directory removed when the build ends."""

    def __init__(self, root: Path, persistent: bool):
        self.root = root
        self.persistent = persistent
        self.tmp = root / "tmp"

    @classmethod
    @contextmanager
    def open(cls, enabled: bool = True, directory: str | Path | None = None) -> Iterator["BuildCache"]:
        if not enabled:
            _remove_abandoned_scratch()
            scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
            try:
                with held_lock(scratch / SCRATCH_LOCK):  # tells a later build this one is alive
                    for sub in (NORMALISED, RENDERED, "tmp"):
                        (scratch / sub).mkdir()
                    yield cls(scratch, persistent=False)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        root = cache_root(directory)
        base = root.parent
        try:
            for sub in (NORMALISED, RENDERED, "tmp"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            probe = root / "tmp" / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise BuildError(f"cannot use the build cache at {base}: {e.strerror or e}; give another with "
                             f"--cache-dir (or DSC_CACHE_DIR), or build with --no-cache") from None
        cache = cls(root, persistent=True)
        cache._clean_stale()
        yield cache
        # Bounded disk use: least recently used entries go once the cache is over its cap
        # (this build's own entries were just used, so they stay); no cap, nothing to walk.
        cap = max_cache_bytes()
        if cap is not None:
            prune(root, max_bytes=cap, spare_recent=True)

    def _clean_stale(self) -> None:
        """Temporaries of builds that were killed (old enough not to be a running build's)."""
        now = time.time()
        for p in self.tmp.iterdir():
            try:
                if now - p.lstat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            except OSError:
                pass

    def _remove(self, path: Path) -> None:
        remove_dir(path, self.tmp)

    # -- normalised segments ------------------------------------------------------------------

    def normalised(self, key: str) -> SegmentInfo | None:
        """The stage-1 segment with this key, if the cache has a sound one."""
        d = self.root / NORMALISED / key
        if not d.is_dir():
            return None
        try:
            entry = json.loads((d / ENTRY_FILE).read_text(encoding="utf-8"))
            if entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
                raise ValueError("not this key's entry")
            for name, (size, crc) in entry["files"].items():
                p = d / name
                if p.stat().st_size != size or file_crc(p) != crc:
                    raise ValueError(f"{name} does not match its checksum")
            info = SegmentInfo.load(d)
            touch(d)  # last used now (the cache's LRU order)
            return info
        except (OSError, ValueError, KeyError, TypeError):  # partial, corrupt or foreign: rebuild it
            self._remove(d)
            return None

    @contextmanager
    def new_normalised(self) -> Iterator[Path]:
        """A fresh directory to write a segment in; `commit_normalised` puts it in place."""
        d = self.tmp / f"normalised-{uuid.uuid4().hex}"
        d.mkdir()
        try:
            yield d
        finally:
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)

    def commit_normalised(self, tmp_dir: Path, key: str, files: dict[str, tuple[int, int]]) -> SegmentInfo:
        entry = {"format": CACHE_FORMAT, "key": key, "files": {k: list(v) for k, v in sorted(files.items())}}
        (tmp_dir / ENTRY_FILE).write_text(json.dumps(entry, sort_keys=True), encoding="utf-8")
        final = self.root / NORMALISED / key
        try:
            os.rename(tmp_dir, final)
        except OSError:
            if not final.is_dir():  # lost a race with another build writing the same entry: keep theirs
                raise
        info = self.normalised(key)
        if info is None:  # pragma: no cover - only if the entry vanished under us
            raise BuildError(f"the cache entry {final} disappeared while building; build again")
        return info

    # -- rendered rows ------------------------------------------------------------------------

    def rendered(self, key: str) -> "RenderedStore":
        d = self.root / RENDERED / key / PARTS
        d.mkdir(parents=True, exist_ok=True)
        touch(d.parent)
        return RenderedStore(d, self)


class RenderedStore:
    """Immutable part files of render + tokenise results for one normalised segment."""

    def __init__(self, parts_dir: Path, cache: BuildCache):
        self.dir = parts_dir
        self.cache = cache

    def parts(self) -> list["RenderedPart"]:
        """The sound parts, in name order (a corrupt one is deleted: its rows are rendered again)."""
        out = []
        for p in sorted(self.dir.glob("part-*.arrow")):
            try:
                _, first, last, _, size, crc = p.stem.split("-")
                if p.stat().st_size != int(size) or file_crc(p) != int(crc, 16):
                    raise ValueError("checksum")
            except (OSError, ValueError):
                try:
                    p.unlink()
                except OSError:
                    pass
                continue
            out.append(RenderedPart(p.name, int(first), int(last)))
        return out


@dataclass(frozen=True)
class RenderedPart:
    name: str  # in its store's directory
    first: int  # its first and last segment row (a part's rows ascend)
    last: int


def write_part(parts_dir: Path, rows: np.ndarray, schema: pa.Schema,
               batches: Iterable[pa.RecordBatch | pa.Table]) -> Path:
    """Write a part file of `rows` (ascending) atomically (run by workers); its name carries its
    first and last row, a hash of its rows (a task run twice writes the same part), its size and
    CRC-32."""
    digest = hashlib.sha256(np.ascontiguousarray(rows, "<i8").tobytes()).hexdigest()[:16]
    name = f"{int(rows[0]):012d}-{int(rows[-1]):012d}-{digest}"
    tmp = parts_dir / f".tmp-{name}-{uuid.uuid4().hex}.arrow"
    writer = ArrowFileWriter(tmp, schema)
    try:
        for b in batches:
            writer.write(b)
        size, crc = writer.close()
        final = parts_dir / f"part-{name}-{size}-{crc:08x}.arrow"
        os.rename(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return final


__all__ = ["BuildCache", "RenderedPart", "RenderedStore", "default_cache_dir", "normalised_key", "referenced_files",
           "rendered_key", "write_part"]
