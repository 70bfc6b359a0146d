"""dsc init: a first spec sniffed from data files, which builds as it is."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.compiler.engine.validation import load_spec

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "specs" / "data"
runner = CliRunner()

# What each bundled data file is (format, label field); None: not training data (tool lists,
# question/answer tables with boolean answers), which `dsc init` must refuse with exit 2.
EXPECTED = {
    "agent-flan/chat.jsonl": ("agent_flan", None),
    "agent-flan/toolbench_react.jsonl": ("agent_flan", None),
    "agent-flan/tools.json": None,
    "agent-flan/tool_pool.json": None,
    "fireact/gpt_format__multitask.excerpt.jsonl": ("openai", None),
    "fireact/alpaca_format__multitask.excerpt.json": ("react", None),
    "fireact/hotpotqa__dev.excerpt.json": ("alpaca", None),
    "fireact/bamboogle__test.csv": ("alpaca", None),
    "fireact-recipe/hotpotqa_cot.raw.jsonl": ("openai", "reward"),
    "fireact-recipe/hotpotqa_multimethod.excerpt.jsonl": ("openai", None),
    "fireact-recipe/multitask_hotpotqa.excerpt.jsonl": ("openai", None),
    "fireact-recipe/multitask_mmlu.excerpt.jsonl": ("openai", None),
    "fireact-recipe/multitask_strategyqa.excerpt.jsonl": ("openai", None),
    "nat/hotpotqa_negative.json": ("nat", "info.reward"),
    "nat/hotpotqa_positive.json": ("nat", "info.reward"),
    "nat/strategyqa_negative.json": ("nat", "info.reward"),
    "nat/strategyqa_positive.json": ("nat", "info.reward"),
    "nat/hotpotqa_questions.jsonl": ("alpaca", None),
    "nat/strategyqa_questions.jsonl": None,
    "nat/strategyqa_dev.jsonl": None,
}


def test_every_bundled_data_file_is_covered():
    found = {str(p.relative_to(DATA)) for p in DATA.rglob("*") if p.suffix in (".jsonl", ".json", ".csv")}
    assert found == set(EXPECTED)


def test_init_on_every_bundled_data_file_then_build(tmp_path):
    """One spec over all of them (one build keeps the test quick): each file's format detected,
    the spec builds as it is."""
    names = sorted(k for k, v in EXPECTED.items() if v is not None)
    spec = tmp_path / "spec.yaml"
    r = runner.invoke(app, ["init", *[str(DATA / n) for n in names], "--out", str(spec)])
    assert r.exit_code == 0, r.output
    text = spec.read_text()
    assert "# condition:" in text and "# negatives:" in text and "# mix:" in text  # next steps, commented out
    sources = load_spec(spec).spec.sources
    assert [s.format for s in sources.values()] == [EXPECTED[n][0] for n in names]
    for n, s in zip(names, sources.values()):
        assert (spec.parent / s.path).resolve() == (DATA / n).resolve()
    # The label fields each file would get alone are named in the spec; files disagree, so none is set.
    assert "label" not in load_spec(spec).spec.model_fields_set
    result = build(spec, tmp_path / "build")
    counts = result.manifest["counts"]
    assert set(counts["read"]) == set(sources) and all(n > 0 for n in counts["read"].values())
    # (multitask_hotpotqa's rows are FireAct's multitask rows again: dedup keeps the other copy.)
    assert len(counts["per_source"]) >= len(sources) - 1 and counts["written"]["train"] > 500


@pytest.mark.parametrize("name", ["fireact-recipe/hotpotqa_cot.raw.jsonl", "nat/hotpotqa_positive.json"])
def test_label_fields_are_detected(name, tmp_path):
    spec = tmp_path / "spec.yaml"
    r = runner.invoke(app, ["init", str(DATA / name), "--out", str(spec)])
    assert r.exit_code == 0, r.output
    assert load_spec(spec).spec.label.field == EXPECTED[name][1]


def test_several_files_one_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    files = [DATA / "nat" / "strategyqa_positive.json", DATA / "nat" / "strategyqa_negative.json"]
    r = runner.invoke(app, ["init", *map(str, files), "--out", str(spec)])
    assert r.exit_code == 0, r.output
    result = build(spec, tmp_path / "build")
    assert set(result.manifest["counts"]["per_source"]) == {"strategyqa_positive", "strategyqa_negative"}
    assert set(result.manifest["counts"]["per_label"]) == {"success", "failure"}
    # The empty conversations of NAT's negative file were seen in the sample: the threshold allows them.
    assert "max_bad_rows" in spec.read_text() and result.manifest["counts"]["bad_rows"] == 2


def test_field_names_are_detected(tmp_path):
    data = tmp_path / "turns.jsonl"
    data.write_text("".join(json.dumps({"dialog": [{"speaker": "human", "text": f"hi {i}"},
                                                   {"speaker": "gpt", "text": f"hello {i}"}]}) + "\n"
                            for i in range(5)))
    spec = tmp_path / "spec.yaml"
    r = runner.invoke(app, ["init", str(data), "--out", str(spec)])
    assert r.exit_code == 0, r.output
    source = next(iter(load_spec(spec).spec.sources.values()))
    assert source.format == "sharegpt" and source.fields == {"messages": "dialog", "role": "speaker", "content": "text"}
    assert build(spec, tmp_path / "b").manifest["counts"]["written"]["train"] == 5


def test_unrecognisable_file_says_what_it_saw(tmp_path):
    r = runner.invoke(app, ["init", str(DATA / "agent-flan" / "tools.json"), "--out", str(tmp_path / "s.yaml")])
    assert r.exit_code == 2
    assert "cannot tell the format" in r.output and "['description', 'name', 'parameters']" in r.output
    assert not (tmp_path / "s.yaml").exists()
    r = runner.invoke(app, ["init", str(DATA / "nat" / "strategyqa_dev.jsonl"), "--out", str(tmp_path / "s.yaml")])
    assert r.exit_code == 2 and "question/answer table" in r.output
    (tmp_path / "s.yaml").write_text("x")
    r = runner.invoke(app, ["init", str(DATA / "nat" / "strategyqa_positive.json"), "--out", str(tmp_path / "s.yaml")])
    assert r.exit_code == 2 and "exists" in r.output


def test_init_joins_a_question_table_reads_prompt_files_and_keeps_names_apart(tmp_path):
    """NAT's own files: trajectories named alike but for one part, the questions table their ids
    join, and the instruction as a JSON conversation file."""
    nat = DATA / "nat"
    for side in ("positive", "negative"):
        (tmp_path / f"strategyqa_gpt-3.5_{side}.json").write_text((nat / f"strategyqa_{side}.json").read_text())
    (tmp_path / "train.jsonl").write_text((nat / "strategyqa_questions.jsonl").read_text())
    instruction = (nat / "prompts" / "strategyqa_instruction.txt").read_text()
    (tmp_path / "prompts.json").write_text(json.dumps([{"from": "human", "value": instruction},
                                                       {"from": "gpt", "value": "Start please."}]))
    spec = tmp_path / "spec.yaml"
    files = ["strategyqa_gpt-3.5_positive.json", "strategyqa_gpt-3.5_negative.json", "train.jsonl", "prompts.json"]
    r = runner.invoke(app, ["init", *[str(tmp_path / f) for f in files], "--out", str(spec)])
    assert r.exit_code == 0, r.output
    loaded = load_spec(spec).spec
    assert list(loaded.sources) == ["strategyqa_gpt_3_5_positive", "strategyqa_gpt_3_5_negative", "train"]
    assert loaded.sources["train"].lookup == "id"
    assert [(t.role, t.field) for t in loaded.assemble.prepend[:2]] == [("user", "0.value"), ("assistant", "1.value")]
    assert loaded.assemble.question == "lookup.train.question"
    assert "(the whole file)" in spec.read_text()
    result = build(spec, tmp_path / "out")
    import pyarrow.parquet as pq

    first = pq.read_table(next((tmp_path / "out" / "data").glob("train-*.parquet"))).column("messages")[0].as_py()
    assert first[0]["content"] == instruction.removesuffix("\n") and first[2]["role"] == "user"  # (Jinja drops one final newline)
    assert result.manifest["counts"]["written"]["train"] > 0


def test_init_picks_a_template_that_renders_tools_when_rows_use_them(tmp_path):
    tools = [{"name": "get_weather", "description": "Weather of a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    rows = []
    for i in range(6):
        rows.append({"conversations": [
            {"from": "human", "value": f"Weather in city {i}?"},
            {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": f"c{i}"}})},
            {"from": "observation", "value": json.dumps({"temp": 20 + i})},
            {"from": "gpt", "value": f"It is {20 + i} degrees."}], "tools": json.dumps(tools)})
    (tmp_path / "glaive_toolcall_en_demo.json").write_text(json.dumps(rows))
    spec = tmp_path / "spec.yaml"
    r = runner.invoke(app, ["init", str(tmp_path / "glaive_toolcall_en_demo.json"), "--out", str(spec)])
    assert r.exit_code == 0, r.output
    assert load_spec(spec).spec.template == "qwen2.5"
    result = build(spec, tmp_path / "out")
    assert result.quarantined == 0 and result.manifest["counts"]["written"]["train"] == 6
