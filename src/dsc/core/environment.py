"""Switches set in the environment (the Hugging Face libraries' `HF_HUB_OFFLINE=1` and the like),
read one way everywhere."""
from __future__ import annotations

import os

_TRUE = ("1", "true", "yes", "on")


def flags_set(*names: str) -> list[str]:
    """Those of `names` set to a true value (`1`, `true`, `yes`, `on`, any case), in order."""
    return [n for n in names if os.environ.get(n, "").strip().lower() in _TRUE]
