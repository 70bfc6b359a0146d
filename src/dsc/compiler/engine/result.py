"""What a build hands back to its caller: where the artifact is, its manifest, and what it took
from the cache."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SourceCacheReport:
    """What a build took from the cache for one source."""

    normalised: str  # "hit": read from the cache; "miss": read and normalised now
    rendered_reused: int = 0  # selected rows whose render + tokenise results came from the cache
    rendered_new: int = 0  # selected rows rendered (and tokenised) now

    def to_dict(self) -> dict[str, Any]:
        return {"normalised": self.normalised, "rendered_reused": self.rendered_reused,
                "rendered_new": self.rendered_new}


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict[str, Any]
    quarantined: int
    written: dict[str, int]
    warnings: list[str] = field(default_factory=list)
    cache: dict[str, SourceCacheReport] = field(default_factory=dict)  # per emitted source
    cache_dir: Path | None = None  # None: built without the cache
    tokenizer_paths: str | None = None  # RowTokenizer.fast_paths() when tokenised
