"""Formats: every built-in on hand-made rows and on the real FireAct files; the registry."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from dsc.compiler.stages.read.formats.common import Normalised, require_str, without
from dsc.spec.registries import FORMATS, get_format, register_format
from dsc.compiler.stages.read.formats.react import split_react
from dsc.record import BadRow, Message
from dsc.compiler.stages.read.sources import iter_raw_rows, normalise_row
from dsc.spec.sources import SourceSpec


def run(fmt: str, row: dict, **fields: str) -> Normalised:
    return get_format(fmt)(row, fields)


def bad(fmt: str, row: dict, **fields: str) -> str:
    with pytest.raises(BadRow) as e:
        run(fmt, row, **fields)
    return e.value.reason


def shape(n: Normalised) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in n.messages]


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_builtin_formats_are_registered():
    assert {"openai", "sharegpt", "alpaca", "nat", "agent_flan", "react"} <= set(FORMATS)
    for f in (FORMATS.get(name) for name in FORMATS.names()):
        assert f.doc, f"format {f.name} has no docstring"


def test_unknown_format_lists_registered_names_and_suggests():
    with pytest.raises(ValueError) as e:
        get_format("sharegtp")
    msg = str(e.value)
    assert "unknown format 'sharegtp'" in msg and "did you mean 'sharegpt'" in msg and "'openai'" in msg


def test_check_fields_unknown_field_and_bad_choice():
    with pytest.raises(ValueError, match=r"format 'sharegpt' has no field 'rol'.*did you mean 'role'"):
        get_format("sharegpt").check_fields({"rol": "speaker"})
    with pytest.raises(ValueError, match=r"'observation_role' must be one of 'tool', 'user'"):
        get_format("react").check_fields({"observation_role": "system"})
    get_format("react").check_fields({"observation_role": "tool", "question": "q"})


def test_user_registered_format_is_usable_from_a_source(tmp_path):
    name = "test_qa_pairs"

    @register_format(name, fields={"question": "q", "answer": "a"})
    def qa(row: dict, fields: dict[str, str]) -> Normalised:
        """Question/answer pairs."""
        return Normalised([Message("user", require_str(row, fields["question"])),
                           Message("assistant", require_str(row, fields["answer"]))],
                          extra=without(row, [fields["question"], fields["answer"]]))

    try:
        (tmp_path / "d.jsonl").write_text(json.dumps({"Q": "2+2?", "A": "4", "lang": "en"}) + "\n"
                                          + json.dumps({"Q": "3+3?"}) + "\n")
        spec = SourceSpec(path="d.jsonl", format=name, fields={"question": "Q", "answer": "A"})
        raws = list(iter_raw_rows("qa", spec, tmp_path))
        conv = normalise_row(raws[0], "qa", spec)
        assert [(m.role, m.content) for m in conv.messages] == [("user", "2+2?"), ("assistant", "4")]
        assert conv.meta.extra == {"lang": "en"} and conv.meta.provenance.steps == [f"format:{name}"]
        with pytest.raises(BadRow, match="missing field 'A'"):
            normalise_row(raws[1], "qa", spec)
        with pytest.raises(ValueError, match=f"format '{name}' is defined twice"):
            register_format(name)(lambda row, fields: Normalised([]))
        with pytest.raises(ValueError, match="has no field 'answr'"):
            SourceSpec(path="d.jsonl", format=name, fields={"answr": "A"})
    finally:
        FORMATS.defs.pop(name, None)


PLUGIN = '''
from dsc.record import Message
from dsc.compiler.stages.read.formats.common import Normalised
from dsc.spec.registries import register_format

@register_format("test_plugin_fmt", fields={"text": "text"})
def fmt(row, fields):
    """Plugin."""
    return Normalised([Message("user", row[fields["text"]])])
'''


def test_formats_are_found_through_entry_points(tmp_path, monkeypatch):
    import importlib.metadata

    from dsc.spec.registries import FORMATS

    (tmp_path / "dsc_test_plugin.py").write_text(PLUGIN)
    (tmp_path / "dsc_broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def entry_points_of(module: str):
        ep = importlib.metadata.EntryPoint(name="p", value=module, group="dsc.formats")
        return lambda **kw: [ep] if kw.get("group") == "dsc.formats" else []

    try:
        monkeypatch.setattr(FORMATS, "entry_points_loaded", False)
        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points_of("dsc_test_plugin"))
        assert SourceSpec(path="x.jsonl", format="test_plugin_fmt").format == "test_plugin_fmt"
        monkeypatch.setattr(FORMATS, "entry_points_loaded", False)
        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points_of("dsc_broken_plugin"))
        with pytest.raises(ValueError, match=r"cannot load format plugin 'p' \(dsc_broken_plugin\) of entry-point group "
                                             r"'dsc.formats': RuntimeError: boom"):
            get_format("not_there")
    finally:
        FORMATS.defs.pop("test_plugin_fmt", None)


# ---------------------------------------------------------------------------------------------
# openai
# ---------------------------------------------------------------------------------------------


def call(name: str, arguments, id_: str = "c1") -> dict:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_openai_tool_calls_arguments_compact_in_the_order_written_from_string_or_object():
    row = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None,
             "tool_calls": [call("get", '{"b": 1, "a": "x"}'), call("get", {"a": "x", "b": 1}, "c2")]},
            {"role": "tool", "tool_call_id": "c1", "name": "get", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": {"temp": 20}},
            {"role": "assistant", "content": "Sunny.", "loss": False},
        ],
        "tools": [{"type": "function", "function": {"name": "get", "parameters": {}}}, {"name": "bare"}],
        "meta_id": 7,
    }
    n = run("openai", row)
    a = n.messages[2]
    assert a.role == "assistant" and a.content == ""
    # one compact spelling, keys in the order the data wrote them (templates render that order)
    assert [(t.name, t.arguments, t.id) for t in a.tool_calls] == [("get", '{"b":1,"a":"x"}', "c1"),
                                                                    ("get", '{"a":"x","b":1}', "c2")]
    assert (n.messages[3].role, n.messages[3].tool_call_id, n.messages[3].name) == ("tool", "c1", "get")
    assert n.messages[4].content == '{"temp":20}'
    assert n.messages[5].loss is False and n.messages[1].loss is None
    assert n.tools == [{"type": "function", "function": {"name": "get", "parameters": {}}},
                       {"type": "function", "function": {"name": "bare"}}]
    assert n.extra == {"meta_id": 7}


def test_openai_legacy_function_call_and_function_role_and_functions():
    row = {"messages": [{"role": "user", "content": "q"},
                        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                        {"role": "function", "name": "f", "content": "42"},
                        {"role": "assistant", "content": "42", "weight": 0}],
           "functions": [{"name": "f", "parameters": {"type": "object"}}]}
    n = run("openai", row)
    assert n.messages[1].tool_calls[0].name == "f" and n.messages[1].tool_calls[0].id is None
    assert (n.messages[2].role, n.messages[2].name) == ("tool", "f")
    assert n.messages[3].loss is False  # OpenAI weight 0
    assert n.tools == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert n.extra == {}


def test_openai_content_parts_and_field_mapping():
    row = {"conv": [{"speaker": "user", "text": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                    {"speaker": "assistant", "text": "c"}]}
    n = run("openai", row, messages="conv", role="speaker", content="text")
    assert shape(n) == [("user", "ab"), ("assistant", "c")]


@pytest.mark.parametrize("row, reason", [
    ({"messages": []}, "empty conversation: field 'messages' is an empty list"),
    ({"conversations": []}, "missing field 'messages'"),
    ({"messages": "hi"}, "field 'messages' is a string, expected a list of messages"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "message 0: unknown role 'bot' (allowed: "),
    ({"messages": [{"content": "x"}]}, "message 0 has no 'role' key"),
    ({"messages": [{"role": "user", "content": "q"}, "oops"]}, "message 1 is a string, expected an object"),
    ({"messages": [{"role": "user", "content": None}]}, "message 0 (user): content is missing or null"),
    ({"messages": [{"role": "user", "content": 3}]}, "message 0 (user): content is a number, expected a string"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "content part 0 of type 'image_url' is not supported"),
    ({"messages": [{"role": "user", "content": "q", "loss": "yes"}]},
     "message 0 (user): 'loss' is a string, expected true, false or null"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [call("f", '{"a": 1')]}]},
     "message 0 (assistant), tool call 0 ('f'): arguments are not valid JSON: Expecting ',' delimiter"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [call("f", "[1, 2]")]}]},
     "tool call 0 ('f'): arguments must be a JSON object, got a list"),
    ({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]}]},
     "message 0 (assistant), tool call 0: missing tool name"),
    ({"messages": [{"role": "assistant", "content": "", "tool_calls": {"name": "f"}}]},
     "'tool_calls' is an object, expected a list"),
    ({"messages": [{"role": "user", "content": "q"}], "tools": "[{"}, "field 'tools' is not valid JSON"),
    ({"messages": [{"role": "user", "content": "q"}], "tools": [{"description": "no name"}]},
     "field 'tools', tool 0 has neither 'name' nor 'function.name'"),
])
def test_openai_bad_rows_have_precise_reasons(row, reason):
    assert reason in bad("openai", row)


def test_fireact_gpt_multitask_all_rows_normalise(fireact_dir):
    spec = SourceSpec(path="gpt_format__multitask.jsonl", format="openai")
    convs = [normalise_row(r, "gpt", spec) for r in iter_raw_rows("gpt", spec, fireact_dir)]
    assert len(convs) == 1344
    # Measured: every row here starts with the user's question (the "assistant-first" rows
    # noted in seeds-facts are not in this file); assistant-first rows are accepted anyway
    # (see test_assistant_first_conversation_is_valid).
    assert Counter(c.messages[0].role for c in convs) == {"user": 1344}
    assert all(c.messages[-1].content.startswith("Observation: Episode finished, reward = ") for c in convs)
    assert sum(len(c.messages) for c in convs) == 7544
    assert len({c.id for c in convs}) == 1344


@pytest.mark.parametrize("fmt, row", [
    ("openai", {"messages": [{"role": "assistant", "content": "Thought: go\nAction: finish[x]"},
                             {"role": "user", "content": "Observation: Episode finished"}]}),
    ("nat", {"conversations": [{"role": "assistant", "content": "Action: finish[Yes]", "loss": True},
                               {"role": "user", "content": "Observation: Episode finished", "loss": False}]}),
])
def test_assistant_first_conversation_is_valid(fmt, row):
    assert run(fmt, row).messages[0].role == "assistant"


# ---------------------------------------------------------------------------------------------
# sharegpt
# ---------------------------------------------------------------------------------------------


def test_sharegpt_function_call_and_observation():
    tools = [{"name": "search", "description": "web", "parameters": {"type": "object"}}]
    row = {"conversations": [
        {"from": "human", "value": "Who?"},
        {"from": "function_call", "value": json.dumps({"name": "search", "arguments": {"q": "who"}})},
        {"from": "observation", "value": "Ada"},
        {"from": "gpt", "value": "Ada."}],
        "system": "Be brief.", "tools": json.dumps(tools), "id": "s1"}
    n = run("sharegpt", row)
    assert [m.role for m in n.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert n.messages[0].content == "Be brief."
    c = n.messages[2]
    assert c.content == "" and [(t.name, t.arguments) for t in c.tool_calls] == [("search", '{"q":"who"}')]
    assert n.messages[3].content == "Ada"
    assert n.tools == [{"type": "function", "function": tools[0]}]
    assert n.extra == {"id": "s1"}


def test_sharegpt_parallel_calls_and_custom_names():
    row = {"turns": [{"speaker": "user", "text": "q"},
                     {"speaker": "function_call", "text": [{"name": "a", "arguments": "{}"}, {"name": "b"}]},
                     {"speaker": "tool", "text": "r"}]}
    n = run("sharegpt", row, messages="turns", role="speaker", content="text")
    assert [t.name for t in n.messages[1].tool_calls] == ["a", "b"]


@pytest.mark.parametrize("row, reason", [
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "search(q)"}]},
     "message 1 (function_call): value is not valid JSON"),
    ({"conversations": [{"from": "robot", "value": "q"}]}, "message 0: unknown role 'robot'"),
    ({"conversations": [{"from": "human", "value": "q"}], "tools": {"name": "x"}},
     "field 'tools' is an object, expected a list of tool specs"),
    ({"conversations": [{"from": "system", "value": "a"}], "system": "b"}, "two system prompts"),
    ({"conversations": [{"from": "function_call", "value": '{"arguments": {}}'}]},
     "message 0 (function_call): missing tool name"),
])
def test_sharegpt_bad_rows(row, reason):
    assert reason in bad("sharegpt", row)


# ---------------------------------------------------------------------------------------------
# alpaca
# ---------------------------------------------------------------------------------------------


def test_alpaca_joins_instruction_and_input_with_a_blank_line():
    n = run("alpaca", {"instruction": "Translate.", "input": "chat", "output": "cat\n", "system": "S", "k": 1})
    assert shape(n) == [("system", "S"), ("user", "Translate.\n\nchat"), ("assistant", "cat\n")]
    assert n.extra == {"k": 1}
    assert shape(run("alpaca", {"instruction": "Hi", "input": "", "output": "Yo"})) == [("user", "Hi"),
                                                                                      ("assistant", "Yo")]
    assert shape(run("alpaca", {"instruction": "", "input": "only", "output": "x"}))[0] == ("user", "only")
    assert shape(run("alpaca", {"instruction": "I", "input": "x", "output": "o"}, input_separator="\n"))[0] == (
        "user", "I\nx")


def test_alpaca_history_and_bad_rows():
    n = run("alpaca", {"instruction": "3", "output": "4", "history": [["1", "2"]]})
    assert shape(n) == [("user", "1"), ("assistant", "2"), ("user", "3"), ("assistant", "4")]
    assert "missing field 'output'" in bad("alpaca", {"instruction": "x"})
    assert "field 'output' is empty" in bad("alpaca", {"instruction": "x", "output": "  "})
    assert "field 'instruction' is empty and so is 'input'" in bad("alpaca", {"instruction": "", "input": "",
                                                                              "output": "o"})
    assert "field 'instruction' is a list" in bad("alpaca", {"instruction": ["x"], "output": "o"})
    assert "item 0: expected a [user, assistant] pair" in bad("alpaca", {"instruction": "x", "output": "o",
                                                                         "history": [["a"]]})


def test_fireact_alpaca_multitask_via_alpaca(fireact_dir):
    rows = json.loads((fireact_dir / "alpaca_format__multitask.json").read_text())
    spec = SourceSpec(path="alpaca_format__multitask.json", format="alpaca")
    convs = [normalise_row(r, "a", spec) for r in iter_raw_rows("a", spec, fireact_dir)]
    assert len(convs) == len(rows) == 1344
    for c, r in zip(convs, rows):
        assert shape(Normalised(c.messages)) == [("user", r["instruction"]), ("assistant", r["output"])]


# ---------------------------------------------------------------------------------------------
# nat, agent_flan
# ---------------------------------------------------------------------------------------------


NAT_ROW = {
    "conversations": [
        {"role": "assistant", "content": "Thought: search.\n\nAction: search[Tony Bennett children]", "loss": True},
        {"role": "user", "content": "Observation:  #1: four children", "loss": False},
        {"role": "assistant", "content": "Action: finish[Yes]", "loss": True},
        {"role": "user", "content": "Observation: Episode finished", "loss": False}],
    "info": {"reward": True, "acc": True, "gt": True, "pred": "Yes"},
    "id": "e48be839783682257024", "source": "0.5"}


def test_nat_keeps_info_in_extra_and_loss_per_message():
    n = run("nat", NAT_ROW)
    assert [m.role for m in n.messages] == ["assistant", "user", "assistant", "user"]
    assert [m.loss for m in n.messages] == [True, False, True, False]
    assert n.extra == {"info": NAT_ROW["info"], "id": NAT_ROW["id"], "source": "0.5"}


def test_nat_accepts_sharegpt_messages_and_rejects_empty():
    n = run("nat", {"conversations": [{"from": "gpt", "value": "Action: finish[1]"},
                                      {"from": "human", "value": "Observation: Episode finished"}]})
    assert shape(n) == [("assistant", "Action: finish[1]"), ("user", "Observation: Episode finished")]
    assert "empty conversation: field 'conversations' is an empty list" in bad("nat", {"conversations": [],
                                                                                       "info": {}})


def test_agent_flan_missing_loss_stays_none():
    row = {"conversation": [{"role": "system", "content": "tools..."},
                            {"role": "user", "content": "q", "loss": False},
                            {"role": "assistant", "content": "a"},
                            {"role": "assistant", "content": "b", "loss": False}], "id": "toolbench_3"}
    n = run("agent_flan", row)
    assert [m.loss for m in n.messages] == [None, False, None, False]
    assert n.extra == {"id": "toolbench_3"}
    assert "missing field 'conversation'" in bad("agent_flan", {"conversations": []})


# ---------------------------------------------------------------------------------------------
# react
# ---------------------------------------------------------------------------------------------


REACT = ("Thought: I need to search X.\nAction: search[X]\nObservation: X is a city.\nIt is large.\n"
         "Thought: Now that I haven't solved the task within 5 steps, let me do a reflection. Thought: answer.\n"
         "Action: finish[city]\nObservation: Episode finished, reward = False\n")


def test_react_splits_turns_and_keeps_the_episode_reward():
    n = run("react", {"instruction": " Where is X? ", "input": "", "output": REACT, "id": 3})
    assert shape(n) == [
        ("user", "Where is X?"),
        ("assistant", "Thought: I need to search X.\nAction: search[X]"),
        ("user", "Observation: X is a city.\nIt is large."),
        ("assistant", "Thought: Now that I haven't solved the task within 5 steps, let me do a reflection. "
                      "Thought: answer.\nAction: finish[city]"),
        ("user", "Observation: Episode finished, reward = False")]
    assert n.extra == {"id": 3, "episode_reward": False}
    assert "\n".join(m.content for m in n.messages[1:]) == REACT.rstrip("\n")


def test_react_cot_single_step_numbered_steps_and_tool_role():
    n = run("react", {"question": "Q", "traj": "Thought 1: think\nAction 1: finish[a]\nObservation 1: "
                      "Episode finished, reward = 1"},
            question="question", trajectory="traj", observation_role="tool")
    assert shape(n) == [("user", "Q"), ("assistant", "Thought 1: think\nAction 1: finish[a]"),
                        ("tool", "Observation 1: Episode finished, reward = 1")]
    assert n.extra["episode_reward"] == 1
    # A trajectory may end on an assistant step (nothing observed yet).
    assert shape(run("react", {"instruction": "Q", "output": "Thought: t\nAction: finish[a]"}))[-1][0] == "assistant"


def test_react_mmlu_options_leaked_into_the_output_move_to_the_question():
    row = {"instruction": "Question: Which is first? ",
           "output": "A. one\nB. two\nThought: A.\nAction: finish[A]\nObservation: Episode finished, reward = 1\n"}
    n = run("react", row)
    assert n.messages[0].content == "Question: Which is first? \nA. one\nB. two"
    assert n.messages[1].content == "Thought: A.\nAction: finish[A]"
    assert "text before the first step of 'output': 'A. one\\nB. two'" in bad("react", row, preamble="error")


@pytest.mark.parametrize("output, reason", [
    ("The answer is 4.", "no line starts with 'Thought:', 'Action:' or 'Observation:'"),
    ("Observation: hi\nThought: t\nAction: a[]", "trajectory line 1: starts with an Observation"),
    ("Thought: t\nAction: a[]\nObservation: o\nObservation: p", "trajectory line 4: two Observations in a row"),
    ("Thought: t\nObservation: o", "trajectory line 2: an Observation follows a Thought with no Action"),
])
def test_react_bad_trajectories(output, reason):
    assert reason in bad("react", {"instruction": "Q", "output": output})


def test_split_react_round_trip_with_crlf():
    pre, turns = split_react("Thought: a\r\nAction: b[c]\r\nObservation: d\r\n\r\n")
    assert pre == "" and [t.text for t in turns] == ["Thought: a\nAction: b[c]", "Observation: d"]
    assert [t.line for t in turns] == [1, 3]


def _react_convs(fireact_dir: Path, name: str) -> list:
    spec = SourceSpec(path=name, format="react")
    return [normalise_row(r, "r", spec) for r in iter_raw_rows("r", spec, fireact_dir)]


def test_fireact_alpaca_multitask_via_react_matches_the_gpt_file(fireact_dir):
    rows = json.loads((fireact_dir / "alpaca_format__multitask.json").read_text())
    convs = _react_convs(fireact_dir, "alpaca_format__multitask.json")
    assert len(convs) == 1344
    mmlu = 0
    for c, r in zip(convs, rows):
        turns = "\n".join(m.content for m in c.messages[1:])
        out = r["output"].rstrip("\n")
        if not out.startswith("Thought:"):  # MMLU: the options leaked into the output
            mmlu += 1
            pre = out[: out.index("\nThought:")]
            assert c.messages[0].content == (r["instruction"] + "\n" + pre).strip()
            out = out[len(pre) + 1:]
        assert turns == out  # joining the turns gives back the trajectory
    assert mmlu == 456  # every MMLU row
    # FireAct's own chat-format file holds the same 1,344 trajectories, turn for turn.
    gpt = [json.loads(line) for line in (fireact_dir / "gpt_format__multitask.jsonl").open()]
    ours = Counter(json.dumps([[m.role, m.content] for m in c.messages]) for c in convs)
    theirs = Counter(json.dumps([[m["role"], m["content"]] for m in r["messages"]]) for r in gpt)
    assert ours == theirs
    assert Counter(repr(c.meta.extra["episode_reward"]) for c in convs) == {"True": 500, "1": 844}


def test_fireact_hotpotqa_multimethod_via_react(fireact_dir):
    convs = _react_convs(fireact_dir, "alpaca_format__hotpotqa_multimethod.json")
    assert len(convs) == 734
    rewards = Counter(repr(c.meta.extra["episode_reward"]) for c in convs)
    assert rewards == {"True": 507, "1": 187, "False": 40}  # 40 Reflexion rows failed
    # One CoT row has no Thought at all: a lone Action is a valid assistant step.
    lone = [c for c in convs if c.messages[1].content.startswith("Action:")]
    assert len(lone) == 1 and len(lone[0].messages) == 3
