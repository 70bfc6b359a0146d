"""The base models of every configuration dsc validates (spec sections, lock files, runtime
settings): an unknown key is an error, never silently dropped, so a typo is reported (with a
did-you-mean, `core.errors`) instead of falling back to a default."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are errors; values are frozen (spec sections, lock entries: read, never changed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StrictSettings(BaseModel):
    """Unknown keys are errors; values may be set after validation (settings a command adjusts)."""

    model_config = ConfigDict(extra="forbid")
