"""The recipe specs (specs/nat.yaml, nat-hotpotqa.yaml, fireact.yaml, agent-flan.yaml) build from
the bundled data and give the rows expected by hand from how that data was written; bad specs
for these sections fail with one located message (exit 2)."""
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.compiler.stages.read.ranges import resolve_inputs
from dsc.core.errors import SpecError
from dsc.compiler.engine.validation import load_spec

REPO = Path(__file__).resolve().parents[3]
SPECS = REPO / "specs"
NAT = SPECS / "data" / "nat"
AF = SPECS / "data" / "agent-flan"
ACK = "I've understood your instruction, start please."
CORRECT = " Generate a sequence of Thought and Action steps to solve the question **correctly**."
INCORRECT = " Generate a sequence of Thought and Action steps. But **incorrectly** solve the question."


def rows_of(out: Path) -> list[dict]:
    rows = []
    for f in sorted((out / "data").glob("*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def built(name: str, tmp_path_factory) -> tuple[dict, list[dict]]:
    out = tmp_path_factory.mktemp(name) / "out"
    result = build(SPECS / f"{name}.yaml", out, workers=1)
    return result.manifest, rows_of(out)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# NAT (StrategyQA): binary conditioning, 1:2 pos:neg, cap 3 per question, filters, decontamination
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nat(tmp_path_factory):
    return built("nat", tmp_path_factory)


def test_nat_counts(nat):
    manifest, rows = nat
    c = manifest["counts"]
    assert c["read"] == {"negative": 48, "positive": 24}
    # 2 empty trajectories (unreadable rows); unfinished ×2, malformed action ×1, empty observation ×1;
    # question 5 is in the dev set verbatim (1 positive + 2 negatives), question 9 reworded (1 + 1)
    assert c["quarantine_reasons"] == {"normalise: empty conversation": 2}
    assert c["dropped"] == {"filter: finished": 2, "filter: valid_actions": 1, "filter: no_empty_observation": 1,
                            "decontaminated: exact": 3, "decontaminated: ngram": 2}
    mix = manifest["selection"]["mix"]
    assert (mix["positive"]["available"], mix["positive"]["selected"]) == (22, 18)
    # question 4 has 4 usable negatives: one over the cap of 3
    assert (mix["negative"]["available"], mix["negative"]["over_group_cap"], mix["negative"]["selected"]) == (39, 1, 36)
    assert mix["negative"]["realised"] == mix["negative"]["requested"] == 2.0
    labels = Counter(r["meta"]["label"] for r in rows)
    assert labels == {"success": 18, "failure": 36} and len(rows) == 54
    assert {k: sum(v.values()) for k, v in c["per_label"].items()} == {"failure": 36, "success": 18}


def test_nat_rows_carry_their_conditioning_string_in_the_question_turn(nat):
    manifest, rows = nat
    questions = {q["id"]: q["question"] for q in jsonl(NAT / "strategyqa_questions.jsonl")}
    instruction = (NAT / "prompts" / "strategyqa_instruction.txt").read_text().rstrip("\n")
    dev = {q["question"] for q in jsonl(NAT / "strategyqa_dev.jsonl")}
    per_group = Counter()
    for r in rows:
        m = r["messages"]
        success = r["meta"]["label"] == "success"
        assert r["meta"]["success"] is success and r["meta"]["source"] == ("positive" if success else "negative")
        q = questions[r["group"]]
        assert q not in dev and "gunpowder" not in q
        assert [(x["role"], x["content"], x["loss"]) for x in m[:3]] == [
            ("user", instruction, False), ("assistant", ACK, False),
            ("user", f"Question: {q}." + (CORRECT if success else INCORRECT), False)]
        text = r["text"]
        assert text.count(CORRECT if success else INCORRECT) == 1 and (INCORRECT if success else CORRECT) not in text
        assert m[3]["role"] == "assistant" and m[3]["content"].startswith("Thought:")
        assert "finish[" in [x for x in m if x["role"] == "assistant"][-1]["content"]
        assert r["meta"]["provenance"]["steps"] == ["format:nat", "label", "assemble",
                                                    f"condition:{r['meta']['label']}"]
        if not success:
            per_group[r["group"]] += 1
    assert max(per_group.values()) == 3


def test_nat_manifest_holds_the_inference_prompt(nat):
    manifest, _ = nat
    instruction = (NAT / "prompts" / "strategyqa_instruction.txt").read_text().rstrip("\n")
    assert manifest["inference"] == {
        "messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": ACK},
                     {"role": "user", "content": "Question: {{ question }}." + CORRECT}],
        "label": "success",
        "condition": {"turn": "question", "position": "suffix", "string": CORRECT}}


