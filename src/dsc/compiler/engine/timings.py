"""When each build stage started, produced its first rows and finished, in seconds since the
process started (`dsc build --timings`): where a build's wall time goes, start-up included,
without a profiler."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

_FALLBACK_T0 = time.monotonic()  # when /proc is not there: seconds since dsc was imported


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc, 10 ms resolution)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _FALLBACK_T0


@dataclass
class TimedProgress:
    """A build Progress that records its stages' events, passing every call on to `inner`."""

    inner: Any
    events: list[tuple[float, str]] = field(default_factory=list)
    _stage: str | None = None
    _waiting_for_rows: bool = False

    def mark(self, what: str) -> None:
        self.events.append((process_age(), what))

    def start(self, stage: str, total: int | None = None) -> None:
        self._stage, self._waiting_for_rows = stage, True
        self.mark(f"{stage}: started")
        self.inner.start(stage, total)

    def advance(self, n: int = 1) -> None:
        if self._waiting_for_rows and n:
            self._waiting_for_rows = False
            self.mark(f"{self._stage}: first rows")
        self.inner.advance(n)

    def done(self) -> None:
        self.mark(f"{self._stage}: done")
        self.inner.done()

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def report(self) -> str:
        return "\n".join(["timings (seconds since the process started):",
                          *(f"  {t:8.2f}  {what}" for t, what in self.events)])
