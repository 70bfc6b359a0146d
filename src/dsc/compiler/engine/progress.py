"""How a build reports progress: a silent default the CLI replaces with a progress bar."""
from __future__ import annotations


class Progress:
    """Stage-by-stage progress of a build (the library stays silent; `dsc build` plugs a rich
    progress bar in, `--timings` a recorder)."""

    def start(self, stage: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def done(self) -> None: ...
