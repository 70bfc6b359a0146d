"""`dsc.lock`: what a build was made from, pinned, beside the spec (and committed with it).

One lock file per directory holds one entry per spec file in it (keyed by the spec's file name),
so that several specs can live side by side. An entry pins every resolved input (path, size,
sha256; a hub dataset's id, revision and, when it can be resolved, the commit the revision
points at), the template's and the tokenizer's hashes, the source sha256 of each user plugin
module the spec imports or uses (`dsc.core.plugins`), the dsc and library versions, the
spec's own hash and the artifact version the build produced. The file is deterministic (sorted keys,
no timestamps, paths relative to the spec), so rebuilding an unchanged spec leaves it unchanged
and a diff of it in review shows exactly what moved.

`dsc build` writes the entry after the artifact is in place. `dsc build --locked` first checks
that everything still matches the entry (failing with exit 1, naming each input that moved),
then checks the artifact version before the new artifact replaces the old one.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from dsc import __version__
from dsc.artifact.manifest import Manifest
from dsc.compiler.engine.fingerprints import manifest_plugins
from dsc.compiler.engine.validation import load_spec
from dsc.core.environment import flags_set
from dsc.core.errors import LockError
from dsc.core.hashing import sha256_text
from dsc.core.strict import Strict as _Strict
from dsc.spec.model import LoadedSpec

LOCK_FILE = "dsc.lock"
LOCK_FORMAT = 1
MAX_LISTED = 12  # mismatches listed in one error message


class LockedInput(_Strict):
    source: str
    path: str  # relative to the spec's directory, or a URL; hf://id@revision/config/split for a hub dataset
    size: int | None = None
    sha256: str | None = None  # of the file (of its files, for a save_to_disk directory)
    hub: str | None = None  # hub dataset id
    revision: str | None = None  # as the spec pins it (a commit sha or a tag)
    resolved: str | None = None  # the commit the revision pointed at, when it could be resolved

    def key(self) -> tuple[str, str]:
        return (self.source, self.hub or self.path)


class LockedRef(_Strict):
    ref: str
    sha256: str


class LockedArtifact(_Strict):
    version: str
    format: int
    path: str | None = None  # relative to the spec's directory, when the artifact lies under it


class LockedPlugin(_Strict):
    """A user module the build runs or records (`dsc.core.plugins.PluginModule`)."""

    module: str
    path: str
    sha256: str


class LockEntry(_Strict):
    spec_sha256: str
    dsc_version: str
    libraries: dict[str, str]
    inputs: list[LockedInput]
    template: LockedRef
    tokenizer: LockedRef | None = None
    plugins: list[LockedPlugin] | None = None  # None: the spec runs no user code
    artifact: LockedArtifact | None = None


class LockFile(_Strict):
    dsc_lock: Literal[1] = LOCK_FORMAT
    specs: dict[str, LockEntry] = {}


def lock_path(spec_path: str | Path) -> Path:
    return Path(spec_path).parent / LOCK_FILE


# ---------------------------------------------------------------------------------------------
# Entries: from the spec as it is now, or from a built manifest
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def resolve_hub_revision(repo_id: str, revision: str) -> str | None:
    """The commit a hub revision points at: the revision itself when it is a full commit sha;
    for a tag, asked of the hub (None when offline or unreachable: the tag is then pinned as
    written)."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    if flags_set("HF_HUB_OFFLINE"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(repo_id, revision=revision, timeout=10).sha
    except Exception:  # noqa: BLE001 - offline, unknown, private: the tag is kept as written
        return None


def locked_inputs(loaded: LoadedSpec, inputs: list[dict[str, Any]]) -> list[LockedInput]:
    """Manifest-style inputs (`dsc.compiler.stages.read.ranges.resolve_inputs`) as lock entries."""
    out: list[LockedInput] = []
    for fp in inputs:
        source = loaded.spec.sources.get(fp["source"])
        hub = getattr(source, "hub", None)
        if hub is not None:
            out.append(LockedInput(source=fp["source"], path=fp["path"], hub=hub.id, revision=hub.revision,
                                   resolved=resolve_hub_revision(hub.id, hub.revision)))
        else:
            out.append(LockedInput(source=fp["source"], path=fp["path"], size=fp.get("size"),
                                   sha256=fp.get("sha256")))
    return out


def current_entry(loaded: LoadedSpec) -> LockEntry:
    """What the spec resolves to now, without building (no artifact version)."""
    from dsc.compiler.engine.context import load_template_and_tokenizer
    from dsc.compiler.engine.manifest import library_versions
    from dsc.compiler.stages.read.ranges import resolve_inputs

    spec, base = loaded.spec, loaded.base_dir
    # Not the whole build context: the transforms (lookup tables, eval sets) are not pinned here.
    template, tok = load_template_and_tokenizer(loaded)
    tokenizer = (LockedRef(ref=spec.tokenize.tokenizer, sha256=tok.sha256)
                 if spec.tokenize is not None and tok is not None else None)
    plugins = [m.to_dict() for m in manifest_plugins(spec, loaded.plugins, base)]
    return LockEntry(spec_sha256=sha256_text(loaded.text), dsc_version=__version__, libraries=library_versions(),
                     inputs=locked_inputs(loaded, resolve_inputs(loaded).entries),
                     template=LockedRef(ref=spec.template, sha256=template.sha256), tokenizer=tokenizer,
                     plugins=_locked_plugins(plugins))


