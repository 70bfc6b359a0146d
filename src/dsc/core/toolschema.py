"""Tool-call arguments checked against the tool's JSON Schema, by the `jsonschema` library.

Real tool specs (OpenAI function `parameters`) use the whole of JSON Schema — `anyOf`, `oneOf`,
`$ref`/`$defs`, nested `enum`, formats of their own — so dsc does not check a subset of it by
hand. The schema's own `$schema` picks the draft (`validator_for`); without one it is Draft
2020-12, the draft OpenAI's structured outputs follow. One validator is built per schema and
kept, keyed by the schema's canonical hash (the same schema in every row is checked once
against the meta-schema, and a tool offered in a million rows compiles once).

`$ref`s resolve inside the schema only: nothing is fetched (builds are offline and
deterministic), so a reference to another document is a schema error.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import SchemaError, best_match
from jsonschema.protocols import Validator

from dsc.core.canonical import content_hash

DEFAULT_VALIDATOR: type[Validator] = jsonschema.Draft202012Validator
_VALIDATORS: dict[str, Validator] = {}
_VALIDATORS_MAX = 4096  # (cleared when full: memory stays bounded, only speed depends on it)


class InvalidSchema(ValueError):
    """The tool's schema is not a valid JSON Schema (or a `$ref` in it does not resolve)."""


def validator(schema: Mapping[str, Any]) -> Validator:
    """The validator of one tool schema, built and meta-checked once (InvalidSchema if bad)."""
    key = content_hash(schema, 32)
    hit = _VALIDATORS.get(key)
    if hit is None:
        hit = _build(schema)
        if len(_VALIDATORS) >= _VALIDATORS_MAX:
            _VALIDATORS.clear()
        _VALIDATORS[key] = hit
    return hit


def _build(schema: Mapping[str, Any]) -> Validator:
    cls = jsonschema.validators.validator_for(schema, default=DEFAULT_VALIDATOR)
    try:
        cls.check_schema(schema)
    except SchemaError as e:
        raise InvalidSchema(f"not a valid JSON Schema ({_draft(cls)}): {_where(e.absolute_path, 'schema')}: "
                            f"{e.message}") from None
    # An empty registry: `$ref`s to other documents are never fetched.
    root = referencing.Registry().resolver_with_root(
        referencing.Resource.from_contents(schema, default_specification=referencing.jsonschema.DRAFT202012))
    for ref in sorted(set(_refs(schema, top=True))):
        try:
            root.lookup(ref)
        except referencing.exceptions.PointerToNowhere:
            raise InvalidSchema(f"$ref {ref!r} points to nothing in the schema") from None
        except referencing.exceptions.Unresolvable:
            raise InvalidSchema(f"$ref {ref!r} refers to another document; builds are offline, so a tool "
                                "schema's references must stay inside it ($defs)") from None
    return cls(schema, registry=referencing.Registry())


def _refs(schema: Any, top: bool = False) -> Iterator[str]:
    """The `$ref`s that resolve from the schema's root (a subschema with an `$id` of its own has
    another base URI: its references are left to validation, which reports them too)."""
    if isinstance(schema, Mapping):
        if "$id" in schema and not top:
            return
        ref = schema.get("$ref")
        if isinstance(ref, str):
            yield ref
        for key, sub in schema.items():
            if key not in ("enum", "const", "default", "examples"):  # data there, not schemas
                yield from _refs(sub)
    elif isinstance(schema, list):
        for sub in schema:
            yield from _refs(sub)


def problem(value: Any, schema: Mapping[str, Any], root: str = "arguments") -> str | None:
    """The most relevant violation of `schema` by `value` (the library's `best_match`), as
    `<JSON path>: <the library's message>` — e.g. `arguments.unit: 'kelvin' is not one of
    ['celsius', 'fahrenheit']` — or None when the value is valid."""
    check = validator(schema)
    try:
        errors = list(check.iter_errors(value))
    except referencing.exceptions.Unresolvable as e:  # a `$ref` under a nested `$id`
        raise InvalidSchema(f"$ref does not resolve inside the schema: {e}") from None
    if not errors:
        return None
    error = best_match(errors)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{_where(error.absolute_path, root)}: {error.message}{more}"


def _where(path: Any, root: str) -> str:
    out = root
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _draft(cls: type[Validator]) -> str:
    return cls.__name__.removesuffix("Validator")
