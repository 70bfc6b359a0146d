"""Import paths that moved when the package took its `src/dsc/` layout, kept working.

A plugin written as `from dsc.compiler.formats import register_format` (the path the README gave
before) imports the module that now lives at `dsc.compiler.stages.read.formats`: the very same
module object under both names, so registries, classes and `isinstance` checks are shared. dsc's
own code imports only the new paths (`tests/test_layout.py` checks it).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# old import name -> where the module lives now (a package's submodules follow it)
MOVED: dict[str, str] = {
    "dsc.artifact_commands": "dsc.cli.artifact_commands",
    "dsc.cache_commands": "dsc.cli.cache_commands",
    "dsc.options": "dsc.cli.options",
    "dsc.runtime_commands": "dsc.cli.runtime_commands",
    "dsc.compiler.artifact": "dsc.compiler.stages.write.artifact",
    "dsc.compiler.build": "dsc.compiler.engine.driver",
    "dsc.compiler.cache": "dsc.compiler.engine.cache",
    "dsc.compiler.cache_upkeep": "dsc.compiler.engine.cache_upkeep",
    "dsc.compiler.card": "dsc.compiler.stages.write.card",
    "dsc.compiler.diff": "dsc.compiler.artifacts.diff",
    "dsc.compiler.errors": "dsc.compiler.core.errors",
    "dsc.compiler.executors": "dsc.compiler.engine.executors",
    "dsc.compiler.formats": "dsc.compiler.stages.read.formats",
    "dsc.compiler.init_spec": "dsc.compiler.spec.init_spec",
    "dsc.compiler.inspection": "dsc.compiler.artifacts.inspection",
    "dsc.compiler.lock": "dsc.compiler.artifacts.lock",
    "dsc.compiler.mix": "dsc.compiler.stages.select.mix",
    "dsc.compiler.plan": "dsc.compiler.artifacts.plan",
    "dsc.compiler.plugins": "dsc.compiler.core.plugins",
    "dsc.compiler.registry": "dsc.compiler.core.registry",
    "dsc.compiler.render": "dsc.compiler.stages.render.render",
    "dsc.compiler.report": "dsc.compiler.artifacts.report",
    "dsc.compiler.rowfiles": "dsc.compiler.engine.rowfiles",
    "dsc.compiler.sandbox": "dsc.compiler.core.sandbox",
    "dsc.compiler.segments": "dsc.compiler.stages.tokenize.segments",
    "dsc.compiler.sources": "dsc.compiler.stages.read.sources",
    "dsc.compiler.templating": "dsc.compiler.stages.render.templating",
    "dsc.compiler.timings": "dsc.compiler.engine.timings",
    "dsc.compiler.token_bytes": "dsc.compiler.stages.tokenize.token_bytes",
    "dsc.compiler.tokenize": "dsc.compiler.stages.tokenize.tokenize",
    "dsc.compiler.toolschema": "dsc.compiler.core.toolschema",
    "dsc.compiler.transforms": "dsc.compiler.stages.transforms",
    "dsc.compiler.verify": "dsc.compiler.artifacts.verify",
    "dsc.compiler.weights": "dsc.compiler.stages.render.weights",
    "dsc.compiler.words": "dsc.compiler.stages.tokenize.words",
}


def new_name(old: str) -> str | None:
    """Where the module once imported as `old` lives now (None: it did not move)."""
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix):]
    return None


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        # The module itself, not a copy: its own __name__/__spec__ stay (the import system only
        # fills attributes a module lacks), so pickling and relative imports use the new name.
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        return None


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 (importlib's signature)
        if not fullname.startswith("dsc."):
            return None
        moved = new_name(fullname)
        if moved is None:
            return None
        module = importlib.import_module(moved)
        return importlib.machinery.ModuleSpec(fullname, _Alias(moved), is_package=hasattr(module, "__path__"))


def install() -> None:
    # First in line: an old package's alias carries the new package's __path__, so the path
    # finder would otherwise load its submodules a second time, as separate module objects.
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