def _locked_plugins(modules: list[dict[str, str]] | None) -> list[LockedPlugin] | None:
    return [LockedPlugin.model_validate(m) for m in modules] if modules else None


def _relative_artifact_path(loaded: LoadedSpec, out_dir: Path) -> str | None:
    # Only a path under the spec's directory: anything else would differ between machines.
    try:
        return Path(out_dir).resolve().relative_to(loaded.base_dir.resolve()).as_posix()
    except ValueError:
        return None


def entry_from_manifest(loaded: LoadedSpec, manifest: Manifest | dict[str, Any], out_dir: Path | None = None
                        ) -> LockEntry:
    """The lock entry a built artifact's manifest pins (a build's manifest dict is checked first)."""
    m = manifest if isinstance(manifest, Manifest) else Manifest.model_validate(manifest)
    return LockEntry(
        spec_sha256=m.spec_sha256,
        dsc_version=m.dsc_version,
        libraries=m.libraries,
        inputs=locked_inputs(loaded, [i.model_dump() for i in m.inputs]),
        template=LockedRef(ref=m.template.ref, sha256=m.template.sha256),
        tokenizer=LockedRef(ref=m.tokenizer.ref, sha256=m.tokenizer.sha256) if m.tokenizer else None,
        plugins=_locked_plugins([p.model_dump() for p in m.plugins] if m.plugins else None),
        artifact=LockedArtifact(version=m.version, format=m.format,
                                path=_relative_artifact_path(loaded, out_dir) if out_dir is not None else None),
    )


# ---------------------------------------------------------------------------------------------
# Comparing
# ---------------------------------------------------------------------------------------------


def _short(h: str | None) -> str:
    return f"{h[:12]}…" if h else "none"


T = TypeVar("T")


def _paired(before: dict[Any, T], after: dict[Any, T]) -> Iterator[tuple[Any, T | None, T | None]]:
    """(key, locked entry, current entry) for every key of either side, in key order."""
    for key in sorted(before.keys() | after.keys()):
        yield key, before.get(key), after.get(key)


def compare(locked: LockEntry, now: LockEntry, *, artifact: bool = False) -> list[str]:
    """Every way `now` differs from `locked`, inputs first, each naming what moved."""
    out: list[str] = []
    for key, a, b in _paired({i.key(): i for i in locked.inputs}, {i.key(): i for i in now.inputs}):
        what = f"input {key[1]} (source '{key[0]}')"
        if b is None:
            out.append(f"{what} is in the lock but no longer read (removed, or the spec's path changed)")
        elif a is None:
            out.append(f"{what} is not in the lock (a new file, or the spec's path changed)")
        elif a.hub is not None or b.hub is not None:
            if a.revision != b.revision:
                out.append(f"{what}: revision {a.revision} locked, the spec now pins {b.revision}")
            elif a.resolved and b.resolved and a.resolved != b.resolved:
                out.append(f"{what}: revision {a.revision} now points at commit {b.resolved[:12]}, "
                           f"locked at {a.resolved[:12]}")
        elif a.sha256 != b.sha256 or a.size != b.size:
            change = f"sha256 {_short(a.sha256)} → {_short(b.sha256)}"
            if a.size != b.size:
                change += f", size {a.size} → {b.size} bytes"
            out.append(f"{what} changed: {change}")
    if locked.spec_sha256 != now.spec_sha256:
        out.append(f"the spec changed since the lock was written (sha256 {_short(locked.spec_sha256)} → "
                   f"{_short(now.spec_sha256)})")
    if locked.template != now.template:
        out.append(f"template '{now.template.ref}' changed: sha256 {_short(locked.template.sha256)} → "
                   f"{_short(now.template.sha256)}" if locked.template.ref == now.template.ref else
                   f"template '{locked.template.ref}' locked, the spec now uses '{now.template.ref}'")
    if locked.tokenizer != now.tokenizer:
        a, b = locked.tokenizer, now.tokenizer
        if a is None or b is None:
            out.append(f"tokenizer {'none' if a is None else repr(a.ref)} locked, now "
                       f"{'none' if b is None else repr(b.ref)}")
        else:
            out.append(f"tokenizer '{b.ref}' changed: sha256 {_short(a.sha256)} → {_short(b.sha256)}")
    out += _compare_plugins(locked.plugins or [], now.plugins or [])
    if locked.dsc_version != now.dsc_version:
        out.append(f"dsc {locked.dsc_version} locked, dsc {now.dsc_version} running")
    for name in sorted(locked.libraries.keys() | now.libraries.keys()):
        if name == "dsc":
            continue
        a_v, b_v = locked.libraries.get(name), now.libraries.get(name)
        if a_v != b_v:
            out.append(f"library {name} {a_v or 'absent'} locked, {b_v or 'absent'} installed "
                       "(the artifact's bytes depend on it)")
    if artifact and locked.artifact is not None and now.artifact is not None \
            and locked.artifact.version != now.artifact.version:
        out.append(f"the build gives artifact version {now.artifact.version}, the lock says "
                   f"{locked.artifact.version}")
    return out