def test_nat_build_is_byte_identical_across_worker_counts(nat, tmp_path):
    manifest, _ = nat
    again = build(SPECS / "nat.yaml", tmp_path / "w2", workers=2)
    assert again.manifest["version"] == manifest["version"]
    assert again.manifest["files"] == manifest["files"]


# ---------------------------------------------------------------------------------------------
# NAT (HotpotQA): four classes by F1 bins, prefix strings
# ---------------------------------------------------------------------------------------------

FOUR = {"totally_incorrect": "[Totally Incorrect] ", "mostly_incorrect": "[Mostly Incorrect] ",
        "mostly_correct": "[Mostly Correct] ", "correct": "[Correct] "}


def f1_class(f1):
    return "totally_incorrect" if f1 == 0 else "mostly_incorrect" if f1 < 0.4 else \
        "mostly_correct" if f1 < 1 else "correct"


def test_nat_hotpotqa_four_classes(tmp_path_factory):
    manifest, rows = built("nat-hotpotqa", tmp_path_factory)
    raw = {}
    for name in ("positive", "negative"):
        for rec in json.loads((NAT / f"hotpotqa_{name}.json").read_text()):
            raw[(rec["id"], rec["conversations"][-2]["content"])] = rec
    questions = {q["id"]: q["question"] for q in jsonl(NAT / "hotpotqa_questions.jsonl")}
    mix = manifest["selection"]["mix"]
    assert (mix["positive"]["selected"], mix["negative"]["selected"]) == (10, 20)
    assert mix["negative"]["over_group_cap"] == 1  # the question with 4 negatives
    seen = Counter()
    for r in rows:
        rec = raw[(r["group"], r["messages"][-2]["content"])]
        cls = f1_class(rec["info"]["f1"])
        seen[cls] += 1
        assert r["meta"]["label"] == cls and r["meta"]["score"] == rec["info"]["f1"]
        assert r["meta"]["success"] is (cls == "correct")
        assert r["messages"][2]["content"] == FOUR[cls] + f"Question: {questions[r['group']]}."
    assert set(seen) == set(FOUR) and seen["correct"] == 10
    assert manifest["inference"]["messages"][2]["content"] == "[Correct] Question: {{ question }}."
    assert manifest["inference"]["label"] == "correct"


# ---------------------------------------------------------------------------------------------
# FireAct: multi-task, multi-method, CoT cast, Reflexion tag, dedup of the shared HotpotQA rows
# ---------------------------------------------------------------------------------------------


def test_fireact_recipe(tmp_path_factory):
    manifest, rows = built("fireact", tmp_path_factory)
    assert manifest["counts"]["read"] == {"hotpotqa_cot": 6, "hotpotqa_mm": 14, "mmlu": 8, "multitask_hotpotqa": 8,
                                          "strategyqa": 8}
    assert manifest["selection"]["dedup_removed"] == {"multitask_hotpotqa": 4}
    assert len(rows) == 40
    assert Counter((r["meta"]["task"], r["meta"]["method"]) for r in rows) == {
        ("hotpotqa", "react"): 12, ("hotpotqa", "reflexion"): 6, ("hotpotqa", "cot"): 6,
        ("strategyqa", "react"): 8, ("mmlu", "react"): 8}
    # FireAct kept its failed Reflexion rows (reward = False); labels come from mixed literals
    failed = [r for r in rows if r["meta"]["label"] == "failure"]
    assert len(failed) == 2 and all(r["meta"]["method"] == "reflexion" for r in failed)
    assert all(r["messages"][-1]["content"].endswith("reward = False") for r in failed)
    raw_cot = jsonl(SPECS / "data" / "fireact-recipe" / "hotpotqa_cot.raw.jsonl")
    cot = {r["messages"][0]["content"]: r for r in rows if r["meta"]["method"] == "cot"}
    for src in raw_cot:
        r = cot[src["messages"][0]["content"]]
        thought, answer = src["messages"][1]["content"].rsplit("Answer: ", 1)
        assert [m["content"] for m in r["messages"][1:]] == [
            f"{thought}Action: finish[{answer}]", "Observation: Episode finished, reward = 1"]
        assert "convert:cot_to_react" in r["meta"]["provenance"]["steps"]
    for r in rows:  # everything is ReAct text; loss: all supervises the whole text
        assert all("\nAction: " in m["content"] or m["content"].startswith("Action: ")
                   for m in r["messages"] if m["role"] == "assistant")
        assert r["loss_spans"] == [[0, len(r["text"])]]
    assert manifest["inference"] == {"messages": [{"role": "user", "content": "{{ question }}"}], "label": None}


