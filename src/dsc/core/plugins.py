"""User plugins: the spec's `plugins:` modules, imported before the rest of the spec is validated,
and the fingerprints of the plugin code a build runs.

    plugins:
      - my_formats.py          # a file, relative to the spec's directory
      - mypackage.filters      # a dotted module on sys.path

Importing a plugin runs its `@register_format` / `@FILTERS.register` / ... decorators, so the
names it registers are valid in the spec. A plugin is identified by its resolved file (its
module name in `sys.modules`) and the sha256 of its source. A file plugin is executed each time a
spec that names it is loaded (a second build, `dsc validate` then `dsc build` in one process),
its earlier definitions dropped first (`dsc.core.registry.forget_file`); a dotted module is
imported once and reloaded when its source changed. Neither counts as a duplicate name.

Fingerprints (the idea of Hugging Face datasets' fingerprinting of the user's function, at the
granularity of a module): `module_of(fn)` traces a registered callable to its defining module and
that module's source sha256 as registered. dsc's own modules are left out (dsc's version and code
hash cover them); everything else, plugin, entry point or a module the user imported, is a
`PluginModule`. Which callables a spec uses, and where the build records their modules, is
`dsc.compiler.engine.fingerprints`.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from dsc.core.hashing import sha256_bytes
from dsc.core.registry import forget_file, note_source, origin_of, source_sha256


class PluginImportError(ValueError):
    """A plugin that cannot be imported (the message says why)."""


@dataclass(frozen=True)
class PluginModule:
    """A module of user code whose source the build depends on, named the same on every machine:
    `module` its import name (a file plugin's stem), `path` its file relative to the spec's
    directory (a file plugin) or to its sys.path entry (a dotted module)."""

    module: str
    path: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"module": self.module, "path": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class LoadedPlugin:
    ref: str  # as the spec writes it
    module: ModuleType
    file: str  # resolved
    sha256: str
    is_file: bool  # a file plugin (else a dotted module)

    @property
    def display_name(self) -> str:
        return Path(self.file).stem if self.is_file else self.module.__name__


# Plugins imported in this process, by resolved file.
_LOADED: dict[str, LoadedPlugin] = {}


def _looks_like_file(ref: str) -> bool:
    return ref.endswith(".py") or "/" in ref or os.sep in ref


def _file_module_name(file: str) -> str:
    # Unique per file (two specs' `plugin.py` in different directories are different modules),
    # and a valid identifier so that pydantic/pickle can find the module in sys.modules.
    stem = re.sub(r"\W", "_", Path(file).stem)
    return f"dsc_plugin_{stem}_{sha256_bytes(file.encode())[:10]}"


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _import_file(ref: str, base_dir: Path) -> LoadedPlugin:
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise PluginImportError(f"no such file {path}")
    file = str(path.resolve())
    source = Path(file).read_bytes()
    sha = sha256_bytes(source)
    name = _file_module_name(file)
    # Executed afresh on every load (so the registries hold what this spec's plugins define
    # now), its own earlier definitions dropped first: neither a re-import nor an edit counts as
    # a duplicate name.
    forget_file(file)
    module = ModuleType(name)
    module.__file__ = file
    sys.modules[name] = module
    note_source(file, sha)
    try:
        # The bytes hashed are the bytes run (not the file read a second time).
        exec(compile(source, file, "exec"), module.__dict__)  # noqa: S102 - a plugin is the user's own code
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        _LOADED.pop(file, None)
        forget_file(file)
        raise PluginImportError(_describe(e)) from e
    loaded = LoadedPlugin(ref, module, file, sha, is_file=True)
    _LOADED[file] = loaded
    return loaded


def _import_dotted(ref: str) -> LoadedPlugin:
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", ref):
        raise PluginImportError("not a file (*.py) or a dotted module name")
    try:
        module = importlib.import_module(ref)
    except ModuleNotFoundError as e:
        if e.name is not None and (ref == e.name or ref.startswith(e.name + ".")):
            raise PluginImportError(f"no module named '{e.name}' on sys.path") from e
        raise PluginImportError(_describe(e)) from e
    except (Exception, SystemExit) as e:
        raise PluginImportError(_describe(e)) from e
    file = getattr(module, "__file__", None)
    if not file:
        raise PluginImportError("the module has no source file")
    file = str(Path(file).resolve())
    sha = sha256_bytes(Path(file).read_bytes())
    prev = _LOADED.get(file)
    if prev is not None and prev.sha256 != sha:
        forget_file(file)  # edited since it was imported: import it again
        try:
            module = importlib.reload(module)
        except (Exception, SystemExit) as e:
            _LOADED.pop(file, None)
            raise PluginImportError(_describe(e)) from e
    note_source(file, sha)
    loaded = LoadedPlugin(ref, module, file, sha, is_file=False)
    _LOADED[file] = loaded
    return loaded


def import_plugin(ref: str, base_dir: Path) -> LoadedPlugin:
    """Import one `plugins:` entry (PluginImportError saying why it cannot be imported)."""
    ref = ref.strip()
    if not ref:
        raise PluginImportError("an empty name")
    return _import_file(ref, base_dir) if _looks_like_file(ref) else _import_dotted(ref)


def import_plugin_list(refs: Sequence[str], base_dir: Path, error: Callable[[int, str, str], Exception]
                   ) -> list[LoadedPlugin]:
    """Import each of `refs` in order (a spec's `plugins:`, `--plugin`); one that cannot be
    imported, or registers a name another plugin has, raises `error(index, ref, why)`."""
    from dsc.core.registry import DuplicateNameError

    loaded = []
    for i, ref in enumerate(refs):
        try:
            loaded.append(import_plugin(ref, base_dir))
        except (PluginImportError, DuplicateNameError) as e:
            raise error(i, ref, str(e)) from None
    return loaded


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------


def _module_path(module_name: str, file: str) -> str:
    """A dotted module's file relative to its sys.path entry (the same on every machine)."""
    parts = module_name.split(".")
    return "/".join(parts) + ("/__init__.py" if Path(file).name == "__init__.py" else Path(file).suffix or ".py")


def plugin_module(p: LoadedPlugin, base_dir: Path) -> PluginModule:
    path = (Path(os.path.relpath(p.file, base_dir.resolve())).as_posix() if p.is_file
            else _module_path(p.module.__name__, p.file))
    return PluginModule(p.display_name, path, p.sha256)


def module_of(fn: Callable[..., Any], base_dir: Path, plugins: Iterable[LoadedPlugin] = ()) -> PluginModule | None:
    """The user module `fn` is defined in, with its source hash as registered (None: dsc's own).
    One of the spec's `plugins` with that source names it (a byte-identical copy of a plugin
    loaded for another spec in this process is this spec's own)."""
    sha = source_sha256(fn)
    if sha is None:
        return None
    for p in plugins:
        if p.sha256 == sha:
            return plugin_module(p, base_dir)
    origin = origin_of(fn)
    assert origin.file is not None
    plugin = _LOADED.get(origin.file)
    if plugin is not None:
        return plugin_module(plugin, base_dir)
    return PluginModule(origin.module, _module_path(origin.module, origin.file), sha)


def modules_of(fns: Iterable[Callable[..., Any] | None], base_dir: Path,
             plugins: Iterable[LoadedPlugin] = ()) -> list[PluginModule]:
    plugins = list(plugins)
    found = {m for fn in fns if fn is not None for m in [module_of(fn, base_dir, plugins)] if m is not None}
    return sorted(found, key=lambda m: (m.module, m.path))


__all__ = ["LoadedPlugin", "PluginImportError", "PluginModule", "import_plugin", "module_of", "modules_of",
           "plugin_module"]