def _compare_plugins(locked: list[LockedPlugin], now: list[LockedPlugin]) -> list[str]:
    """Each plugin module whose source moved, appeared or went, by name and path."""
    out = []
    for key, a, b in _paired({(p.module, p.path): p for p in locked}, {(p.module, p.path): p for p in now}):
        what = f"plugin '{key[0]}' ({key[1]})"
        if b is None:
            out.append(f"{what} is in the lock but the build no longer uses it")
        elif a is None:
            out.append(f"{what} is not in the lock (a new plugin, or one the spec now uses)")
        elif a.sha256 != b.sha256:
            out.append(f"{what} changed: sha256 {_short(a.sha256)} → {_short(b.sha256)}")
    return out


def format_mismatches(title: str, mismatches: list[str]) -> str:
    listed = mismatches[:MAX_LISTED]
    more = len(mismatches) - len(listed)
    return title + "".join(f"\n  - {m}" for m in listed) + (f"\n  - … and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------------------------
# Reading and writing the file
# ---------------------------------------------------------------------------------------------


def read_lock(path: str | Path) -> LockFile | None:
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return LockFile.model_validate(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as e:
        detail = e.errors(include_url=False)[0]["msg"] if isinstance(e, ValidationError) else str(e)
        raise LockError(f"{p} is not a valid dsc lock file ({detail}); delete it and run `dsc build` "
                        "to write a new one") from None


def lock_text(lock: LockFile) -> str:
    return json.dumps(lock.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@contextlib.contextmanager
def _directory_locked(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of a directory's lock file between concurrent builds of its
    specs (flock on the directory itself: no extra file beside the specs)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no concurrent-build protection
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def write_entry(spec_path: str | Path, entry: LockEntry) -> Path:
    """Put `entry` into the lock beside the spec (atomically), keeping other specs' entries."""
    path = lock_path(spec_path)
    with _directory_locked(path.parent):
        current = read_lock(path) or LockFile()
        specs = dict(current.specs)
        specs[Path(spec_path).name] = entry
        text = lock_text(LockFile(specs=specs))
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return path  # unchanged: leave the file (and its mtime) alone
        # Not mkstemp: its 0600 mode would make a committed lock unreadable to others; os.open
        # with 0666 leaves the mode to the umask, like any file the user writes.
        tmp = path.parent / f".{LOCK_FILE}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path


def locked_entry(loaded: LoadedSpec) -> LockEntry:
    path = lock_path(loaded.path)
    lock = read_lock(path)
    entry = lock.specs.get(loaded.path.name) if lock is not None else None
    if entry is None:
        where = f"{path} has no entry for {loaded.path.name}" if lock is not None else f"no lock file at {path}"
        raise LockError(f"--locked: {where}; run `dsc build {loaded.path}` (without --locked) to write it")
    return entry


def check_locked(loaded: LoadedSpec) -> LockEntry:
    """The spec's lock entry, after checking that nothing it pins has moved (LockError if so)."""
    entry = locked_entry(loaded)
    mismatches = compare(entry, current_entry(loaded))
    if mismatches:
        raise LockError(format_mismatches(
            f"--locked: {loaded.path} no longer matches {lock_path(loaded.path)}:", mismatches)
            + "\nRestore what changed, or run `dsc build` without --locked to update the lock.")
    return entry


# ---------------------------------------------------------------------------------------------
# Building with the lock
# ---------------------------------------------------------------------------------------------


def build_with_lock(spec_path: str | Path, out_dir: str | Path | None = None, *, workers: int = 1,
                    progress: Any = None, locked: bool = False, cache: bool = True,
                    cache_dir: str | Path | None = None, executor: Any = None):
    """`dsc build`: build, then write the spec's lock entry; with `locked`, check the lock before
    building and the artifact version before the new artifact replaces the old one, and leave
    the lock as it is."""
    from dsc.compiler.engine.driver import build_loaded
    from dsc.spec.model import default_out_dir

    loaded = load_spec(spec_path)
    out = Path(out_dir) if out_dir is not None else default_out_dir(loaded)
    if not locked:
        result = build_loaded(loaded, out, workers=workers, executor=executor, progress=progress, cache=cache,
                              cache_dir=cache_dir)
        write_entry(loaded.path, entry_from_manifest(loaded, result.manifest, result.out_dir))
        return result
    entry = check_locked(loaded)

    def before_place(manifest: dict[str, Any]) -> None:
        mismatches = compare(entry, entry_from_manifest(loaded, manifest), artifact=True)
        if mismatches:
            raise LockError(format_mismatches(
                f"--locked: the build does not reproduce {lock_path(loaded.path)} (nothing was replaced):",
                mismatches))

    return build_loaded(loaded, out, workers=workers, executor=executor, progress=progress,
                        before_place=before_place, cache=cache, cache_dir=cache_dir)
