"""Conversion steps: arguments checked against tool schemas, Agent-FLAN's natural-chat alignment,
FireAct's CoT cast and method tags, registry errors."""
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from dsc.record import BadRow, Conversation, Message, Meta, Provenance
from dsc.compiler.stages.transforms.convert import apply_steps, prepare_steps
from dsc.spec.steps import ConvertStep
from dsc.spec.registries import CONVERTERS
from dsc.dialects.tools import ToolDef, parse_arguments

REPO = Path(__file__).resolve().parents[3]
FIRE = REPO / "specs" / "data" / "fireact-recipe"
SEARCH = {"name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                           "required": ["query"]}}


def conv(messages, extra=None, source="s"):
    return Conversation("s:1", "g", messages, Meta(source, Provenance("f", "h", 0), extra=extra or {}))


def run(step: dict, c: Conversation, base=".") -> Conversation:
    s = ConvertStep.model_validate(step)
    return apply_steps(c, [s], prepare_steps([s], Path(base)))


def test_arguments_are_typed_and_checked_against_the_schema():
    num = ToolDef(name="n", parameters={"type": "object", "properties": {"x": {"type": "integer", "minimum": 0}},
                                        "required": ["x"]})
    assert parse_arguments(num, "12", "bracket", "m") == {"x": 12}
    with pytest.raises(BadRow, match="not a valid integer"):
        parse_arguments(num, "twelve", "bracket", "m")
    with pytest.raises(BadRow, match=r"arguments\.x: -3 is less than the minimum of 0"):
        parse_arguments(num, "-3", "bracket", "m")
    two = ToolDef(name="c", parameters={"type": "object", "properties": {"a": {"type": "number"},
                                                                         "b": {"enum": ["x", "y"]}},
                                        "required": ["a", "b"], "additionalProperties": False})
    assert parse_arguments(two, '{"a": 1.5, "b": "x"}', "bracket", "m") == {"a": 1.5, "b": "x"}
    for bad, msg in [('{"a": 1}', "arguments: 'b' is a required property"),
                     ('{"a": "1", "b": "x"}', "arguments.a: '1' is not of type 'number'"),
                     ('{"a": 1, "b": "z"}', "arguments.b: 'z' is not one of ['x', 'y']"),
                     ('{"a": 1, "b": "x", "c": 0}', "arguments: Additional properties are not allowed ('c' was unexpected)"),
                     ("not json", "not valid JSON")]:
        with pytest.raises(BadRow, match=re.escape(msg)):
            parse_arguments(two, bad, "bracket", "m")


def test_unknown_tool_is_a_bad_row_unless_inferred():
    msgs = [Message("user", "q"), Message("assistant", "Action: lookup[x]")]
    with pytest.raises(BadRow, match="unknown tool 'lookup'"):
        run({"step": "react_to_tool_calls", "tools": [SEARCH]}, conv(msgs))
    c = run({"step": "react_to_tool_calls", "tools": [SEARCH], "unknown_tools": "infer"},
            conv([Message("user", "q"), Message("assistant", "Action: lookup[x]")]))
    assert json.loads(c.messages[1].tool_calls[0].arguments) == {"input": "x"}


def test_tools_from_a_file_and_bad_files(tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps([{"type": "function", "function": SEARCH}]))
    c = run({"step": "react_to_tool_calls", "tools": "tools.json"},
            conv([Message("user", "q"), Message("assistant", "Action: search[x]")]), tmp_path)
    assert c.tools == [{"type": "function", "function": {"name": "search", "description": "",
                                                          "parameters": SEARCH["parameters"]}}]
    for content, msg in [("[1]", "a tool is an object"), ('{"a": 1}', "expected a list"),
                         (json.dumps([SEARCH, SEARCH]), "names repeat")]:
        (tmp_path / "bad.json").write_text(content)
        s = ConvertStep.model_validate({"step": "react_to_tool_calls", "tools": "bad.json"})
        with pytest.raises(ValueError, match=msg):
            prepare_steps([s], tmp_path)


AGENT_SYSTEM = ("You are an agent.\n\nTools:\n- search: look things up\n\nUse the following format:\n"
                "Thought: ...\nAction: ...\nAction Input: ...")


def test_react_to_chat_is_agent_flan_alignment():
    msgs = [Message("system", AGENT_SYSTEM), Message("user", "Who wrote X?"),
            Message("assistant", 'Thought: I should search.\nAction: search\nAction Input: {"query": "X author"}'),
            Message("user", 'Observation: {"author": "Y"}'),
            Message("assistant", 'Thought: Found it.\nAction: finish\nAction Input: {"answer": "Y wrote X."}'),
            Message("user", "Observation: Episode finished")]
    step = {"step": "react_to_chat", "syntax": "action_input", "answer": "{{ answer }}",
            "tools": [SEARCH, {"name": "finish", "parameters": {"type": "object", "properties": {
                "answer": {"type": "string"}}}}], "remove": ["(?s)\\n*Tools:\\n.*"]}
    c = run(step, conv(msgs))
    assert [(m.role, m.content) for m in c.messages] == [
        ("system", "You are an agent."), ("user", "Who wrote X?"), ("assistant", "I should search."),
        ("tool", '{"author": "Y"}'), ("assistant", "Y wrote X.")]
    call = c.messages[2].tool_calls[0]
    assert (call.name, json.loads(call.arguments), c.messages[3].tool_call_id) == ("search", {"query": "X author"},
                                                                                  call.id)
    assert [t["function"]["name"] for t in c.tools] == ["search"]  # the final-answer action is not a tool
    # default answer template keeps the thought
    c = run({**step, "answer": "{% if thought %}{{ thought }}\n\n{% endif %}{{ answer }}"}, conv(list(msgs)))
    assert c.messages[-1].content == "Found it.\n\nY wrote X."


def test_react_to_chat_drops_a_system_prompt_of_only_instructions():
    msgs = [Message("system", "Use the following format: blah"), Message("user", "hi"),
            Message("assistant", "Thought: Just answer.")]
    c = run({"step": "react_to_chat", "remove": ["(?s)Use the following format:.*"]}, conv(msgs))
    assert [(m.role, m.content) for m in c.messages] == [("user", "hi"), ("assistant", "Just answer.")]


def test_cot_to_react_reproduces_fireact_cast(fireact_dir):
    published = [json.loads(line) for line in
                 (fireact_dir / "gpt_format__hotpotqa_multimethod.jsonl").read_text().splitlines()]
    raw = [json.loads(line) for line in (FIRE / "hotpotqa_cot.raw.jsonl").read_text().splitlines()]
    for row, index in zip(raw, [4, 8, 10, 15, 35, 36]):
        c = conv([Message(m["role"], m["content"]) for m in row["messages"]], extra={"reward": row["reward"]})
        c = run({"step": "cot_to_react"}, c)
        assert [(m.role, m.content) for m in c.messages] == [(m["role"], m["content"])
                                                             for m in published[index]["messages"]]
        assert c.meta.method == "cot" and c.meta.provenance.steps[-1] == "convert:cot_to_react"


def test_cot_without_answer_is_a_bad_row():
    with pytest.raises(BadRow, match="no answer line"):
        run({"step": "cot_to_react"}, conv([Message("user", "q"), Message("assistant", "Thought: hm")],
                                           extra={"reward": 1}))


def test_tag_sets_method_on_matching_rows():
    refl = conv([Message("user", "q"), Message("assistant", "Thought: Now that I haven't solved the task within "
                                                            "5 steps, let me do a reflection and think.")])
    step = {"step": "tag", "pattern": "let me do a reflection", "set": {"method": "reflexion"}}
    assert run(step, refl).meta.method == "reflexion"
    assert run(step, conv([Message("user", "let me do a reflection")])).meta.method is None  # user turn


def test_where_limits_a_step_and_registry_errors():
    c = run({"step": "tag", "where": {"source": "other"}, "pattern": ".", "set": {"task": "t"}},
            conv([Message("assistant", "x")]))
    assert c.meta.task is None
    with pytest.raises(ValidationError, match="did you mean 'react_to_chat'"):
        ConvertStep.model_validate({"step": "react_to_chats"})
    with pytest.raises(ValidationError, match="unknown key 'tool'.*did you mean 'tools'"):
        ConvertStep.model_validate({"step": "react_to_tool_calls", "tool": []})
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        ConvertStep.model_validate({"step": "tag", "pattern": "(", "set": {"task": "t"}})
    assert {"react_to_tool_calls", "tool_calls_to_react", "react_to_chat", "cot_to_react", "tag"} <= set(CONVERTERS.defs)


def test_users_can_register_a_converter():
    from dsc.core.strict import Strict

    class Opts(Strict):
        suffix: str

    @CONVERTERS.register("shout_test", Opts)
    def shout(c, opts, _):
        for m in c.messages:
            m.content = m.content.upper() + opts.suffix
        return c

    try:
        c = run({"step": "shout_test", "suffix": "!"}, conv([Message("user", "hi")]))
        assert c.messages[0].content == "HI!"
    finally:
        del CONVERTERS.defs["shout_test"]
