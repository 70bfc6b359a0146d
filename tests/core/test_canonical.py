"""canonical_json spells every value exactly as json.dumps(sort_keys, ensure_ascii=False, compact)
does: row ids and dedup keys are hashes of it, so one character of difference would change
every artifact."""
from __future__ import annotations

import hashlib
import json
import math
from enum import IntEnum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsc.core import canonical
from dsc.core.canonical import canonical_json, content_hash


def reference(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


_TEXT = st.one_of(st.text(max_size=20), st.text(min_size=canonical._LONG, max_size=canonical._LONG + 40),
                  st.sampled_from(["", "\"", "\\", "\n\t\x00\x1f\x7f", "é ✓ 😀 \u2028 \ud800", "a" * 300]))
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63, max_value=2**80),
                    st.floats(allow_nan=True, allow_infinity=True), _TEXT)
_KEY = st.one_of(_TEXT, st.sampled_from(["role", "content", "tool_calls", "a", "B", "é", "😀"]))
_VALUE = st.recursive(_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(_KEY, inner, max_size=5), st.tuples(inner, inner)), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(value=_VALUE)
def test_equals_json_dumps(value):
    assert canonical_json(value) == reference(value)
    assert canonical_json(value) == reference(value)  # a remembered long string spells the same


class Level(IntEnum):
    low = 1


class Tag(str):
    pass


@pytest.mark.parametrize("value", [
    {1: "a", 2: "b"}, {"x": {True: 1, False: 2}}, [Level.low, {"k": Level.low}], Tag("tagged"), {"k": Tag("v")},
    [1.0, -0.0, 1e16, 1e-7, float("nan"), math.inf, -math.inf], {"b": 1, "a": [{"d": None, "c": False}]},
    {"é": 1, "e": 2, "E": 3, "😀": 4, "\u00ff": 5}])
def test_values_outside_the_walk_are_spelt_by_json(value):
    assert canonical_json(value) == reference(value)


def test_unserialisable_values_still_raise_as_json_does():
    with pytest.raises(TypeError):
        canonical_json({"a": object()})
    with pytest.raises(TypeError):
        canonical_json({("tuple", "key"): 1})


def test_remembered_escapes_stay_bounded(monkeypatch):
    monkeypatch.setattr(canonical, "_ESCAPED_MAX_CHARS", 1000)
    monkeypatch.setattr(canonical, "_escaped_long", {})
    monkeypatch.setattr(canonical, "_escaped_chars", 0)
    texts = [f"{i:04d}" + "\"x\"\n" * 100 for i in range(20)]
    for t in texts * 2:
        assert canonical_json({"content": t}) == reference({"content": t})
    assert sum(map(len, canonical._escaped_long)) <= 1000
    # the hash is sha256 of the canonical spelling, whether the long string's escape is fresh or
    # remembered (the second call reads it from the memo)
    value = ["same", {"b": texts[0], "a": 1}]
    expected = hashlib.sha256(reference(value).encode("utf-8")).hexdigest()[:16]
    canonical._escaped_long.clear()
    assert content_hash(value) == expected
    assert texts[0] in canonical._escaped_long
    assert content_hash(value) == expected


def test_stored_json_keeps_key_order_and_hashes_do_not_depend_on_it():
    from dsc.record import Conversation, Message, Meta, Provenance, ToolCall
    from dsc.core.canonical import compact_json
    from dsc.compiler.stages.transforms.decontam import dedup_key

    value = {"b": 1, "a": [{"d": None, "c": "é"}], "é": 2.5}
    assert compact_json(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def conv(arguments: dict, tools: list) -> Conversation:
        call = ToolCall("get", compact_json(arguments), id="c1")
        return Conversation("s:1", "g", [Message("user", "q"), Message("assistant", "", tool_calls=[call])],
                            Meta("s", Provenance("f", "0", 0), extra={"z": 1, "a": 2}), tools=tools)

    tool = {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}
    one = conv({"b": 1, "a": 2}, [tool])
    other = conv({"a": 2, "b": 1}, [{"function": {"parameters": {"type": "object"}, "name": "get"}, "type": "function"}])
    stored = one.to_dict()
    assert stored["messages"][1]["tool_calls"][0]["arguments"] == '{"b":1,"a":2}'
    assert stored["tools"] == compact_json([tool]) and stored["meta"]["extra"] == '{"z":1,"a":2}'
    assert Conversation.from_dict(stored).to_dict() == stored
    assert one.messages_key() == other.messages_key()
    assert dedup_key(one) == dedup_key(other)
    assert one.messages[1].to_dict(canonical=True) == other.messages[1].to_dict(canonical=True)
    assert one.messages[1].to_dict() != other.messages[1].to_dict()
    # the template sees the stored call: its id whenever one is stored (even ""), arguments in order
    one.messages[1].tool_calls[0].id = ""
    assert one.template_messages()[1]["tool_calls"] == [
        {"type": "function", "id": "", "function": {"name": "get", "arguments": {"b": 1, "a": 2}}}]
    assert list(one.template_messages()[1]["tool_calls"][0]["function"]["arguments"]) == ["b", "a"]


def test_a_huge_string_is_escaped_but_never_remembered():
    """The escape memo serves repeated long strings (tool catalogues); a 50 MB message must not
    stay in a worker's memory after its row is done (it would be twice its size there)."""
    from dsc.core import canonical

    huge = "z" * (canonical._REMEMBERED_MAX_LEN + 1)
    assert canonical_json({"content": huge}) == json.dumps({"content": huge}, separators=(",", ":"))
    assert huge not in canonical._escaped_long
    catalogue = "a tool description " * 50
    canonical_json({"content": catalogue})
    assert catalogue in canonical._escaped_long
