"""`dsc verify SPEC [ARTIFACT]`: rebuild the spec into a temporary directory and check that the
committed artifact is exactly what it builds, file by file; and, when the spec has an entry in
`dsc.lock`, that the rebuild reproduces the lock (inputs, template, tokenizer, versions).

With no ARTIFACT, the artifact is the one the lock names (or `build/<name>` beside the spec);
when there is none (a repository that commits only the lock), the lock alone is checked.
Hidden files in the artifact directory (`.gitattributes`, `.DS_Store`) are not compared.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsc.artifact.manifest import MANIFEST, read_manifest
from dsc.artifact.reader import is_lfs_pointer, lfs_hint
from dsc.compiler.engine.validation import load_spec
from dsc.core.errors import ArtifactError, DscError, VerifyError
from dsc.core.files import files_under
from dsc.core.hashing import sha256_file
from dsc.ops.lock import LockEntry, compare, entry_from_manifest, lock_path, read_lock
from dsc.spec.model import LoadedSpec


@dataclass
class VerifyReport:
    spec: Path
    artifact: Path | None  # the artifact compared, if any
    lock: Path | None  # the lock compared, if any
    version: str  # of the rebuild
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        against = " and ".join(str(p) for p in (self.artifact, self.lock) if p is not None)
        if self.ok:
            return f"ok: {self.spec} rebuilds {against} exactly (version {self.version})"
        return f"{self.spec} does not rebuild {against}"


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in files_under(root, hidden=False)}


def _manifest_keys_differing(a: Path, b: Path) -> list[str]:
    try:
        ma, mb = read_manifest(a / MANIFEST).to_dict(), read_manifest(b / MANIFEST).to_dict()
    except DscError:  # an unreadable manifest: that it differs says enough
        return []
    return sorted(k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k))


def compare_trees(committed: Path, rebuilt: Path) -> list[str]:
    """Every file that differs between the committed artifact and the rebuild, with what is
    known about why (git-lfs pointers, edits after the build, which rows moved)."""
    out: list[str] = []
    have, want = _files(committed), _files(rebuilt)
    own_manifest: dict[str, str] = {}
    with_rows = False
    try:
        own_manifest = read_manifest(committed / MANIFEST).files
    except DscError:  # the manifest itself differs: listed below
        pass
    for name in sorted(set(have) | set(want)):
        if name not in have:
            out.append(f"{name}: missing from the artifact")
            continue
        if name not in want:
            out.append(f"{name}: not produced by the build (an extra file)")
            continue
        digest = sha256_file(have[name])  # streamed: shards can be large
        if digest == sha256_file(want[name]):
            continue
        if is_lfs_pointer(have[name]):
            out.append(f"{name}: {lfs_hint('the committed file')}")
            continue
        detail = ""
        if name == MANIFEST:
            keys = _manifest_keys_differing(committed, rebuilt)
            detail = f" (keys: {', '.join(keys)})" if keys else ""
        elif name in own_manifest:
            with_rows = True
            if digest != own_manifest[name]:
                detail = " (and it no longer matches the sha256 its own manifest records: edited after the build?)"
        out.append(f"{name}: differs{detail}")
    if with_rows:
        out.extend(_row_summary(committed, rebuilt))
    return out


def _row_summary(committed: Path, rebuilt: Path) -> list[str]:
    from dsc.ops.diff import diff_artifacts

    try:
        d = diff_artifacts(committed, rebuilt)
    except DscError:  # an unreadable artifact: the file differences above say enough
        return []
    if d.identical_rows:
        return ["rows: the same rows, but the files' bytes differ (library versions? see manifest libraries)"]
    parts = [f"rows (committed → rebuilt): +{len(d.added)} added, -{len(d.removed)} removed, "
             f"~{len(d.changed)} changed"]
    parts += [f"  changed {c.id}: {', '.join(c.fields)}" for c in d.changed[:5]]
    parts += [f"  removed {r.id}" for r in d.removed[:3]] + [f"  added {r.id}" for r in d.added[:3]]
    return parts


def _locked(loaded: LoadedSpec) -> tuple[Path, LockEntry | None]:
    path = lock_path(loaded.path)
    lock = read_lock(path)
    return path, (lock.specs.get(loaded.path.name) if lock is not None else None)


def verify(spec_path: str | Path, artifact: str | Path | None = None, *, workers: int = 1,
           progress: Any = None, cache: bool = True, cache_dir: str | Path | None = None) -> VerifyReport:
    """`cache=False` rebuilds from the inputs alone (a cache hit gives the same bytes, but CI
    may want the proof that does not rest on the cache)."""
    from dsc.compiler.engine.driver import build_loaded
    from dsc.spec.model import default_out_dir

    loaded = load_spec(spec_path)
    lpath, entry = _locked(loaded)
    if artifact is not None:
        target: Path | None = Path(artifact)
        if not target.is_dir():
            raise ArtifactError(f"artifact directory not found: {target}")
    else:
        named = entry.artifact.path if entry is not None and entry.artifact is not None else None
        target = loaded.base_dir / named if named else default_out_dir(loaded)
        if not target.is_dir():
            target = None
    if target is None and entry is None:
        raise VerifyError(f"nothing to verify {loaded.path} against: no artifact at {default_out_dir(loaded)} "
                          f"and no entry for it in {lpath}; build it first, or give the artifact directory")
    with tempfile.TemporaryDirectory(prefix="dsc-verify-") as tmp:
        result = build_loaded(loaded, Path(tmp) / "artifact", workers=workers, progress=progress, cache=cache,
                              cache_dir=cache_dir)
        report = VerifyReport(loaded.path, target, lpath if entry is not None else None, result.manifest["version"])
        if target is not None:
            report.differences += compare_trees(target, result.out_dir)
        if entry is not None:
            report.differences += [f"{lpath.name}: {m}" for m in
                                   compare(entry, entry_from_manifest(loaded, result.manifest), artifact=True)]
    return report