# ---------------------------------------------------------------------------------------------
# Agent-FLAN: ReAct → natural chat, capability ratios with decomposition, both negative rules
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_flan(tmp_path_factory):
    return built("agent-flan", tmp_path_factory)


def test_agent_flan_capability_ratios(agent_flan):
    manifest, rows = agent_flan
    caps = manifest["selection"]["capabilities"]
    # 12 tool-using rows (each: retrieval turns + an answer from the results) and 4 answered directly
    expected = {"reasoning": (1.0, 4, 4), "retrieval": (0.5, 12, 6), "understanding": (0.75, 12, 9)}
    for cap, (rate, available, selected) in expected.items():
        rep = caps["per_capability"][cap]
        assert (rep["requested"], rep["available_rows"], rep["selected_rows"]) == (rate, available, selected)
        assert abs(rep["realised"] - rate) <= 1 / available  # within one row
    assert Counter(r["meta"]["capability"] for r in rows) == {
        "reasoning": 4, "retrieval": 6, "understanding": 9, "instruction_following": 10, None: 12}
    for r in rows:
        cap = r["meta"]["capability"]
        if r["id"].split(":", 1)[1].count("@"):
            supervised = [m for m in r["messages"] if m["role"] == "assistant" and m["loss"] is not False]
            assert supervised and all(m["capability"] == cap for m in supervised)
            others = [m for m in r["messages"] if m["role"] == "assistant" and m["capability"] != cap]
            assert all(m["loss"] is False for m in others)


def test_agent_flan_natural_chat(agent_flan):
    _, rows = agent_flan
    tools = {t["name"]: t for t in json.loads((AF / "tools.json").read_text())}
    converted = [r for r in rows if r["meta"]["source"] == "toolbench" and "~" not in r["id"]]
    assert len(converted) == 19
    for r in converted:
        m = r["messages"]
        assert m[0] == {**m[0], "role": "system", "content": "You are AgentLM, a helpful assistant that can use tools."}
        for x in m:
            assert "Action Input" not in x["content"] and not x["content"].startswith(("Thought:", "Observation:"))
            for call in x["tool_calls"] or []:
                args = json.loads(call["arguments"])
                assert set(tools[call["name"]]["parameters"]["required"]) <= set(args)
        assert m[-1]["role"] == "assistant" and not m[-1]["tool_calls"]
        assert [t["function"]["name"] for t in json.loads(r["tools"])] == [n for n in tools if n != "finish"]


def test_agent_flan_rule_negatives(agent_flan):
    manifest, rows = agent_flan
    mix = manifest["selection"]["mix"]
    assert (mix["irrelevant"]["available"], mix["irrelevant"]["selected"]) == (10, 6)
    assert (mix["no_tools"]["available"], mix["no_tools"]["selected"]) == (12, 6)
    chat = {r["conversation"][0]["content"]: r for r in jsonl(AF / "chat.jsonl")}
    pool = {t["name"] for t in json.loads((AF / "tool_pool.json").read_text())}
    irrelevant = [r for r in rows if r["id"].endswith("~irrelevant_tools")]
    no_tools = [r for r in rows if r["id"].endswith("~no_tools")]
    assert len(irrelevant) == 6 and len(no_tools) == 6
    for r in irrelevant + no_tools:
        assert not any(m["tool_calls"] for m in r["messages"])  # rule-made negatives never call a tool
        assert "rule:" + r["id"].split("~")[1] in r["meta"]["provenance"]["steps"]
    for r in irrelevant:
        src = chat[r["messages"][0]["content"]]
        assert [(m["role"], m["content"]) for m in r["messages"]] == [(m["role"], m["content"])
                                                                      for m in src["conversation"]]
        offered = {t["function"]["name"] for t in json.loads(r["tools"])}
        assert len(offered) == 2 and offered <= pool
    for r in no_tools:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] and r["tools"] is None
        assert r["messages"][1]["content"].startswith("I'm sorry, but I don't have access to a tool")


# ---------------------------------------------------------------------------------------------
# Bad specs for these sections: one located message, exit 2
# ---------------------------------------------------------------------------------------------


