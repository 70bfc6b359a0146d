"""Prompt assembly (lookups joined by key) and success conditioning, including every NAT variant
of seeds-facts.md expressed as a spec (no code)."""
import json
from pathlib import Path

import pytest

from dsc.record import BadRow, Conversation, Message, Meta, Provenance
from dsc.compiler.stages.read.sources import iter_raw_rows, normalise_row
from dsc.compiler.engine.validation import load_spec
from dsc.compiler.stages.transforms.assemble import Joiner, apply_assemble, inference_turns, make_assembler
from dsc.spec.sections import AssembleSpec
from dsc.compiler.stages.transforms.condition import apply_condition
from dsc.spec.sections import ConditionSpec
from dsc.compiler.stages.transforms.pipeline import build_pipeline, inference

REPO = Path(__file__).resolve().parents[3]
NAT = REPO / "specs" / "data" / "nat"
ACK = "I've understood your instruction, start please."


def conv(messages, extra=None, label=None):
    c = Conversation("s:1", "g", messages, Meta("s", Provenance("f", "h", 0), extra=extra or {}))
    c.meta.label = label
    return c


def traj():
    return [Message("assistant", "Thought: t\n\nAction: finish[Yes]", loss=True),
            Message("user", "Observation: Episode finished", loss=False)]


def nat_assembler(tmp_path):
    (tmp_path / "instr.txt").write_text("Solve {{ 'it' }}.\n")
    spec = AssembleSpec.model_validate({"question": "lookup.questions.question", "prepend": [
        {"role": "user", "file": "instr.txt"},
        {"role": "assistant", "content": ACK},
        {"id": "question", "role": "user", "content": "Question: {{ lookup.questions.question }}."}]})
    asm = make_assembler(spec, tmp_path)
    asm.joiner = Joiner({"questions": {"q1": {"id": "q1", "question": "Is it?"}}}, {"questions": "id"})
    return asm


def test_assemble_prepends_nat_turns_joined_by_id(tmp_path):
    asm = nat_assembler(tmp_path)
    c = conv(traj(), {"id": "q1", "info": {"reward": True}})
    positions = apply_assemble(c, asm)
    assert [(m.role, m.content, m.loss) for m in c.messages[:3]] == [
        ("user", "Solve it.", False), ("assistant", ACK, False), ("user", "Question: Is it?.", False)]
    assert positions == {"question": 2}
    assert c.messages[3].content.startswith("Thought:")
    assert "assemble" in c.meta.provenance.steps


def test_missing_join_key_or_field_is_a_bad_row(tmp_path):
    asm = nat_assembler(tmp_path)
    with pytest.raises(BadRow, match="no row with key 'q9'"):
        apply_assemble(conv(traj(), {"id": "q9"}), asm)
    with pytest.raises(BadRow, match="which this row does not have"):
        apply_assemble(conv(traj(), {}), asm)


def test_undefined_name_in_turn_is_a_bad_row(tmp_path):
    spec = AssembleSpec.model_validate({"prepend": [{"role": "user", "content": "{{ info.missing }}"}]})
    with pytest.raises(BadRow, match="assemble.prepend\\[0\\]"):
        apply_assemble(conv(traj(), {"info": {}}), make_assembler(spec, tmp_path))


def test_prepend_goes_after_system_and_append_at_end(tmp_path):
    spec = AssembleSpec.model_validate({"prepend": [{"role": "user", "content": "P"}],
                                        "append": [{"id": "tail", "role": "user", "content": "A {{ record.group }}"}]})
    c = conv([Message("system", "S"), *traj()])
    pos = apply_assemble(c, make_assembler(spec, tmp_path))
    assert [m.content for m in c.messages] == ["S", "P", *[m.content for m in traj()], "A g"]
    assert pos == {"tail": 4}


def test_inference_turns_put_the_question_placeholder(tmp_path):
    turns = inference_turns(nat_assembler(tmp_path))
    assert turns == [{"role": "user", "content": "Solve it."}, {"role": "assistant", "content": ACK},
                     {"role": "user", "content": "Question: {{ question }}."}]
    spec = AssembleSpec.model_validate({"prepend": [{"role": "user", "content": "{{ info.x }}"}]})
    with pytest.raises(ValueError, match="inference"):
        inference_turns(make_assembler(spec, tmp_path))
    spec = AssembleSpec.model_validate({"prepend": [{"role": "user", "content": "{{ info.x }}",
                                                     "inference": "Q: {{ question }}"}]})
    assert inference_turns(make_assembler(spec, tmp_path)) == [{"role": "user", "content": "Q: {{ question }}"}]


