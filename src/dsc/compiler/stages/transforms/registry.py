"""Registries of named steps users can add to, and the spec entries that name them.

A registry maps a name to what was registered under it (`@REGISTRY.register("name", ...)` on a
function): the format conversions (`CONVERTERS`), the negative rules (`RULES`) and the quality
filters (`FILTERS`, whose entries have their own shape: `- name` or `- {name: arg}`). All are the
one registry type of `dsc.compiler.core.registry` (duplicate names are errors, entry points are
discovered, unknown names get a did-you-mean).

A registry entry is one item of a spec list that names a registered step by a key and gives the
step's options beside it, validated against the step's options model:

    convert:
      - {step: tag, where: {source: x}, pattern: "...", set: {method: reflexion}}
    negatives:
      - {rule: no_tools, response: "..."}

`registry_entry(...)` makes that model for one list (only the key's name differs); it validates
to `{<key>: name, where, options: <options model>}` and dumps back to the flat form as written.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, SerializeAsAny, ValidationError, create_model, model_serializer, model_validator

from dsc.compiler.core.errors import allowed_list, did_you_mean
from dsc.compiler.core.registry import Registry as BaseRegistry

from .common import Strict, Where, matches, one_line

if TYPE_CHECKING:
    from dsc.compiler.record import Conversation


F = TypeVar("F", bound=Callable[..., Any])

# The generic registry, here under its old name (users' `from dsc.compiler.stages.transforms.registry
# import NamedRegistry` keeps working).
NamedRegistry = BaseRegistry


@dataclass(frozen=True)
class StepDef:
    name: str
    options: type[BaseModel]  # the step's options (a Strict model)
    fn: Callable[..., Any]
    prepare: Callable[[Any, Path], Any] | None  # (options, base_dir) → what fn needs (files read once)
    doc: str


class Registry(BaseRegistry[StepDef]):
    """Named steps with options: `@REGISTRY.register("name", OptionsModel)` on a function."""

    def register(self, name: str, options: type[BaseModel], *, prepare: Callable[[Any, Path], Any] | None = None,
                 replace: bool = False) -> Callable[[F], F]:
        return self.registering(
            name, lambda fn: StepDef(name, options, fn, prepare, (fn.__doc__ or "").strip()), replace=replace)


def split_entry(data: Any, key: str, registry: Registry) -> Any:
    """`{<key>: name, where: ..., **options}` → `{<key>, where, options: <validated model>}`."""
    if not isinstance(data, Mapping) or isinstance(data.get("options"), BaseModel):
        return data
    rest = dict(data)
    if key not in rest:
        raise ValueError(f"missing `{key}` (one of {allowed_list(registry.names())})")
    name = rest.pop(key)
    where = rest.pop("where", None)
    d = registry.get(str(name))
    try:
        options = d.options.model_validate(rest)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        if err["type"] == "extra_forbidden":
            bad = str(err["loc"][-1])
            allowed = ["where", *d.options.model_fields]
            raise ValueError(f"{registry.kind} '{name}': unknown key '{bad}'{did_you_mean(bad, allowed)}; "
                             f"allowed: {allowed_list(allowed)}") from None
        raise ValueError(f"{registry.kind} '{name}': {one_line(e)}") from None
    return {key: name, "where": where, "options": options}


class RegistryEntry(Strict):
    """Base of the models `registry_entry` makes: a registered step named by `entry_key`, the rows
    it applies to (`where`) and its validated options."""

    entry_key: ClassVar[str]
    entry_registry: ClassVar[Registry]

    if TYPE_CHECKING:  # fields, declared by registry_entry (so the key comes first, as written)
        where: Where | None
        options: BaseModel

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        return split_entry(data, cls.entry_key, cls.entry_registry)

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        d = handler(self)
        key = self.entry_key
        return {key: d[key], **({"where": d["where"]} if d.get("where") else {}), **d["options"]}

    @property
    def name(self) -> str:
        """The registered name (the value of the entry's key)."""
        return str(getattr(self, self.entry_key))

    @property
    def definition(self) -> StepDef:
        return self.entry_registry.get(self.name)

    def prepare(self, base_dir: Path) -> Any:
        """What the step needs, read once (ValueError naming a bad file); None when nothing."""
        d = self.definition
        return d.prepare(self.options, base_dir) if d.prepare is not None else None

    def applies_to(self, conv: Conversation) -> bool:
        return matches(self.where, conv)


def registry_entry(model_name: str, *, key: str, registry: Registry, module: str) -> type[RegistryEntry]:
    """The spec model of one list of `registry` entries, `{<key>: name, where: ..., **options}`;
    `model_name` is its name in errors and the JSON schema, `module` the module that defines it."""
    if key in ("where", "options") or hasattr(RegistryEntry, key):
        raise ValueError(f"'{key}' cannot be the key of a registry entry")
    model = create_model(
        model_name,
        __base__=RegistryEntry,
        __module__=module,
        **{key: (str, ...), "where": (Where | None, None), "options": (SerializeAsAny[BaseModel], ...)},  # type: ignore[call-overload]
    )
    model.entry_key = key
    model.entry_registry = registry
    return model


def prepare_entries(entries: list[RegistryEntry], base_dir: Path) -> list[Any]:
    """What each entry's step needs, read once (ValueError naming a bad file)."""
    return [e.prepare(base_dir) for e in entries]
