"""Every registry of dsc in one place, with dsc's own definitions declared by name and the module
that defines each, imported the first time the name is looked up (the pattern of
lm-evaluation-harness's lazy registry): the spec validates names against these registries without
importing the stages, the runtime or their dependencies.

| registry | what it holds | entry-point group |
|---|---|---|
| `FORMATS` | input formats: `@register_format("name", fields=...)` on `fn(row, fields) -> Normalised` | `dsc.formats` |
| `FILTERS` | quality filters: `@FILTERS.register("name", ArgType)` on `fn(conv, arg) -> reason or None` | `dsc.filters` |
| `CONVERTERS` | convert steps: `@CONVERTERS.register("name", OptionsModel)` on `fn(conv, options, prepared) -> conv` | `dsc.converters` |
| `NEGATIVE_RULES` | negative rules: `@NEGATIVE_RULES.register("name", OptionsModel, prepare=...)` | `dsc.negatives` |
| `SCORERS` | eval scorers: `@register_scorer("name")` on `fn(prediction, answer) -> float` | `dsc.scorers` |
| `TOOLS` | eval tools: `@register_tool("name")` on `fn(settings, base_dir) -> Tool` | `dsc.tools` |
| `DIALECTS` | tool-call dialects: `@register_dialect` on a `Dialect` subclass | `dsc.dialects` |

All are the one registry type of `dsc.core.registry`: a name is defined once (a plugin taking a
built-in's name is an error naming both), unknown names get a did-you-mean.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel

from dsc.core.errors import allowed_list, did_you_mean
from dsc.core.registry import FunctionRegistry, Registry

F = TypeVar("F", bound=Callable[..., Any])

_FORMATS = "dsc.compiler.stages.read.formats."
_FILTERS = "dsc.compiler.stages.transforms.filters"
_CONVERT = "dsc.compiler.stages.transforms.convert"
_NEGATIVES = "dsc.compiler.stages.transforms.negatives"
_SCORERS = "dsc.runtime.scorers"
_TOOLS = "dsc.runtime.tools"
_DIALECTS = "dsc.dialects."

# ---------------------------------------------------------------------------------------------
# Input formats
# ---------------------------------------------------------------------------------------------

FormatFn = Callable[[dict[str, Any], dict[str, str]], Any]  # (row, fields) -> Normalised


@dataclass(frozen=True)
class FormatDef:
    name: str
    fn: FormatFn
    fields: Mapping[str, str]  # canonical field -> default raw path (or default setting)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # settings' allowed values
    doc: str = ""

    def check_fields(self, overrides: Mapping[str, str]) -> None:
        """Raise ValueError when a spec's `fields:` names a field this format does not read,
        or gives a setting a value it does not accept."""
        for key, value in overrides.items():
            if key not in self.fields:
                # A common slip: naming the raw field instead of the canonical one it feeds.
                feeds = sorted(k for k, v in self.fields.items() if v == key and k not in self.choices)
                hint = (f" ('{key}' is the raw field that '{feeds[0]}' reads by default: "
                        f"write `{feeds[0]}: <your field>`)" if feeds else did_you_mean(key, self.fields))
                raise ValueError(f"format '{self.name}' has no field '{key}'{hint}; "
                                 f"its fields: {allowed_list(self.fields)}")
            allowed = self.choices.get(key)
            if allowed is not None and value not in allowed:
                raise ValueError(f"format '{self.name}': field '{key}' must be one of {allowed_list(allowed)}, "
                                 f"not {value!r}")

    def resolve_fields(self, overrides: Mapping[str, str]) -> dict[str, str]:
        return {**self.fields, **overrides}

    def __call__(self, row: dict[str, Any], overrides: Mapping[str, str] | None = None) -> Any:
        return self.fn(row, self.resolve_fields(overrides or {}))


FORMATS: Registry[FormatDef] = Registry("format", group="dsc.formats", builtins={
    "agent_flan": _FORMATS + "agent_flan", "alpaca": _FORMATS + "alpaca", "nat": _FORMATS + "nat",
    "openai": _FORMATS + "openai", "react": _FORMATS + "react", "sharegpt": _FORMATS + "sharegpt"})


def register_format(
    name: str,
    fields: Mapping[str, str] | None = None,
    *,
    choices: Mapping[str, tuple[str, ...]] | None = None,
    replace: bool = False,
) -> Callable[[F], F]:
    """Decorator: register `fn(row, fields) -> Normalised` as format `name`.

    `fields` declares every field the format reads, with its default raw path; `choices` the
    allowed values of fields that are settings. Registering a taken name is an error naming both
    definitions unless `replace=True` (so two plugins cannot silently shadow each other)."""
    fields = dict(fields or {})
    choices = {k: tuple(v) for k, v in (choices or {}).items()}
    for key, allowed in choices.items():
        if key not in fields:
            raise ValueError(f"format '{name}': choice for undeclared field '{key}'")
        if fields[key] not in allowed:
            raise ValueError(f"format '{name}': default {fields[key]!r} of '{key}' is not among its choices")

    return FORMATS.registering(name, lambda fn: FormatDef(
        name=name, fn=fn, fields=MappingProxyType(fields), choices=MappingProxyType(choices),
        doc=(fn.__doc__ or "").strip()), replace=replace)


def get_format(name: str) -> FormatDef:
    """The registered format `name`; ValueError listing the registered names otherwise."""
    return FORMATS.get(name)


# ---------------------------------------------------------------------------------------------
# Quality filters
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FilterDef:
    name: str
    arg: Any  # a type for TypeAdapter; None: the filter takes no argument
    fn: Callable[[Any, Any], str | None]  # (conversation, arg) -> the reason it fails, or None


class FilterRegistry(Registry[FilterDef]):
    """Quality filters by name: `@FILTERS.register("name", ArgType)` on `fn(conv, arg) -> reason | None`."""

    def __init__(self, kind: str = "filter", group: str | None = None, builtins: Mapping[str, str] | None = None):
        super().__init__(kind, group, builtins)

    def register(self, name: str, arg: Any = None, *, replace: bool = False):
        return self.registering(name, lambda fn: FilterDef(name, arg, fn), replace=replace)


FILTERS = FilterRegistry(group="dsc.filters", builtins={name: _FILTERS for name in (
    "finished", "max_turns", "min_turns", "no_empty_observation", "non_empty", "success", "valid_actions")})


# ---------------------------------------------------------------------------------------------
# Convert steps and negative rules: named steps with an options model
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StepDef:
    name: str
    options: type[BaseModel]  # the step's options (a Strict model)
    fn: Callable[..., Any]
    prepare: Callable[[Any, Path], Any] | None  # (options, base_dir) → what fn needs (files read once)
    doc: str


class StepRegistry(Registry[StepDef]):
    """Named steps with options: `@REGISTRY.register("name", OptionsModel)` on a function."""

    def register(self, name: str, options: type[BaseModel], *, prepare: Callable[[Any, Path], Any] | None = None,
                 replace: bool = False) -> Callable[[F], F]:
        return self.registering(
            name, lambda fn: StepDef(name, options, fn, prepare, (fn.__doc__ or "").strip()), replace=replace)


CONVERTERS = StepRegistry("convert step", group="dsc.converters", builtins={name: _CONVERT for name in (
    "cot_to_react", "react_to_chat", "react_to_tool_calls", "tag", "to_dialect", "tool_calls_to_react")})
NEGATIVE_RULES = StepRegistry("negative rule", group="dsc.negatives",
                              builtins={"irrelevant_tools": _NEGATIVES, "no_tools": _NEGATIVES})


# ---------------------------------------------------------------------------------------------
# The runtime's scorers and tools
# ---------------------------------------------------------------------------------------------

SCORERS = FunctionRegistry("scorer", group="dsc.scorers",
                           builtins={name: _SCORERS for name in ("choice", "em", "f1", "gsm8k", "yesno")})
TOOLS = FunctionRegistry("tool", group="dsc.tools",
                         builtins={name: _TOOLS for name in ("calculate", "finish", "search")})


def register_scorer(name: str, *, replace: bool = False) -> Callable[[F], F]:
    """Decorator: `@register_scorer("my_metric") def f(prediction, answer) -> float`. A name
    already registered (a built-in such as `em`, or another plugin's) is an error naming both
    definitions unless `replace=True`."""
    return SCORERS.register(name, replace=replace)


def register_tool(name: str, *, replace: bool = False) -> Callable[[F], F]:
    """Decorator: `@register_tool("lookup") def make(settings: dict, base_dir: Path) -> Tool`. A
    name already registered is an error naming both definitions unless `replace=True`."""
    return TOOLS.register(name, replace=replace)


# ---------------------------------------------------------------------------------------------
# Tool-call dialects
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DialectDef:
    """A registered dialect: its class (`fn`: where it is defined) and the one instance used."""

    name: str
    fn: type
    dialect: Any


DIALECTS: Registry[DialectDef] = Registry("dialect", group="dsc.dialects", builtins={
    "agent_flan": _DIALECTS + "agent_flan", "hermes": _DIALECTS + "hermes", "openai": _DIALECTS + "openai",
    "qwen_agent": _DIALECTS + "qwen_agent", "react": _DIALECTS + "react", "react_json": _DIALECTS + "react",
    "harmony": _DIALECTS + "harmony", "qwen3_coder": _DIALECTS + "qwen3_coder", "glm45": _DIALECTS + "glm",
    "deepseek_v31": _DIALECTS + "deepseek", "kimi_k2": _DIALECTS + "kimi", "pythonic": _DIALECTS + "pythonic",
    "qwen_agent_parallel": _DIALECTS + "qwen_agent"})


def register_dialect(cls: F) -> F:
    """Class decorator: `@register_dialect class Mine(Dialect): name = "mine" ...`."""
    DIALECTS.add(cls.name, DialectDef(cls.name, cls, cls()))  # type: ignore[attr-defined]
    return cls
