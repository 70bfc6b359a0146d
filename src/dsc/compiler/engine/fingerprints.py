"""The fingerprints of the user code a build runs (the idea of Hugging Face datasets'
fingerprinting of the user's function, at the granularity of a module): every registered callable
the spec uses — its sources' formats, its filters, convert steps and negative rules, the scorers
and tools of its `eval:` block — traced to its defining module and that module's source sha256
(`dsc.core.plugins.module_of`). The build cache keys stage 1 of each source on the modules it runs
(`stage1_modules`); `manifest_plugins` lists the spec's plugins and every used module for
`manifest.json` (so the artifact version) and `dsc.lock`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dsc.core.plugins import LoadedPlugin, PluginModule, modules_of, plugin_module
from dsc.core.registry import Registry
from dsc.spec.model import Spec
from dsc.spec.registries import FILTERS, SCORERS, TOOLS, get_format


def _step_fns(entries: Iterable[Any]) -> list[Callable[..., Any] | None]:
    out: list[Callable[..., Any] | None] = []
    for e in entries:
        d = e.definition
        out += [d.fn, d.prepare]
    return out


def _transform_fns(spec: Spec) -> list[Callable[..., Any] | None]:
    return [FILTERS.get(f.name).fn for f in spec.filters] + _step_fns(spec.convert) + _step_fns(spec.negatives)


def stage1_modules(spec: Spec, source: str, base_dir: Path) -> list[PluginModule]:
    """The user modules stage 1 of `source` runs: its format and the row transforms."""
    return modules_of([_format_fn(spec, source), *_transform_fns(spec)], base_dir)


def _user_fn(registry: Registry[Any], name: str) -> Callable[..., Any] | None:
    """The function a plugin or entry point registered as `name` (None for a built-in: dsc's own
    code is covered by its version, and the build does not import the runtime to look)."""
    registry.load_entry_points()
    d = registry.defs.get(name)
    return d.fn if d is not None else None


def _runtime_fns(spec: Spec) -> list[Callable[..., Any] | None]:
    """The scorers and tools the spec's `eval:` block names (not run by the build; recorded)."""
    block = spec.eval
    if not isinstance(block, dict):
        return []
    tasks = block.get("tasks") if isinstance(block.get("tasks"), dict) else {}
    out: list[Callable[..., Any] | None] = []
    for task in tasks.values():
        if not isinstance(task, dict):
            continue
        for name in task.get("scorers") or []:
            out.append(_user_fn(SCORERS, name))
        for name in task.get("tools") or {}:
            out.append(_user_fn(TOOLS, name))
    return out


def manifest_plugins(spec: Spec, plugins: list[LoadedPlugin], base_dir: Path) -> list[PluginModule]:
    """The spec's plugins and every user module whose callables the spec uses, sorted."""
    found = {plugin_module(p, base_dir) for p in plugins}
    formats = [_format_fn(spec, name) for name in spec.emitted_sources()]
    found.update(modules_of([*formats, *_transform_fns(spec), *_runtime_fns(spec)], base_dir, plugins))
    return sorted(found, key=lambda m: (m.module, m.path))


def _format_fn(spec: Spec, source: str) -> Callable[..., Any] | None:
    fmt = spec.sources[source].format
    return get_format(fmt).fn if fmt is not None else None
