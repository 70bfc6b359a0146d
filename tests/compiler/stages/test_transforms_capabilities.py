"""Capability tagging rules and Agent-FLAN's decomposition."""
import pytest
from pydantic import ValidationError

from dsc.record import Conversation, Message, Meta, Provenance, ToolCall
from dsc.compiler.stages.transforms.capabilities import decompose, supervised_chars, tag_turns
from dsc.spec.sections import CapabilitiesSpec

RULES = [{"capability": "retrieval", "tool_call": True},
         {"capability": "understanding", "after": "tool"},
         {"capability": "reasoning", "position": "first"}]


def agent_row(source="tb"):
    return Conversation("tb:1", "g", [
        Message("system", "S"), Message("user", "q"),
        Message("assistant", "Plan first."),
        Message("assistant", "look", tool_calls=[ToolCall("search", '{"q":"x"}', "c1")]),
        Message("tool", "result", tool_call_id="c1"),
        Message("assistant", "Answer from the result."),
        Message("user", "thanks"), Message("assistant", "You're welcome.")],
        Meta(source, Provenance("f", "h", 0)))


def spec(**kw):
    return CapabilitiesSpec.model_validate({"rules": RULES, **kw})


def test_first_matching_rule_tags_each_assistant_turn():
    c = tag_turns(agent_row(), spec(default="instruction_following"))
    assert [m.capability for m in c.messages if m.role == "assistant"] == [
        "reasoning", "retrieval", "understanding", "instruction_following"]
    assert [m.capability for m in c.messages if m.role != "assistant"] == [None] * 4
    assert c.meta.capability == "retrieval"  # one turn each: a tie, broken by rule order


def test_react_text_actions_and_named_tools():
    c = Conversation("r:1", "g", [Message("user", "q"), Message("assistant", "Thought: t\nAction: search[x]"),
                                  Message("user", "Observation: o"), Message("assistant", "Action: finish[y]")],
                     Meta("r", Provenance("f", "h", 0)))
    s = CapabilitiesSpec.model_validate({"rules": [{"capability": "retrieval", "tool_call": ["search"]},
                                                   {"capability": "answer", "pattern": r"finish\["}]})
    tag_turns(c, s)
    assert [m.capability for m in c.messages] == [None, "retrieval", None, "answer"]


def test_unsupervised_turns_and_where_scoped_rules():
    c = agent_row()
    c.messages[2].loss = False
    s = CapabilitiesSpec.model_validate({"rules": [{"capability": "chat", "where": {"source": "other"}}, *RULES]})
    tag_turns(c, s)
    assert [m.capability for m in c.messages if m.role == "assistant"] == [None, "retrieval", "understanding", None]


def test_source_capability_tag_wins_for_the_row():
    c = agent_row()
    c.meta.capability = "tagged"
    assert tag_turns(c, spec()).meta.capability == "tagged"


def test_decompose_one_example_per_capability():
    c = tag_turns(agent_row(), spec(decompose=True))
    parts = decompose(c, spec(decompose=True))
    assert [p.id for p in parts] == ["tb:1@retrieval", "tb:1@understanding", "tb:1@reasoning"]
    for p in parts:
        cap = p.id.split("@")[1]
        assert p.meta.capability == cap
        sup = [m for m in p.messages if m.role == "assistant" and m.loss is not False]
        assert sup and all(m.capability == cap and m.loss is True for m in sup)
        assert p.meta.provenance.steps[-1] == f"decompose:{cap}"
    assert c.id == "tb:1" and all(m.loss is None for m in c.messages)  # the input is not changed
    plain = Conversation("x", "g", [Message("user", "u")], Meta("s", Provenance("f", "h", 0)))
    assert decompose(plain, spec()) == [plain]


def test_supervised_chars_counts_only_supervised_assistant_text():
    c = agent_row()
    assert supervised_chars(c) == len("Plan first.") + len("look") + len("search") + len('{"q":"x"}') + \
        len("Answer from the result.") + len("You're welcome.")
    c.messages[2].loss = False
    assert supervised_chars(c) == len("look") + len("search") + len('{"q":"x"}') + \
        len("Answer from the result.") + len("You're welcome.")


@pytest.mark.parametrize("kw,msg", [
    ({"rates": {"a": 1}, "proportions": {"a": 1}}, "not both"),
    ({"proportions": {"reasoning": 0.5, "retrieval": 0.4}}, "sum to 0.9"),
    ({"rates": {"reasoning": -1}}, "negative"),
])
def test_bad_ratio_specs(kw, msg):
    with pytest.raises(ValidationError, match=msg):
        spec(**kw)
