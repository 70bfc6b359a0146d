"""Loss weights by the pieces every dialect's turn has (`thought`/`analysis`, `call_name`,
`arguments`, `answer`): the same rule selects the same characters — the call's name and its
arguments as written — in Hermes, Harmony, Qwen3-Coder, ReAct and the others, read by the dialect
of the spec's `to_dialect` step; a ReAct-only part with another dialect is a located spec error."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dsc.chat.render import render
from dsc.chat.templating import load_template
from dsc.chat.weights import parts_dialect
from dsc.compiler.stages.transforms.convert import apply_steps, prepare_steps
from dsc.core.errors import SpecError
from dsc.record import Conversation, Message, Meta, Provenance, ToolCall
from dsc.spec.sections import LossSpec, WeightRule
from dsc.spec.steps import ConvertStep

REPO = Path(__file__).resolve().parents[2]
SEARCH = {"type": "function", "function": {"name": "web.search", "description": "Search the web.",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
LOOKUP = {"type": "function", "function": {"name": "lookup", "description": "Look up.", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}}}
WEIGHTS = {"thought": 0.5, "call_name": 3.0, "arguments": 2.0, "answer": 4.0}
RULES = [WeightRule(part=p, weight=w) for p, w in WEIGHTS.items()]


def _row(thought: str, answer: str, call: ToolCall) -> Conversation:
    return Conversation("s:1", "g", [
        Message("system", "You help."), Message("user", "Capital of France?"),
        Message("assistant", thought, tool_calls=[call]),
        Message("tool", "Paris is the capital.", name=call.name, tool_call_id="c1"),
        Message("assistant", answer)], Meta("s", Provenance("f", "h", 0)), tools=[SEARCH, LOOKUP])


def _to_dialect(c: Conversation, dialect: str) -> Conversation:
    keep = {"analysis": "keep"} if dialect == "harmony" else {}  # (the template drops earlier reasoning)
    steps = [ConvertStep.model_validate({"step": "to_dialect", "dialect": dialect, **keep})]
    return apply_steps(c, steps, prepare_steps(steps, Path(".")))


def _selected(dialect: str, conv: Conversation, template: str = "chatml", rules=RULES) -> dict[float, list[str]]:
    """Weight → the texts of the weighted pieces of that weight, in order."""
    r = render(_to_dialect(conv, dialect), load_template(template, REPO), LossSpec(mode="assistant", weights=rules),
               parts_dialect(dialect, rules))
    out: dict[float, list[str]] = {}
    for a, b, w in r.weights:
        out.setdefault(w, []).append(r.text[a:b])
    return out


SEARCH_CALL = ToolCall("web.search", '{"q":"capital of France"}', id="c1")
LOOKUP_CALL = ToolCall("lookup", '{"q":"capital of France","n":3}', id="c1")


# dialect, call, the arguments as the dialect writes them
CASES = [
    ("hermes", LOOKUP_CALL, '{"q": "capital of France", "n": 3}'),
    ("harmony", LOOKUP_CALL, '{"q": "capital of France", "n": 3}'),
    ("qwen3_coder", LOOKUP_CALL, "<parameter=q>\ncapital of France\n</parameter>\n<parameter=n>\n3\n</parameter>"),
    ("deepseek_v31", LOOKUP_CALL, '{"q": "capital of France", "n": 3}'),
    ("kimi_k2", LOOKUP_CALL, '{"q": "capital of France", "n": 3}'),
    ("react_json", LOOKUP_CALL, '{"q": "capital of France", "n": 3}'),
    ("react", SEARCH_CALL, "capital of France"),  # one string parameter: the bracket text
    ("agent_flan", LOOKUP_CALL, '{"q": "capital of France", "n": 3}'),
    ("glm45", LOOKUP_CALL, ("<arg_key>q</arg_key>\n<arg_value>capital of France</arg_value>\n"
                            "<arg_key>n</arg_key>\n<arg_value>3</arg_value>")),
    ("qwen_agent", LOOKUP_CALL, '{"q": "capital of France", "n": 3}'),
    ("qwen_agent_parallel", LOOKUP_CALL, '{"q": "capital of France", "n": 3}'),
    ("pythonic", LOOKUP_CALL, "q='capital of France', n=3"),
]


@pytest.mark.parametrize("dialect, call, arguments", CASES, ids=[c[0] for c in CASES])
def test_part_rules_select_the_call_name_and_arguments_in_every_dialect(dialect, call, arguments):
    react = dialect.startswith("react") or dialect == "agent_flan"
    thought = "Thought: I should search.\n" if react else "I should search."
    answer = "Final Answer: Paris." if react else "Paris."
    got = _selected(dialect, _row(thought, answer, call))
    assert got[3.0] == [call.name]  # exactly the name, no quotes or markup
    assert got[2.0] == [arguments]  # exactly the arguments text of the call
    if react:  # ReAct's thought keeps its label (its own grammar); the answer runs to the turn's end
        assert got[0.5] == [thought] and got[4.0][0].startswith("Paris.")
    else:
        assert got[0.5] == ["I should search."] and got[4.0] == ["Paris."]
    assert 1.0 in got  # the markup and end-of-turn tokens keep weight 1


def test_analysis_is_thought_and_a_think_block_is_thought():
    rules = [WeightRule(part="analysis", weight=0.25), WeightRule(part="answer", weight=4)]
    got = _selected("harmony", _row("Let me look.", "<think>It is Paris.</think>Paris.", LOOKUP_CALL), rules=rules)
    assert got[0.25] == ["Let me look.", "It is Paris."] and got[4.0] == ["Paris."]
    got = _selected("hermes", _row("Let me look.", "<think>It is Paris.</think>Paris.", LOOKUP_CALL), rules=rules)
    assert got[0.25] == ["Let me look.", "It is Paris."] and got[4.0] == ["Paris."]


def test_every_dialect_names_its_parts():
    from dsc.spec.registries import DIALECTS

    assert {name for name in DIALECTS if parts_dialect(name, RULES) is None} == {"react", "react_json", "agent_flan"}


def test_parallel_calls_each_get_their_pieces():
    def conv() -> Conversation:  # (to_dialect rewrites a row in place)
        calls = [ToolCall("web.search", '{"q":"a"}', id="c1"), ToolCall("lookup", '{"n":2}', id="c2")]
        return Conversation("s:1", "g", [
            Message("user", "Q?"), Message("assistant", "", tool_calls=calls), Message("tool", "A", tool_call_id="c1"),
            Message("tool", "B", tool_call_id="c2"), Message("assistant", "Done.")],
            Meta("s", Provenance("f", "h", 0)), tools=[SEARCH, LOOKUP])

    got = _selected("hermes", conv())
    assert got[3.0] == ["web.search", "lookup"] and got[2.0] == ['{"q": "a"}', '{"n": 2}']
    got = _selected("qwen3_coder", conv())
    assert got[3.0] == ["web.search", "lookup"] and got[2.0] == ["<parameter=q>\na\n</parameter>",
                                                                 "<parameter=n>\n2\n</parameter>"]


def test_openai_reads_the_calls_the_template_writes():
    got = _selected("openai", _row("I should search.", "Paris.", LOOKUP_CALL), template="qwen2.5")
    assert got[3.0] == ["lookup"] and got[2.0] == ['{"q": "capital of France", "n": 3}']
    assert got[0.5] == ["I should search."]


def test_without_a_dialect_parts_are_react_labels_as_before():
    assert parts_dialect(None, RULES) is None and parts_dialect("react", RULES) is None
    assert parts_dialect("hermes", [WeightRule(pattern="x", weight=2)]) is None  # no part rules: nothing to read


def test_a_react_part_with_another_dialect_is_an_error():
    with pytest.raises(ValueError, match="action_input is a part of a ReAct text"):
        parts_dialect("hermes", [WeightRule(part="action_input", weight=2)])


def _dialect_spec(tmp_path: Path, name: str, loss: str) -> Path:
    data = REPO / "specs" / "data"
    text = (REPO / "specs" / f"dialect-{name}.yaml").read_text()
    text = text.replace("path: data/", f"path: {data}/").replace("tools: data/", f"tools: {data}/")
    text = text.replace("loss: assistant", loss)
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def test_a_dialect_spec_with_part_weights_builds(tmp_path):
    from dsc.compiler.engine.driver import build

    spec = _dialect_spec(tmp_path, "hermes", "loss:\n  weights:\n    - {part: arguments, weight: 2}\n"
                                             "    - {part: call_name, weight: 3}")
    build(spec, tmp_path / "art", workers=1, cache=False)
    table = pq.read_table(min((tmp_path / "art").rglob("train*.parquet"))).to_pylist()
    args = [row["text"][w["start"]:w["end"]] for row in table for w in row["loss_weights"] if w["weight"] == 2]
    names = [row["text"][w["start"]:w["end"]] for row in table for w in row["loss_weights"] if w["weight"] == 3]
    assert len(args) >= 10 and all(isinstance(json.loads(a), dict) for a in args)
    assert len(names) == len(args) and all(n and '"' not in n for n in names)


def test_a_react_part_in_a_dialect_spec_is_a_located_error(tmp_path):
    from dsc.compiler.engine.driver import build

    spec = _dialect_spec(tmp_path, "harmony", "loss:\n  weights:\n    - {part: action_input, weight: 2}")
    with pytest.raises(SpecError, match="ReAct"):
        build(spec, tmp_path / "art", workers=1, cache=False)