@pytest.mark.parametrize("turn,position,expected", [
    ("first_user", "suffix", ["S", "u1+", "a", "u2"]),
    ("first_user", "prefix", ["S", "+u1", "a", "u2"]),
    ("system", "prefix", ["+S", "u1", "a", "u2"]),
    ("system", "suffix", ["S+", "u1", "a", "u2"]),
])
def test_condition_placements(turn, position, expected):
    c = conv([Message("system", "S"), Message("user", "u1"), Message("assistant", "a"), Message("user", "u2")],
             label="success")
    spec = ConditionSpec(turn=turn, position=position, strings={"success": "+"}, inference="success")
    assert [m.content for m in apply_condition(c, spec).messages] == expected


def test_condition_last_user_before_first_assistant_and_created_system():
    c = conv([Message("user", "instr"), Message("user", "q"), Message("assistant", "a"), Message("user", "obs")],
             label="failure")
    spec = ConditionSpec(turn="last_user", strings={"failure": " [Bad]", "success": " [Good]"}, inference="success")
    assert [m.content for m in apply_condition(c, spec).messages] == ["instr", "q [Bad]", "a", "obs"]
    c = conv([Message("user", "q"), Message("assistant", "a")], label="success")
    spec = ConditionSpec(turn="system", strings={"success": "Solve it correctly."}, inference="success")
    out = apply_condition(c, spec).messages
    assert (out[0].role, out[0].content, out[0].loss) == ("system", "Solve it correctly.", False)


def test_condition_unlabelled_rows():
    spec = ConditionSpec(strings={"success": "x"}, inference="success")
    with pytest.raises(BadRow, match="no label"):
        apply_condition(conv([Message("user", "q")]), spec)
    with pytest.raises(BadRow, match="class 'failure'"):
        apply_condition(conv([Message("user", "q")], label="failure"), spec)
    keep = ConditionSpec(strings={"success": "x"}, inference="success", unlabelled="keep")
    assert apply_condition(conv([Message("user", "q")]), keep).messages[0].content == "q"


# ---------------------------------------------------------------------------------------------
# Every NAT variant of seeds-facts.md §1.2, as a spec, on the bundled NAT-format data
# ---------------------------------------------------------------------------------------------

CORRECT = " Generate a sequence of Thought and Action steps to solve the question **correctly**."
INCORRECT = " Generate a sequence of Thought and Action steps. But **incorrectly** solve the question."

BINARY_LABEL = "label: {field: info.reward}\n"
F1_LABEL = "label: {{field: info.f1, bins: {bins}}}\n"
THREE = "[{class: incorrect, eq: 0}, {class: partial, gt: 0, lt: 1}, {class: correct, eq: 1}]"
FOUR = ("[{class: ti, eq: 0}, {class: mi, gt: 0, lt: 0.4}, {class: mc, ge: 0.4, lt: 1}, {class: correct, eq: 1}]")
SOFT = "[{class: failure, le: 0.2}, {class: success, gt: 0.2}]"

