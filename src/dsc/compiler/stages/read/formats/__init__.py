"""Input formats: each turns one raw row (a dict) into the canonical messages.

A format is a function `fn(row, fields) -> Normalised` registered under a name. `fields` maps
each canonical field the format reads to the raw field path it reads it from: the format's
declared defaults, overridden by the spec's `fields:` (so `sharegpt` can read `turns/speaker/
text` instead of `conversations/from/value`). A few declared fields are settings rather than
paths (e.g. `react`'s `observation_role`); those declare their allowed values in `choices`,
which the spec checks before any row is read. Paths may be dotted (`info.reward`); an empty
path switches an optional field off.

A row that cannot be normalised raises `BadRow(reason)`; the build quarantines it with the
reason, so make the reason say where and what (`message 3: unknown role 'bot' (allowed: ...)`).

Built-in formats: `openai`, `sharegpt`, `alpaca`, `nat`, `agent_flan`, `react` (one module each).

Adding your own format
----------------------
Register it before the spec is loaded::

    from dsc.compiler.stages.read.formats import BadRow, Message, Normalised, register_format, require_str, without

    @register_format("qa_pairs", fields={"question": "q", "answer": "a"})
    def qa_pairs(row: dict, fields: dict[str, str]) -> Normalised:
        \"\"\"One question/answer pair per row.\"\"\"
        q, a = require_str(row, fields["question"]), require_str(row, fields["answer"])
        return Normalised(messages=[Message("user", q), Message("assistant", a)],
                          extra=without(row, [fields["question"], fields["answer"]]))

then name the module under the spec's `plugins:` (`plugins: [my_formats.py]`) and use
`format: qa_pairs` in a source. To make it available without naming it, expose the module as an
entry point of your package; dsc imports entry points of group `dsc.formats` the first time a
format is looked up (`dsc.compiler.core.registry` has the rules every registry shares)::

    [project.entry-points."dsc.formats"]
    qa_pairs = "mypackage.formats"

Format functions must be pure (the same row and fields always give the same result): the
build runs them in worker processes and relies on that for byte-identical artifacts.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from dsc.compiler.core.errors import allowed_list, did_you_mean
from dsc.compiler.record import BadRow, Message, ToolCall
from dsc.compiler.core.registry import Registry

from .common import (
    MISSING,
    Normalised,
    get_path,
    kind,
    optional_str,
    parse_arguments,
    parse_messages,
    parse_tool_call,
    parse_tools,
    require_str,
    without,
)

FormatFn = Callable[[dict[str, Any], dict[str, str]], Normalised]

__all__ = [
    "FORMATS",
    "FORMAT_REGISTRY",
    "MISSING",
    "BadRow",
    "FormatDef",
    "FormatFn",
    "Message",
    "Normalised",
    "ToolCall",
    "format_names",
    "get_format",
    "get_path",
    "kind",
    "optional_str",
    "parse_arguments",
    "parse_messages",
    "parse_tool_call",
    "parse_tools",
    "register_format",
    "require_str",
    "without",
]


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

    def __call__(self, row: dict[str, Any], overrides: Mapping[str, str] | None = None) -> Normalised:
        return self.fn(row, self.resolve_fields(overrides or {}))


FORMAT_REGISTRY: Registry[FormatDef] = Registry("format", group="dsc.formats")
FORMATS: dict[str, FormatDef] = FORMAT_REGISTRY.defs  # by name (the registry's own dict)


def register_format(
    name: str,
    fields: Mapping[str, str] | None = None,
    *,
    choices: Mapping[str, tuple[str, ...]] | None = None,
    replace: bool = False,
) -> Callable[[FormatFn], FormatFn]:
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

    return FORMAT_REGISTRY.registering(name, lambda fn: FormatDef(
        name=name, fn=fn, fields=MappingProxyType(fields), choices=MappingProxyType(choices),
        doc=(fn.__doc__ or "").strip()), replace=replace)


def format_names() -> list[str]:
    return FORMAT_REGISTRY.names()


def get_format(name: str) -> FormatDef:
    """The registered format `name`; ValueError listing the registered names otherwise."""
    return FORMAT_REGISTRY.get(name)


# Built-in formats register themselves on import.
from . import agent_flan, alpaca, nat, openai, react, sharegpt  # noqa: E402,F401
