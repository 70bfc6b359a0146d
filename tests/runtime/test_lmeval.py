"""dsc export lm-eval: lm-evaluation-harness loads the exported task as it is and scores a tiny
model with it; prompts are the artifact's inference-time prompts; `dsc eval` results carry the
harness's result shape."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil

import pytest
import yaml
from artifact_helpers import REPO
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.runtime.artifact import load_artifact
from dsc.runtime.evaluation import score_predictions
from dsc.runtime.prompting import PromptBuilder

runner = CliRunner()
CORRECT = "Generate a sequence of Thought and Action steps to solve the question **correctly**."


@pytest.fixture(scope="module")
def nat_with_test(tmp_path_factory):
    """The NAT recipe with a test split (its rows are trained with both conditioning strings)."""
    root = tmp_path_factory.mktemp("lmeval")
    shutil.copytree(REPO / "specs" / "data" / "nat", root / "data" / "nat")
    text = (REPO / "specs" / "nat.yaml").read_text()
    text = text.replace("split: {validation: 0.1, by: group}", "split: {validation: 0.1, test: 0.4, by: group}")
    assert "test: 0.4" in text
    (root / "nat.yaml").write_text(text)
    build(root / "nat.yaml", root / "build" / "nat")
    return root / "build" / "nat"


def load_module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_split_export_prompts_with_the_inference_conditioning(nat_with_test, tmp_path):
    out = tmp_path / "task"
    r = runner.invoke(app, ["export", "lm-eval", str(nat_with_test), "--split", "test", "--out", str(out),
                            "--answer", "meta.extra.info.gt", "--scorers", "yesno,em", "--name", "nat_sqa"])
    assert r.exit_code == 0, r.output
    art = load_artifact(nat_with_test)
    test_rows = art.table("test").to_pylist()
    assert any(row["meta"]["label"] == "failure" for row in test_rows)  # trained with the other string
    items = [json.loads(x) for x in (out / "nat_sqa.jsonl").read_text().splitlines()]
    questions = {json.loads(row["meta"]["extra"])["id"] for row in test_rows}
    assert len(items) == len(questions)  # one item per question, not per trajectory
    builder = PromptBuilder.from_source(art.template_source, art.inference["messages"], ref=art.template_ref)
    for it in items:
        assert "**incorrectly**" not in it["prompt"]
        # Exactly the artifact's inference-time conversation for that question, through its template.
        question = re.fullmatch(r"Question: (.*)\. " + re.escape(CORRECT), it["question"], re.S)[1]
        assert it["prompt"] == builder.render(builder.conversation(question))
        assert json.loads(it["answer_json"]) in (True, False)
    task = yaml.safe_load(re.sub(r"!function (\S+)", r"'\1'", (out / "nat_sqa.yaml").read_text()))
    assert [m["metric"] for m in task["metric_list"]] == ["yesno", "exact_match"]
    assert task["generation_kwargs"]["until"] == art.end_of_turn
    # The scoring module scores with dsc's scorers (a ReAct finish[] answer is the prediction).
    mod = load_module(next(out.glob("*_dsc.py")))
    yes = next(it for it in items if json.loads(it["answer_json"]) is True)
    assert mod.process_results(yes, ["Thought: sure.\nAction: finish[Yes]"]) == {"yesno": 1.0, "exact_match": 1.0}
    assert mod.process_results(yes, ["Action: finish[No]"]) == {"yesno": 0.0, "exact_match": 0.0}


def test_lm_eval_loads_the_task_and_scores_a_tiny_model(nat_with_test, tmp_path, tiny_model_dir):
    lm_eval = pytest.importorskip("lm_eval", reason="lm_eval is the optional extra `lmeval`")
    from lm_eval.tasks import TaskManager

    out = tmp_path / "task"
    r = runner.invoke(app, ["export", "lm-eval", str(nat_with_test), "--split", "test", "--out", str(out),
                            "--answer", "meta.extra.info.gt", "--scorers", "yesno", "--max-new-tokens", "4"])
    assert r.exit_code == 0, r.output
    name = "nat_strategyqa_test"
    n_items = len((out / f"{name}.jsonl").read_text().splitlines())
    manager = TaskManager(include_path=str(out), include_defaults=False)
    task = (manager.load([name])["tasks"][name] if hasattr(manager, "load")  # lm_eval >= 0.4.10
            else manager.load_task_or_group([name])[name])
    docs = list(task.test_docs())
    assert len(docs) == n_items and task.doc_to_text(docs[0]) == docs[0]["prompt"]
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tiny_model_dir},device=cpu", tasks=[name],
                                  task_manager=manager, limit=2, batch_size=1)
    score = res["results"][name]["yesno,none"]
    assert isinstance(score, float) and 0.0 <= score <= 1.0


def test_eval_task_export_and_agent_tasks_refused(nat_with_test, tmp_path):
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "a", "question": "Is water wet?", "answer": True}) + "\n"
                                      + json.dumps({"id": "b", "question": "Is fire cold?", "answer": False}) + "\n")
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"title": "x", "text": "y"}) + "\n")
    (tmp_path / "eval.yaml").write_text("tasks:\n  sqa: {data: q.jsonl, id_field: id, scorers: [yesno], "
                                        "max_new_tokens: 32, extract: 'finish\\[(.*?)\\]'}\n"
                                        "  agent: {data: q.jsonl, mode: agent, tools: {search: {corpus: corpus.jsonl}}}\n")
    out = tmp_path / "sqa"
    r = runner.invoke(app, ["export", "lm-eval", str(nat_with_test), "--tasks", str(tmp_path / "eval.yaml"),
                            "--task", "sqa", "--out", str(out)])
    assert r.exit_code == 0, r.output
    items = [json.loads(x) for x in (out / "sqa.jsonl").read_text().splitlines()]
    art = load_artifact(nat_with_test)
    builder = PromptBuilder.from_source(art.template_source, art.inference["messages"], ref=art.template_ref)
    assert [it["prompt"] for it in items] == [builder.render(builder.conversation(q))
                                              for q in ("Is water wet?", "Is fire cold?")]
    assert all(CORRECT in it["prompt"] for it in items)
    text = (out / "sqa.yaml").read_text()
    assert "metric: yesno" in text and "max_gen_toks: 32" in text
    assert load_module(out / "sqa_dsc.py").EXTRACT == "finish\\[(.*?)\\]"
    r = runner.invoke(app, ["export", "lm-eval", str(nat_with_test), "--tasks", str(tmp_path / "eval.yaml"),
                            "--task", "agent", "--out", str(tmp_path / "ag")])
    assert r.exit_code == 2 and "agent task" in r.output
    r = runner.invoke(app, ["export", "lm-eval", str(nat_with_test), "--tasks", str(tmp_path / "eval.yaml"),
                            "--out", str(tmp_path / "ag")])
    assert r.exit_code == 2 and "--task" in r.output
    r = runner.invoke(app, ["export", "lm-eval", str(nat_with_test), "--split", "tset", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "did you mean 'test'" in r.output


def test_eval_results_use_the_harness_shape(tmp_path):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "1", "prediction": "Paris", "answer": "paris"}, {"id": "2", "prediction": "Rome", "answer": "Oslo"},
        {"id": "3", "prediction": "Oslo", "answer": "Oslo"}]))
    record = score_predictions(preds, ["em", "f1"], out=tmp_path / "out")
    res = record["results"]["preds"]
    assert res["exact_match,none"] == pytest.approx(2 / 3, abs=1e-6)
    # The harness's mean_stderr: sample standard deviation / sqrt(n).
    assert res["exact_match_stderr,none"] == pytest.approx((1 / 3) ** 0.5 / 3 ** 0.5, abs=1e-6)
    assert record["versions"] == {"preds": 1.0} and record["n-samples"]["preds"]["effective"] == 3
    assert record["models"][0]["tasks"]["preds"]["metrics"]["em"]["mean"] == pytest.approx(2 / 3, abs=1e-6)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["results"] == record["results"]