VARIANTS = {
    # name: (task, label yaml, position, strings, inference class)
    "zero-shot-target-aware": ("strategyqa", BINARY_LABEL, "suffix", {"success": CORRECT, "failure": INCORRECT},
                               "success"),
    "good-suffix": ("strategyqa", BINARY_LABEL, "suffix", {"success": " [Good]", "failure": " [Bad]"}, "success"),
    "prefix-correct": ("strategyqa", BINARY_LABEL, "prefix",
                       {"success": "[Correct] ", "failure": "[Incorrect] "}, "success"),
    "meaningless": ("strategyqa", BINARY_LABEL, "prefix", {"success": "[1] ", "failure": "[2] "}, "success"),
    "random-sentence": ("strategyqa", BINARY_LABEL, "suffix", {
        "success": " 15th-century Italy saw the formation of the two main variants that are known today.",
        "failure": " An apple is a round, edible fruit produced by an apple tree."}, "success"),
    "prefix-correct-inverse": ("strategyqa", BINARY_LABEL, "prefix",
                               {"success": "[Incorrect] ", "failure": "[Correct] "}, "success"),
    "three-class": ("hotpotqa", F1_LABEL.format(bins=THREE), "prefix",
                    {"incorrect": "[Incorrect] ", "partial": "[Partially Correct] ", "correct": "[Correct] "},
                    "correct"),
    "four-class": ("hotpotqa", F1_LABEL.format(bins=FOUR), "prefix",
                   {"ti": "[Totally Incorrect] ", "mi": "[Mostly Incorrect] ", "mc": "[Mostly Correct] ",
                    "correct": "[Correct] "}, "correct"),
    "soft": ("hotpotqa", F1_LABEL.format(bins=SOFT), "suffix", {"success": CORRECT, "failure": INCORRECT},
             "success"),
}


def variant_spec(tmp_path: Path, task: str, label: str, position: str, strings: dict, inference_cls: str) -> Path:
    strings_yaml = "\n".join(f"    {k}: {json.dumps(v)}" for k, v in strings.items())
    text = f"""\
dsc: 1
name: nat-variant
seed: 42
sources:
  positive: {{path: {NAT}/{task}_positive.json, format: nat, id: id}}
  negative: {{path: {NAT}/{task}_negative.json, format: nat, id: id}}
  questions: {{path: {NAT}/{task}_questions.jsonl, lookup: id}}
{label}filters: [non_empty]
assemble:
  question: lookup.questions.question
  prepend:
    - {{role: user, file: {NAT}/prompts/{task}_instruction.txt}}
    - {{role: assistant, content: "{ACK}"}}
    - {{id: question, role: user, content: "Question: {{{{ lookup.questions.question }}}}."}}
condition:
  turn: question
  position: {position}
  strings:
{strings_yaml}
  inference: {inference_cls}
template: llama-2
"""
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def run_rows(spec_path: Path):
    loaded = load_spec(spec_path)
    spec = loaded.spec
    tr = build_pipeline(spec, loaded.base_dir)
    out = []
    for name in sorted(spec.emitted_sources()):
        for raw in iter_raw_rows(name, spec.sources[name], loaded.base_dir):
            try:
                outcome = tr.run(normalise_row(raw, name, spec.sources[name]))
            except BadRow:
                continue  # empty trajectories
            out += [(raw.data, r) for r in outcome.rows]
    return spec, tr, out


def expected_class(task, raw, strings, label_yaml):
    if "bins" not in label_yaml:
        return "success" if raw["info"]["reward"] else "failure"
    f1 = raw["info"]["f1"]
    if "partial" in strings:
        return "incorrect" if f1 == 0 else "correct" if f1 == 1 else "partial"
    if "ti" in strings:
        return "ti" if f1 == 0 else "mi" if f1 < 0.4 else "mc" if f1 < 1 else "correct"
    return "success" if f1 > 0.2 else "failure"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_nat_variant_is_a_spec(tmp_path, name):
    task, label_yaml, position, strings, inf = VARIANTS[name]
    spec, tr, rows = run_rows(variant_spec(tmp_path, task, label_yaml, position, strings, inf))
    questions = {json.loads(line)["id"]: json.loads(line)["question"]
                 for line in (NAT / f"{task}_questions.jsonl").read_text().splitlines()}
    seen = set()
    assert rows
    for raw, row in rows:
        cls = expected_class(task, raw, strings, label_yaml)
        seen.add(cls)
        q = f"Question: {questions[raw['id']]}."
        want = q + strings[cls] if position == "suffix" else strings[cls] + q
        assert row.meta.label == cls
        assert row.messages[1].content == ACK and row.messages[1].loss is False
        assert row.messages[2].content == want
        assert sum(strings[cls] in m.content for m in row.messages) == 1  # nowhere else
    assert seen == set(strings)  # the sample data exercises every class
    block = inference(spec, tr)
    q_inf = "Question: {{ question }}."
    assert block["messages"][2]["content"] == (q_inf + strings[inf] if position == "suffix" else strings[inf] + q_inf)
    assert block["label"] == inf and block["condition"]["string"] == strings[inf]
