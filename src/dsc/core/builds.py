"""Where each artifact's spec was: a small index in dsc's state directory (`$DSC_STATE_DIR`,
else `$XDG_STATE_HOME/dsc`, else ~/.local/state/dsc; not the build cache, which `--no-cache`
leaves alone), written by every build, read by `dsc eval` to resolve the spec's relative `eval:`
paths (data files, tool corpora) against the spec's own directory.

The artifact itself does not record the path: its bytes must not depend on where it was
built. The index is this machine's memory of its builds; an artifact built elsewhere falls back
to looking for the files (see `dsc.runtime.evaluation.spec_dir_of`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from dsc.core.files import state_dir
from dsc.core.hashing import sha256_text


def _entry(version: str) -> Path:
    return state_dir() / "builds" / f"{version}.json"


def record_build(version: str, spec_path: Path) -> None:
    """Remember that the artifact `version` was built from `spec_path` (best effort: a state
    directory that cannot be written only costs `dsc eval` the fallback)."""
    path = _entry(version)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps({"spec": str(Path(spec_path).resolve())}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def spec_of(version: str, spec_sha256: str) -> Path | None:
    """The spec file the artifact `version` was built from, if this machine built it and the
    file still holds the same text."""
    try:
        spec = Path(json.loads(_entry(version).read_text(encoding="utf-8"))["spec"])
        if sha256_text(spec.read_text(encoding="utf-8")) == spec_sha256:
            return spec
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None
