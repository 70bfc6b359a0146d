"""The generic registry and registry-entry model shared by `convert:` and `negatives:` (and the
registry under `filters:`)."""
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from dsc.record import Conversation, Message, Meta, Provenance
from dsc.core.strict import Strict
from dsc.spec.steps import ConvertStep
from dsc.spec.registries import FilterRegistry
from dsc.spec.steps import NegativeRule
from dsc.spec.steps import RegistryEntry, prepare_entries, registry_entry
from dsc.spec.registries import StepRegistry as Registry

THINGS = Registry("thing")


class SizeOptions(Strict):
    size: int = 1
    label: str | None = None


@THINGS.register("grow", SizeOptions, prepare=lambda opts, base: (opts.size, base))
def grow(conv, opts, prepared):
    """Grows a row."""
    return prepared


@THINGS.register("shrink", SizeOptions)
def shrink(conv, opts, prepared):
    return prepared


ThingEntry = registry_entry("ThingEntry", key="thing", registry=THINGS, module=__name__)


def conv(source: str) -> Conversation:
    return Conversation("x", "x", [Message("user", "hi")], Meta(source, Provenance("f", "h", 0)))


def test_an_entry_validates_against_its_registry_and_dumps_as_written():
    e = ThingEntry.model_validate({"thing": "grow", "where": {"source": "a"}, "size": 3})
    assert isinstance(e, RegistryEntry) and e.thing == e.name == "grow"
    assert e.options == SizeOptions(size=3) and e.definition.fn is grow and e.definition.doc == "Grows a row."
    assert e.model_dump() == {"thing": "grow", "where": {"source": "a"}, "size": 3, "label": None}
    assert ThingEntry.model_validate(e.model_dump()) == e
    assert ThingEntry.model_validate({"thing": "shrink"}).model_dump() == {"thing": "shrink", "size": 1, "label": None}
    assert e.applies_to(conv("a")) and not e.applies_to(conv("b"))
    assert prepare_entries([e, ThingEntry.model_validate({"thing": "shrink"})], Path("/d")) == [(3, Path("/d")), None]


@pytest.mark.parametrize("data,msg", [
    ({"thing": "grwo"}, "unknown thing 'grwo' (did you mean 'grow'?); registered: 'grow', 'shrink'"),
    ({"size": 2}, "missing `thing` (one of 'grow', 'shrink')"),
    ({"thing": "grow", "sise": 2}, "thing 'grow': unknown key 'sise' (did you mean 'size'?); allowed: 'label', 'size', "
                                   "'where'"),
    ({"thing": "grow", "size": "big"}, "thing 'grow': 'size': Input should be a valid integer"),
    ({"thing": "grow", "where": {"sorce": "a"}}, "sorce"),
])
def test_entry_errors_name_the_registry_and_what_is_allowed(data, msg):
    with pytest.raises(ValidationError, match=re.escape(msg)):
        ThingEntry.model_validate(data)


def test_the_spec_entries_differ_only_in_their_key():
    assert (ConvertStep.entry_key, NegativeRule.entry_key) == ("step", "rule")
    assert list(ConvertStep.model_fields) == ["step", "where", "options"]
    assert list(NegativeRule.model_fields) == ["rule", "where", "options"]
    assert ConvertStep.__module__ == NegativeRule.__module__ == "dsc.spec.steps"
    with pytest.raises(ValidationError, match="missing `rule`"):
        NegativeRule.model_validate({"step": "no_tools"})


def test_keys_that_would_clash_are_refused():
    for key in ("where", "options", "name", "model_dump"):
        with pytest.raises(ValueError, match="cannot be the key"):
            registry_entry("Bad", key=key, registry=THINGS, module=__name__)


def test_registering_a_name_twice():
    reg = Registry("widget")
    reg.register("a", SizeOptions)(grow)
    reg.register("a", SizeOptions)(grow)  # the same function again: fine
    with pytest.raises(ValueError, match=r"widget 'a' is defined twice: by test_transforms_registry:grow \(\S+:\d+\) "
                                         r"and by test_transforms_registry:shrink"):
        reg.register("a", SizeOptions)(shrink)
    reg.register("a", SizeOptions, replace=True)(shrink)
    assert reg.get("a").fn is shrink
    filters = FilterRegistry()
    filters.register("f", int)(grow)
    with pytest.raises(ValueError, match="filter 'f' is defined twice"):
        filters.register("f")(shrink)
    with pytest.raises(ValueError, match="unknown filter 'g'; registered: 'f'"):
        filters.get("g")
