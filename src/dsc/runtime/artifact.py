"""Reading a compiled artifact for train and eval (the runtime never sees raw sources).

The runtime reads artifacts through the compiler's one reader (`dsc.artifact.reader`);
`load_artifact` also checks up front that the artifact carries its exact chat template, which
train and eval render with.
"""
from __future__ import annotations

from pathlib import Path

from dsc.artifact.reader import Artifact, open_artifact
from dsc.core.errors import ArtifactError

__all__ = ["Artifact", "ArtifactError", "load_artifact"]


def load_artifact(path: str | Path) -> Artifact:
    """`open_artifact`, and the artifact's chat template read (ArtifactError when it has none)."""
    art = open_artifact(path)
    art.template_source  # noqa: B018 - read now: a missing template fails before any model loads
    return art
