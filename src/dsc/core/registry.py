"""The one registry type: everything a user adds to dsc by name (formats, filters, convert steps,
negative rules, scorers, tools) is a `Registry` of definitions, each with the function `fn` that
implements it.

The same rules hold for every registry:

- A name is defined once. Registering a taken name with another function is an error naming both
  definitions (`module:qualname (file:line)` of each), so a plugin can never silently shadow a
  built-in or another plugin; `replace=True` overrides deliberately. Registering the same
  function again, the function of the same place (file and qualified name) again — a plugin
  module imported a second time, or re-imported after an edit — or the same function of a
  byte-identical copy of its module replaces the definition.
- Plugins installed as packages are found through the entry-point group of the registry
  (`dsc.formats`, `dsc.filters`, `dsc.converters`, `dsc.negatives`, `dsc.scorers`,
  `dsc.tools`), imported the first time the registry is looked up (never at `import dsc`); their
  names collide with the built-ins' by the rule above.
- An unknown name is an error listing what is registered, with a did-you-mean.

Each definition remembers the sha256 of its defining module's source as it was when it was
registered (`source_sha256`), so a build can key its cache and its version on the plugin code it
ran (`dsc.core.plugins`).

This module imports nothing heavy: the runtime's scorers and tools use it too.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from dsc.core.errors import allowed_list, did_you_mean
from dsc.core.hashing import sha256_bytes


def _package_dirs(*names: str) -> tuple[Path, ...]:
    dirs = []
    for name in names:
        spec = importlib.util.find_spec(name)
        dirs += [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    return tuple(dirs)


# Where dsc's own code lives: its definitions are covered by dsc's version and code hash.
_DSC_DIRS = _package_dirs("dsc", "dsc.compiler", "dsc.runtime")


class _Def(Protocol):
    @property
    def fn(self) -> Callable[..., Any]: ...


D = TypeVar("D", bound=_Def)
F = TypeVar("F", bound=Callable[..., Any])


class DuplicateNameError(ValueError):
    """A name registered twice, by two different definitions."""


class UnknownNameError(ValueError):
    """A name no definition (built-in, plugin or entry point) registered."""


class PluginLoadError(ValueError):
    """An entry-point plugin that cannot be imported."""


@dataclass(frozen=True)
class Origin:
    """Where a definition's function is defined."""

    module: str
    qualname: str
    file: str | None  # resolved path of the source file (None: no Python source, e.g. a builtin)
    line: int | None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file else "no source file"
        return f"{self.module}:{self.qualname} ({where})"

    def same_place(self, other: "Origin") -> bool:
        return self.file is not None and self.file == other.file and self.qualname == other.qualname

    @property
    def builtin(self) -> bool:
        """Defined in dsc itself."""
        return self.file is not None and any(Path(self.file).is_relative_to(d) for d in _DSC_DIRS)


