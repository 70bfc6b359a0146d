"""ReAct text → tool calls → ReAct text is the identity: property tests on generated well-formed
trajectories (both action syntaxes) and on every FireAct chat-format file."""
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dsc.record import Conversation, Message, Meta, Provenance
from dsc.compiler.stages.transforms.convert import apply_steps, prepare_steps
from dsc.spec.steps import ConvertStep

TOOLS = [
    {"name": "search", "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                      "required": ["query"]}},
    {"name": "finish", "parameters": {"type": "object", "properties": {"answer": {"type": "string"}},
                                      "required": ["answer"]}},
    {"name": "calculate", "parameters": {"type": "object", "properties": {"n": {"type": "integer"}},
                                         "required": ["n"]}},
    {"name": "convert", "parameters": {"type": "object", "properties": {
        "amount": {"type": "number"}, "to": {"type": "string"}}, "required": ["amount", "to"]}},
]


def steps(syntax):
    fw = ConvertStep.model_validate({"step": "react_to_tool_calls", "tools": TOOLS, "syntax": syntax})
    bw = ConvertStep.model_validate({"step": "tool_calls_to_react", "tools": TOOLS, "syntax": syntax})
    return (fw, prepare_steps([fw], ".")), (bw, prepare_steps([bw], "."))


def roundtrip(messages, syntax="bracket"):
    (fw, pf), (bw, pb) = steps(syntax)
    c = Conversation("x", "x", [Message(m.role, m.content, loss=m.loss) for m in messages],
                     Meta("s", Provenance("f", "h", 0)))
    structured = apply_steps(c, [fw], pf)
    calls = sum(1 for m in structured.messages if m.tool_calls)
    back = apply_steps(structured, [bw], pb)
    return calls, [(m.role, m.content, m.loss, m.tool_calls) for m in back.messages]


# Text that cannot be mistaken for part of the ReAct grammar: no "Action:" / "Observation:".
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40) \
    .filter(lambda s: "Action:" not in s and "Observation" not in s)
thought = st.one_of(st.just(""), text.map(lambda s: f"Thought: {s}\n"), text.map(lambda s: f"Thought: {s}\n\n"),
                    text)
scalar_arg = st.one_of(
    st.tuples(st.just("search"), text),
    st.tuples(st.just("finish"), text),
    st.tuples(st.just("calculate"), st.integers(-10**6, 10**6).map(str)),
)


@st.composite
def bracket_trajectory(draw):
    msgs = [Message("user", draw(text))]
    for _ in range(draw(st.integers(1, 5))):
        name, arg = draw(scalar_arg)
        msgs.append(Message("assistant", f"{draw(thought)}Action: {name}[{arg}]", loss=True))
        if draw(st.booleans()):
            msgs.append(Message("user", f"Observation: {draw(text)}", loss=False))
    if draw(st.booleans()):
        msgs.append(Message("assistant", draw(text)))  # a turn with no action stays text
    return msgs


@st.composite
def action_input_trajectory(draw):
    msgs = [Message("system", draw(text)), Message("user", draw(text))]
    for _ in range(draw(st.integers(1, 4))):
        which = draw(st.sampled_from(["search", "convert", "calculate"]))
        if which == "search":
            args = {"query": draw(text)}
        elif which == "calculate":
            args = {"n": draw(st.integers(-1000, 1000))}
        else:
            args = {"amount": draw(st.floats(0, 1e6, allow_nan=False, allow_infinity=False)), "to": draw(text)}
        msgs.append(Message("assistant", f"{draw(thought)}Action: {which}\nAction Input: "
                                         f"{json.dumps(args, ensure_ascii=False)}"))
        msgs.append(Message("user", f"Observation: {draw(text)}"))
    return msgs


@settings(max_examples=150, deadline=None)
@given(bracket_trajectory())
def test_bracket_roundtrip_is_identity(messages):
    calls, back = roundtrip(messages)
    assert back == [(m.role, m.content, m.loss, None) for m in messages]
    assert calls == sum(1 for m in messages if m.role == "assistant" and "Action: " in m.content)


@settings(max_examples=100, deadline=None)
@given(action_input_trajectory())
def test_action_input_roundtrip_is_identity(messages):
    calls, back = roundtrip(messages, "action_input")
    assert back == [(m.role, m.content, m.loss, None) for m in messages]
    assert calls == sum(1 for m in messages if m.role == "assistant")


def test_structured_side_is_well_formed():
    msgs = [Message("user", "Q"), Message("assistant", "Thought: go\nAction: calculate[42]"),
            Message("user", "Observation:  42"), Message("assistant", "Action: finish[42]"),
            Message("user", "Observation: Episode finished, reward = True")]
    (fw, pf), _ = steps("bracket")
    c = apply_steps(Conversation("x", "x", msgs, Meta("s", Provenance("f", "h", 0))), [fw], pf)
    a, t = c.messages[1], c.messages[2]
    assert (a.content, a.tool_calls[0].name, json.loads(a.tool_calls[0].arguments)) == ("Thought: go\n", "calculate",
                                                                                       {"n": 42})
    assert (t.role, t.content, t.tool_call_id, t.name) == ("tool", " 42", a.tool_calls[0].id, "calculate")
    assert c.messages[3].content == "" and json.loads(c.messages[3].tool_calls[0].arguments) == {"answer": "42"}
    assert [t["function"]["name"] for t in c.tools] == ["search", "finish", "calculate", "convert"]


def test_fireact_data_roundtrips(fireact_dir):
    n_rows = n_calls = 0
    for f in sorted(fireact_dir.glob("gpt_format__*.jsonl")):
        for line in f.read_text().splitlines():
            msgs = [Message(m["role"], m["content"]) for m in json.loads(line)["messages"]]
            calls, back = roundtrip(msgs)
            assert back == [(m.role, m.content, None, None) for m in msgs], f.name
            n_rows += 1
            n_calls += calls
    # every assistant turn of FireAct's data is a well-formed action (search/finish)
    assert n_rows == 500 + 733 + 1344 and n_calls == 6434