def variant(tmp_path: Path, name: str, old: str, new: str) -> tuple[Path, int]:
    """The recipe with `old` replaced (same line count), data paths made absolute; and the
    1-based line where the change is."""
    text = (SPECS / f"{name}.yaml").read_text()
    assert old in text
    line = text[: text.index(old)].count("\n") + 1
    text = text.replace(old, new).replace(" data/", f" {SPECS}/data/")
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p, line


def spec_error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as e:
        load_spec(path)
    return e.value


def test_recipes_validate_cleanly():
    """Every example spec validates, and every input it names is there (bundled under specs/data)."""
    names = sorted(p.stem for p in SPECS.glob("*.yaml"))
    assert {"nat", "nat-hotpotqa", "fireact", "fireact-alpaca", "fireact-chat", "agent-flan"} <= set(names)
    for name in names:
        loaded = load_spec(SPECS / f"{name}.yaml")
        assert loaded.spec.name == {"nat": "nat-strategyqa"}.get(name, name)
        inputs = resolve_inputs(loaded).entries
        assert {i["source"] for i in inputs} == set(loaded.spec.sources), name
        for i in inputs:
            assert (SPECS / i["path"]).is_file() and len(i["sha256"]) == 64, (name, i)


def test_unknown_class_in_condition_strings(tmp_path):
    p, line = variant(tmp_path, "nat", "    success: \" Generate", "    succes: \" Generate")
    err = spec_error(p)
    assert err.line == line and err.col == 5
    assert "class 'succes', which no label rule produces (did you mean 'success'?)" in err.message


def test_class_without_a_string(tmp_path):
    p, _ = variant(tmp_path, "nat-hotpotqa", '    mostly_correct: "[Mostly Correct] "\n', "")
    err = spec_error(p)
    assert "mostly_correct has no conditioning string" in err.message
    assert p.read_text().splitlines()[err.line - 1] == "  strings:"


def test_ratio_for_a_capability_no_rule_produces(tmp_path):
    p, line = variant(tmp_path, "agent-flan", "understanding: 0.75}", "planning: 0.75}")
    err = spec_error(p)
    assert err.line == line and "capability 'planning', which no rule produces" in err.message


def test_lookup_source_without_a_key(tmp_path):
    p, _ = variant(tmp_path, "nat", "strategyqa_questions.jsonl, lookup: id}", "strategyqa_questions.jsonl, format: nat}")
    err = spec_error(p)
    text = p.read_text().splitlines()
    assert "source 'questions' is used as a lookup but has no key" in err.message
    assert "lookup.questions" in text[err.line - 1] or "question: lookup" in text[err.line - 1]


def test_lookup_that_is_not_a_source(tmp_path):
    p, line = variant(tmp_path, "nat", "content: \"Question: {{ lookup.questions.question }}.\"",
                      "content: \"Question: {{ lookup.qs.question }}.\"")
    err = spec_error(p)
    assert err.line == line and "lookup 'qs' is not a source" in err.message


@pytest.mark.parametrize("name,old,new,msg", [
    ("nat", "  turn: question", "  turn: questoin", "neither first_user, last_user, system nor the id of an "
                                                    "assembled turn (did you mean 'question'?)"),
    ("nat", "  negative: {ratio: 2.0, of: positive,", "  negative: {ratio: 2.0, of: postive,", "`of: postive`"),
    ("nat", "  positive: {count: 18}", "  positiv: {count: 18}", "mix bucket 'positiv' has no `where:`"),
    ("agent-flan", "    where: {source: chat}\n    pool", "    where: {source: chats}\n    pool",
     "source 'chats', which is not an emitted source"),
    ("agent-flan", "where: {rule: no_tools}, count: 6}", "where: {rule: no_tool}, count: 6}",
     "rule 'no_tool', which no `negatives` entry uses"),
    ("agent-flan", "tools: data/agent-flan/tools.json", "tools: data/agent-flan/tool.json",
     "agent-flan/tool.json' does not exist"),
    ("agent-flan", "  - rule: no_tools ", "  - rule: no_toolz ", "unknown negative rule 'no_toolz'"),
    ("nat", "  inference: success", "  inference: win", "`inference: win` has no string"),
    ("nat", "  - finished: \"finish\\\\[.+\\\\]\"", "  - finised: \"finish\\\\[.+\\\\]\"", "did you mean 'finished'"),
])
def test_more_bad_specs_are_located(tmp_path, name, old, new, msg):
    p, line = variant(tmp_path, name, old, new)
    err = spec_error(p)
    assert msg in err.message
    assert err.line is not None and abs(err.line - line) <= 1, (err.line, line, err.message)


