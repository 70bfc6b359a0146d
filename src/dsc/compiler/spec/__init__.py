"""The spec: its model (`model`: the top-level `Spec`, YAML loading with positions; `sections`: the
models of the sections the stages read) and `dsc init` (`init_spec`).

`from dsc.compiler.spec import load_spec, Spec, LoadedSpec` works as it did when this package was
one module; the names are looked up in `model` on first use, so importing `dsc.compiler.spec.sections`
alone stays light."""
from __future__ import annotations

from typing import Any

_FROM_MODEL = ("Spec", "LoadedSpec", "load_spec", "parse_spec", "json_schema", "default_out_dir", "SplitSpec",
               "OutputSpec", "check_references", "check_runtime_blocks")


def __getattr__(name: str) -> Any:
    if name in _FROM_MODEL:
        from dsc.compiler.spec import model

        return getattr(model, name)
    raise AttributeError(f"module 'dsc.compiler.spec' has no attribute {name!r}")


__all__ = list(_FROM_MODEL)
