"""Rule-generated negatives: irrelevant_tools and no_tools, seeded and carrying no tool call."""
import json

from dsc.record import Conversation, Message, Meta, Provenance, ToolCall
from dsc.spec.sections import rule_of
from dsc.compiler.stages.transforms.negatives import apply_rules, prepare_rules
from dsc.spec.steps import NegativeRule

POOL = [{"name": f"tool{i}", "description": f"d{i}",
         "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}} for i in range(6)]


def chat(i=0, source="chat"):
    return Conversation(f"{source}:{i}", f"g{i}", [Message("user", f"hello {i}"), Message("assistant", f"hi {i}")],
                        Meta(source, Provenance("f", "h", i)))


def tool_row(i=0):
    return Conversation(f"tb:{i}", f"t{i}", [
        Message("system", "You have tools."), Message("user", f"weather in city {i}?"),
        Message("assistant", "Let me check.", tool_calls=[ToolCall("get_weather", '{"city":"x"}', "call_1")]),
        Message("tool", "sunny", tool_call_id="call_1"), Message("assistant", "It is sunny.")],
        Meta("tb", Provenance("f", "h", i)), tools=[{"type": "function", "function": {"name": "get_weather"}}])


def rules(*specs):
    rs = [NegativeRule.model_validate(s) for s in specs]
    return rs, prepare_rules(rs, ".")


def test_irrelevant_tools_offers_k_pool_tools_and_keeps_the_answer():
    rs, prep = rules({"rule": "irrelevant_tools", "pool": POOL, "k": 2})
    src = chat(3)
    [neg] = apply_rules(src, rs, prep, seed=1)
    assert neg.id == "chat:3~irrelevant_tools" and rule_of(neg) == "irrelevant_tools"
    assert [(m.role, m.content) for m in neg.messages] == [(m.role, m.content) for m in src.messages]
    assert not any(m.tool_calls for m in neg.messages)
    assert len(neg.tools) == 2 and {t["function"]["name"] for t in neg.tools} <= {t["name"] for t in POOL}
    assert src.tools is None and rule_of(src) is None  # the source row is untouched
    # seeded per row: same seed same tools, and rows differ among themselves
    again = apply_rules(chat(3), rs, prep, seed=1)[0]
    assert again.tools == neg.tools
    picks = {tuple(t["function"]["name"] for t in apply_rules(chat(i), rs, prep, seed=1)[0].tools) for i in range(20)}
    assert len(picks) > 3


def test_irrelevant_tools_skips_rows_that_use_tools():
    rs, prep = rules({"rule": "irrelevant_tools", "pool": POOL})
    assert apply_rules(tool_row(), rs, prep, seed=1) == []


def test_no_tools_cuts_at_the_first_call_and_answers_from_the_template():
    rs, prep = rules({"rule": "no_tools", "response": "Sorry, no tool for: {{ query }} ({{ tools | join(',') }})"})
    [neg] = apply_rules(tool_row(2), rs, prep, seed=1)
    assert [(m.role, m.content) for m in neg.messages] == [
        ("user", "weather in city 2?"), ("assistant", "Sorry, no tool for: weather in city 2? (get_weather)")]
    assert neg.tools is None and not any(m.tool_calls for m in neg.messages)
    assert neg.id == "tb:2~no_tools" and rule_of(neg) == "no_tools"
    assert apply_rules(chat(), rs, prep, seed=1) == []  # no tool use: nothing to take away


def test_no_tools_on_react_text_rows():
    rs, prep = rules({"rule": "no_tools", "response": "I can't.", "keep_system": True})
    c = Conversation("r:1", "g", [Message("system", "S"), Message("user", "Q"),
                                  Message("assistant", "Thought: t\nAction: search[q]"),
                                  Message("user", "Observation: o")], Meta("r", Provenance("f", "h", 0)))
    [neg] = apply_rules(c, rs, prep, seed=0)
    assert [m.content for m in neg.messages] == ["S", "Q", "I can't."]


def test_rate_selects_a_seeded_stable_share():
    rs, prep = rules({"rule": "irrelevant_tools", "pool": POOL, "rate": 0.5})
    made = [c.id for c in (chat(i) for i in range(200)) if apply_rules(c, rs, prep, seed=7)]
    assert 70 < len(made) < 130
    assert made == [c.id for c in (chat(i) for i in range(200)) if apply_rules(c, rs, prep, seed=7)]
    # a row's fate does not depend on the other rows
    assert bool(apply_rules(chat(5), rs, prep, seed=7)) == ("chat:5" in made)


def test_where_and_dump():
    rs, prep = rules({"rule": "irrelevant_tools", "where": {"source": "other"}, "pool": POOL})
    assert apply_rules(chat(), rs, prep, seed=1) == []
    assert rs[0].model_dump() == {"rule": "irrelevant_tools", "where": {"source": "other"}, "rate": 1.0,
                                  "pool": POOL, "k": 2}
    json.dumps(rs[0].model_dump())
