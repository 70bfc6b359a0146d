"""Quality filters: each built-in, `where`, argument checks, a user-registered filter."""
import pytest
from pydantic import ValidationError

from dsc.record import Conversation, Message, Meta, Provenance, ToolCall
from dsc.compiler.stages.transforms.filters import apply_filters
from dsc.spec.steps import FilterEntry
from dsc.spec.registries import FILTERS


def conv(*pairs, source="s", success=None):
    c = Conversation("s:1", "g", [Message(r, t) for r, t in pairs], Meta(source, Provenance("f", "h", 0)))
    c.meta.success = success
    return c


def entries(*specs):
    return [FilterEntry.model_validate(s) for s in specs]


GOOD = conv(("assistant", "Thought: x\n\nAction: search[a]"), ("user", "Observation:  found"),
            ("assistant", "Action: finish[Yes]"), ("user", "Observation: Episode finished"))


def test_good_trajectory_passes_everything():
    fs = entries("non_empty", {"finished": r"finish\[.+\]"}, {"max_turns": 2}, {"valid_actions": ["search", "finish"]},
                 "no_empty_observation")
    assert apply_filters(GOOD, fs) is None


@pytest.mark.parametrize("spec,c,reason", [
    ("non_empty", conv(("user", "q"), ("assistant", "  ")), "non_empty: no assistant turn"),
    ({"finished": r"finish\[.+\]"}, conv(("assistant", "Action: search[a]"), ("user", "Observation: x")),
     "finished: the last assistant turn does not match"),
    ({"finished": r"finish\[.+\]"}, conv(("assistant", "Action: finish[]")), "finished:"),
    ({"max_turns": 1}, GOOD, "max_turns: 2 assistant turns, more than 1"),
    ({"min_turns": 3}, GOOD, "min_turns: 2 assistant turns, fewer than 3"),
    ({"valid_actions": True}, conv(("assistant", "Thought: x\n\nAction: search a")), "valid_actions: message 0"),
    ({"valid_actions": ["finish"]}, GOOD, "valid_actions: message 0 calls 'search'"),
    ("no_empty_observation", conv(("assistant", "Action: search[a]"), ("user", "Observation: ")),
     "no_empty_observation: message 1: empty observation"),
    ("success", conv(("assistant", "a"), success=False), "success: label is missing"),
])
def test_each_filter_rejects(spec, c, reason):
    assert apply_filters(c, entries(spec)).startswith(reason)


def test_structured_tool_calls_count_as_actions():
    c = Conversation("s:1", "g", [Message("user", "q"),
                                  Message("assistant", "", tool_calls=[ToolCall("finish", '{"answer":"Yes"}')]),
                                  Message("tool", "")], Meta("s", Provenance("f", "h", 0)))
    assert apply_filters(c, entries({"valid_actions": ["finish"]}, {"finished": r"finish\[Yes\]"})) is None
    assert apply_filters(c, entries("no_empty_observation")).startswith("no_empty_observation: message 2")


def test_where_scopes_a_filter():
    fs = entries({"where": {"source": "neg"}, "max_turns": 1})
    assert apply_filters(GOOD, fs) is None
    assert apply_filters(conv(*[(m.role, m.content) for m in GOOD.messages], source="neg"), fs) is not None


@pytest.mark.parametrize("spec,msg", [
    ("nonempty", "did you mean 'non_empty'"),
    ({"max_turns": "many"}, "valid integer"),
    ({"non_empty": 1}, "takes no argument"),
    ({"finished": None}, "needs an argument"),
    ({"finished": "x", "max_turns": 2}, "a mapping of one name"),
])
def test_bad_filter_entries(spec, msg):
    with pytest.raises(ValidationError, match=msg):
        FilterEntry.model_validate(spec)


def test_entries_dump_as_written():
    assert [e.model_dump() for e in entries("non_empty", {"max_turns": 3}, {"where": {"source": "x"}, "max_turns": 2})] \
        == ["non_empty", {"max_turns": 3}, {"where": {"source": "x"}, "max_turns": 2}]


def test_users_can_register_a_filter():
    @FILTERS.register("short_test", int)
    def short(c, n):
        return None if len(c.messages) <= n else "too long"

    try:
        assert apply_filters(GOOD, entries({"short_test": 2})) == "short_test: too long"
    finally:
        del FILTERS.defs["short_test"]