def _resolved(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return path


def origin_of(fn: Callable[..., Any]) -> Origin:
    """Where `fn` is defined (through decorators that set `__wrapped__`)."""
    target = inspect.unwrap(fn)
    code = getattr(target, "__code__", None)
    if code is not None:
        file, line = _resolved(code.co_filename), code.co_firstlineno
    else:
        try:
            file = _resolved(inspect.getsourcefile(target) or "") or None
            line = inspect.getsourcelines(target)[1] if file else None
        except (OSError, TypeError):
            file, line = None, None
    return Origin(getattr(target, "__module__", None) or "?", getattr(target, "__qualname__", None) or repr(target),
                  file, line)


# sha256 of each user module's source as last registered from, by resolved path. The plugin
# loader records the bytes it executed (`note_source`); any other module's file is read when its
# first definition registers (keyed by size and mtime, so each file is read once per version).
_SOURCES: dict[str, tuple[tuple[int, int] | None, str]] = {}


def note_source(file: str, sha256: str) -> None:
    """Record that `file`'s definitions come from source with this sha256 (the plugin loader)."""
    _SOURCES[_resolved(file)] = (None, sha256)


def _stat_key(file: str) -> tuple[int, int] | None:
    try:
        st = os.stat(file)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _read_source_sha256(file: str) -> str | None:
    recorded = _SOURCES.get(file)
    stat = _stat_key(file)
    if recorded is not None and (recorded[0] is None or recorded[0] == stat):
        return recorded[1]
    try:
        digest = sha256_bytes(Path(file).read_bytes())
    except OSError:
        return None
    _SOURCES[file] = (stat, digest)
    return digest


def source_sha256(fn: Callable[..., Any]) -> str | None:
    """The sha256 of the source of `fn`'s defining module as it was registered (None for dsc's
    own definitions, which dsc's version and code hash cover, and for code without a file)."""
    origin = origin_of(fn)
    if origin.file is None or origin.builtin:
        return None
    return _read_source_sha256(origin.file)


_ALL: list["Registry[Any]"] = []


def forget_file(file: str) -> None:
    """Drop every definition made by the module at `file` (before it is executed again, so that
    a definition renamed or removed by an edit does not linger)."""
    file = _resolved(file)
    for registry in _ALL:
        for name in [n for n, d in registry.defs.items() if origin_of(d.fn).file == file]:
            del registry.defs[name]


class Registry(Generic[D]):
    """Definitions by name (`defs`: those made so far). `kind` names them in errors ("unknown
    <kind> 'x'"); `group` is the entry-point group plugins register them under (None: no
    entry-point discovery); `builtins` declares dsc's own definitions by name, each with the
    module that defines it, imported the first time that name is looked up (so a registry can be
    declared, and its names listed and checked, in a layer below the code that implements them)."""

    def __init__(self, kind: str, group: str | None = None, builtins: Mapping[str, str] | None = None):
        self.kind = kind
        self.group = group
        self.builtins: dict[str, str] = dict(builtins or {})
        self.defs: dict[str, D] = {}
        self.entry_points_loaded = group is None
        _ALL.append(self)

    def _load_builtin(self, name: str) -> None:
        module = self.builtins.get(name)
        if module is not None and name not in self.defs:
            importlib.import_module(module)
            if name not in self.defs:
                raise RuntimeError(f"built-in {self.kind} '{name}' is declared in {module}, which does not define it")

    def load_builtins(self) -> None:
        """Import every built-in definition (to list them with their functions)."""
        for name in sorted(self.builtins):
            self._load_builtin(name)

    # -- defining ------------------------------------------------------------------------------

    def add(self, name: str, definition: D, *, replace: bool = False) -> D:
        if name in self.builtins and name not in self.defs and \
                origin_of(definition.fn).module != self.builtins[name]:
            self._load_builtin(name)  # a plugin taking a built-in's name meets the built-in
        old = self.defs.get(name)
        if old is not None and not replace and old.fn is not definition.fn:
            before, now = origin_of(old.fn), origin_of(definition.fn)
            # The same place again, or the same code in a copy of its module (two projects' copies
            # of one plugin in a test session): a re-import, not a second definition.
            same_code = before.qualname == now.qualname and source_sha256(old.fn) is not None \
                and source_sha256(old.fn) == source_sha256(definition.fn)
            if not (before.same_place(now) or same_code):
                raise DuplicateNameError(
                    f"{self.kind} '{name}' is defined twice: by {before} and by {now}; rename one "
                    f"(or register with replace=True to override the first on purpose)")
        if not origin_of(definition.fn).builtin:
            source_sha256(definition.fn)  # remember the source this definition was made from
        self.defs[name] = definition
        return definition

    def registering(self, name: str, make: Callable[[Callable[..., Any]], D], *,
                    replace: bool = False) -> Callable[[F], F]:
        """A decorator that registers `make(fn)` as `name` and returns `fn` unchanged."""

        def decorate(fn: F) -> F:
            self.add(name, make(fn), replace=replace)
            return fn

        return decorate

    # -- looking up ----------------------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Import the modules of this registry's entry-point group (once); their definitions
        register as they import."""
        if self.entry_points_loaded:
            return
        self.entry_points_loaded = True
        for ep in sorted(importlib.metadata.entry_points(group=self.group), key=lambda e: (e.name, e.value)):
            try:
                ep.load()
            except DuplicateNameError as e:
                raise DuplicateNameError(f"{self.kind} plugin '{ep.name}' ({ep.value}): {e}") from None
            except Exception as e:  # noqa: BLE001 — a broken plugin must surface as one clear error
                raise PluginLoadError(f"cannot load {self.kind} plugin '{ep.name}' ({ep.value}) of entry-point "
                                      f"group '{self.group}': {type(e).__name__}: {e}") from e

    def get(self, name: str) -> D:
        self.load_entry_points()
        self._load_builtin(name)
        self.check_name(name)
        return self.defs[name]

    def check_name(self, name: str) -> str:
        """`name` if it is registered or declared (nothing imported); UnknownNameError otherwise."""
        if name not in self:
            names = self.names()
            raise UnknownNameError(f"unknown {self.kind} '{name}'{did_you_mean(name, names)}; "
                                   f"registered: {allowed_list(names) or 'none'}")
        return name

    def names(self) -> list[str]:
        """Every name: the built-ins (declared, whether imported yet or not) and the others."""
        self.load_entry_points()
        return sorted({*self.builtins, *self.defs})

    def __contains__(self, name: object) -> bool:
        self.load_entry_points()
        return name in self.defs or name in self.builtins

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


@dataclass(frozen=True)
class Named:
    """A definition that is only a function (scorers, tools)."""

    name: str
    fn: Callable[..., Any]


class FunctionRegistry(Registry[Named]):
    """A registry of plain functions: `@REGISTRY.register("name")`."""

    def register(self, name: str, *, replace: bool = False) -> Callable[[F], F]:
        return self.registering(name, lambda fn: Named(name, fn), replace=replace)


__all__ = ["DuplicateNameError", "FunctionRegistry", "Named", "Origin", "PluginLoadError", "Registry",
           "UnknownNameError", "forget_file", "note_source", "origin_of", "source_sha256"]