@pytest.mark.parametrize("name,old,new,msg,at", [
    # Each block of registered names (convert steps, negative rules, filters): an unknown name,
    # an unknown option or a missing key is one error at the entry, with a did-you-mean.
    ("agent-flan", "  - step: react_to_chat", "  - step: react_to_chats",
     "'convert.0': unknown convert step 'react_to_chats' (did you mean 'react_to_chat'?); registered: 'cot_to_react', "
     "'react_to_chat', 'react_to_tool_calls', 'tag', 'to_dialect', 'tool_calls_to_react'", "step: react_to_chats"),
    ("agent-flan", "  - rule: no_tools ", "  - rule: no_toolz ",
     "'negatives.1': unknown negative rule 'no_toolz' (did you mean 'no_tools'?); registered: 'irrelevant_tools', "
     "'no_tools'", "rule: no_toolz"),
    ("nat", "  - non_empty", "  - nonempty",
     "'filters.0': unknown filter 'nonempty' (did you mean 'non_empty'?); registered: 'finished', ", "- nonempty"),
    ("agent-flan", "    final: finish ", "    finl: finish ",
     "'convert.0': convert step 'react_to_chat': unknown key 'finl' (did you mean 'final'?); allowed: 'answer', "
     "'final', 'observation_prefix', 'remove', 'syntax', 'tools', 'unknown_tools', 'where'", "step: react_to_chat"),
    ("agent-flan", "    k: 2", "    kk: 2",
     "'negatives.0': negative rule 'irrelevant_tools': unknown key 'kk' (did you mean 'k'?); allowed: 'k', 'pool', "
     "'rate', 'where'", "rule: irrelevant_tools"),
    ("agent-flan", "  - rule: no_tools ", "  - rul: no_tools ",
     "'negatives.1': missing `rule` (one of 'irrelevant_tools', 'no_tools')", "rul: no_tools"),
])
def test_registered_names_are_checked_in_every_block(tmp_path, name, old, new, msg, at):
    p, _ = variant(tmp_path, name, old, new)
    err = spec_error(p)
    assert msg in err.message
    assert at in p.read_text().splitlines()[err.line - 1], (err.line, err.message)


def test_cli_validate_exits_2_with_one_located_line(tmp_path):
    p, line = variant(tmp_path, "agent-flan", "understanding: 0.75}", "planning: 0.75}")
    result = CliRunner().invoke(app, ["validate", str(p)])
    assert result.exit_code == 2
    out = result.output.strip()
    assert f"{p}:{line}:" in out and "planning" in out and "Traceback" not in out
    assert CliRunner().invoke(app, ["validate", str(SPECS / "agent-flan.yaml")]).exit_code == 0


def test_capability_proportions_in_supervised_tokens(tmp_path, tiny_tokenizer_dir):
    """Agent-FLAN's capabilities as target proportions of supervised tokens (real tokenizer counts):
    the realised shares match the requested ones to within one row."""
    p, _ = variant(tmp_path, "agent-flan",
                   "  rates: {reasoning: 1.0, retrieval: 0.5, understanding: 0.75}",
                   "  proportions: {reasoning: 0.2, retrieval: 0.5, understanding: 0.3}")
    text = p.read_text().replace("  measure: rows", "  measure: tokens")
    text += f"tokenize: {{tokenizer: {tiny_tokenizer_dir}}}\n"
    p.write_text(text)
    result = build(p, tmp_path / "out", workers=1)
    caps = result.manifest["selection"]["capabilities"]
    assert caps["measure"] == "tokens" and caps["mode"] == "proportions"
    per = caps["per_capability"]
    total = sum(r["selected"] for r in per.values())
    assert total > 0
    rows = rows_of(tmp_path / "out")
    for cap, want in (("reasoning", 0.2), ("retrieval", 0.5), ("understanding", 0.3)):
        r = per[cap]
        assert abs(r["selected"] - want * total) <= r["max_row"], (cap, r)
        assert r["realised"] == pytest.approx(r["selected"] / total, abs=1e-6)
        # the measure is the rows' own supervised tokens, as written in the artifact
        written = sum(sum(1 for t in row["labels"] if t != -100) for row in rows if row["meta"]["capability"] == cap)
        assert written == r["selected"]
