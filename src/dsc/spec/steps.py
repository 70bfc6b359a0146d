"""The spec entries that name a registered step: `filters:` (`- name` or `- {name: arg}`, plus
`where`), `convert:` and `negatives:` (`{step|rule: name, where: ..., **options}`, the options
validated against the step's options model).

    convert:
      - {step: tag, where: {source: x}, pattern: "...", set: {method: reflexion}}
    negatives:
      - {rule: no_tools, response: "..."}

`registry_entry(...)` makes the model of one such list (only the key's name differs); it validates
to `{<key>: name, where, options: <options model>}` and dumps back to the flat form as written.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import (
    BaseModel,
    SerializeAsAny,
    TypeAdapter,
    ValidationError,
    create_model,
    model_serializer,
    model_validator,
)

from dsc.core.errors import allowed_list, did_you_mean, one_line
from dsc.core.strict import Strict
from dsc.record import Conversation
from dsc.spec.registries import CONVERTERS, FILTERS, NEGATIVE_RULES, StepDef, StepRegistry
from dsc.spec.sections import Where, matches


class FilterEntry(Strict):
    name: str
    arg: Any = None
    where: Where | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {data: None}
        if not isinstance(data, dict) or "name" in data:
            return data
        rest = dict(data)
        where = rest.pop("where", None)
        if len(rest) != 1:
            raise ValueError("a filter is a name, or a mapping of one name to its argument (plus `where`)")
        (name, arg), = rest.items()
        d = FILTERS.get(str(name))
        if d.arg is None:
            if arg is not None:
                raise ValueError(f"filter '{name}' takes no argument")
        else:
            if arg is None:
                raise ValueError(f"filter '{name}' needs an argument")
            try:
                arg = TypeAdapter(d.arg).validate_python(arg)
            except ValidationError as e:
                raise ValueError(f"filter '{name}': {e.errors(include_url=False)[0]['msg']} (got {arg!r})") from None
        return {"name": name, "arg": arg, "where": where}

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> Any:
        d = handler(self)
        if d.get("where"):
            return {"where": d["where"], d["name"]: d["arg"]}
        return d["name"] if d["arg"] is None else {d["name"]: d["arg"]}


def split_entry(data: Any, key: str, registry: StepRegistry) -> Any:
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
    entry_registry: ClassVar[StepRegistry]

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


def registry_entry(model_name: str, *, key: str, registry: StepRegistry, module: str) -> type[RegistryEntry]:
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


# One `convert:` entry: `{step: <name>, where: ..., **options}`.
ConvertStep = registry_entry("ConvertStep", key="step", registry=CONVERTERS, module=__name__)
# One `negatives:` entry: `{rule: <name>, where: ..., **options}`.
NegativeRule = registry_entry("NegativeRule", key="rule", registry=NEGATIVE_RULES, module=__name__)


def prepare_entries(entries: list[RegistryEntry], base_dir: Path) -> list[Any]:
    """What each entry's step needs, read once (ValueError naming a bad file)."""
    return [e.prepare(base_dir) for e in entries]
