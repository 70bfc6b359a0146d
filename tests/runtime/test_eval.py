"""`dsc eval`: trained tiny models on direct and agent tasks, predictions scoring, config errors."""
from __future__ import annotations

import json
import random
import shutil

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.spec.runtime import EvalTask
from dsc.runtime.evaluation import evaluate, load_items, results_table, subset_indices
from dsc.runtime.generation import load_for_eval
from dsc.runtime.train import train

from test_runtime_support import make_artifact, write_jsonl

NAT_PROMPT = ("Question: {{ question }}. Generate a sequence of Thought and Action steps to solve the question "
              "**correctly**.")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    """An artifact with NAT-style inference conditioning and a spec eval: block, a LoRA run and a
    full fine-tuning run on it, a question file and a search corpus."""
    root = tmp_path_factory.mktemp("eval")
    questions = write_jsonl(root / "questions.jsonl", [
        {"id": "q1", "question": "What is 3 plus 4?", "answer": "7"},
        {"id": "q2", "question": "Who wrote Hamlet?", "answer": "William Shakespeare"},
        {"id": "q3", "question": "Is Paris in France?", "answer": True},
    ])
    corpus = write_jsonl(root / "corpus.jsonl", [
        {"title": "Hamlet", "text": "Hamlet is a tragedy written by William Shakespeare."},
        {"title": "Paris", "text": "Paris is the capital of France."},
    ])
    spec_eval = {"tasks": {"spec_task": {"data": str(questions), "id_field": "id", "max_new_tokens": 4}},
                 "bootstrap": 50}
    artifact = make_artifact(root / "arith", n_train=24, n_validation=4, spec={"dsc": 1, "eval": spec_eval},
                             inference={"messages": [{"role": "user", "content": NAT_PROMPT}], "label": "success"})
    lora = train(artifact, model=str(tiny_model_dir), out=root / "lora", overrides=["max_steps=2"]).out_dir
    full = train(artifact, model=str(tiny_model_dir), out=root / "full", overrides=["max_steps=2", "full=true"]).out_dir
    tasks = root / "eval.yaml"
    tasks.write_text(f"""\
tasks:
  direct:
    data: questions.jsonl
    id_field: id
    max_new_tokens: 6
    batch_size: 2
  agent:
    data: questions.jsonl
    mode: agent
    max_steps: 2
    max_new_tokens: 6
    scorers: [em, f1, yesno]
    tools:
      search: {{corpus: {corpus.name}}}
      calculate: {{}}
bootstrap: 100
seed: 1
""")
    return {"root": root, "artifact": artifact, "lora": lora, "full": full, "tasks": tasks, "questions": questions}


def test_eval_a_lora_run_end_to_end(workspace, tmp_path):
    out = tmp_path / "ev"
    record = evaluate([str(workspace["lora"])], tasks_file=workspace["tasks"], out=out)
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(record))
    (m,) = record["models"]
    manifest = json.loads((workspace["artifact"] / "manifest.json").read_text())
    assert m["artifact_version"] == manifest["version"]
    assert m["template_sha256"] == manifest["template"]["sha256"]
    assert m["inference_label"] == "success"
    assert m["base_model"] is not None  # an adapter: loaded on its base model
    assert set(m["tasks"]) == {"direct", "agent"}
    agent = m["tasks"]["agent"]
    assert agent["n"] == 3 and set(agent["metrics"]) == {"em", "f1", "yesno"}
    for metric in agent["metrics"].values():
        assert 0.0 <= metric["mean"] <= 1.0 and len(metric["ci95"]) == 2
    items = [json.loads(x) for x in (out / "lora" / "agent.jsonl").read_text().splitlines()]
    assert len(items) == 3
    # the prompt is the artifact's template with the inference-time conditioning
    assert items[0]["prompt"] == ("<|im_start|>user\nQuestion: What is 3 plus 4?. Generate a sequence of Thought "
                                  "and Action steps to solve the question **correctly**.<|im_end|>\n"
                                  "<|im_start|>assistant\n")
    assert 1 <= len(items[0]["trajectory"]) <= 2 and set(items[0]["scores"]) == {"em", "f1", "yesno"}
    direct = [json.loads(x) for x in (out / "lora" / "direct.jsonl").read_text().splitlines()]
    assert [d["id"] for d in direct] == ["q1", "q2", "q3"] and all(len(d["trajectory"]) == 1 for d in direct)


def test_generation_is_batched_and_greedy(workspace):
    model = load_for_eval(str(workspace["lora"]), batch_size=2)
    prompts = ["<|im_start|>user\nWhat is 1 plus 1?<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nWho?<|im_end|>\n<|im_start|>assistant\n",
               "<|im_start|>user\nA much longer question about the capital city of a country?<|im_end|>\n"
               "<|im_start|>assistant\n"]
    batched = model.generator.generate(prompts, max_new_tokens=5)
    one_by_one = [model.generator.generate([p], max_new_tokens=5)[0] for p in prompts]
    assert batched == one_by_one  # left padding does not change greedy outputs
    assert model.generator.eos_ids[0] == model.generator.tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_several_models_one_table(workspace, tmp_path):
    from rich.console import Console

    record = evaluate([str(workspace["lora"]), str(workspace["full"])], tasks_file=workspace["tasks"],
                      out=tmp_path / "ev", overrides=["subset.n=2", "subset.seed=null"])
    assert [m["label"] for m in record["models"]] == ["lora", "full"]
    assert record["models"][1]["base_model"] is None  # a full model loads on its own
    assert all(t["n"] == 2 for m in record["models"] for t in m["tasks"].values())
    assert (tmp_path / "ev" / "full" / "agent.jsonl").is_file()
    console = Console(record=True, width=200)
    console.print(results_table(record))
    text = console.export_text()
    assert "lora" in text and "full" in text and "agent" in text and "yesno" in text


def test_tasks_from_the_specs_eval_block(workspace, tmp_path):
    record = evaluate([str(workspace["lora"])], out=tmp_path / "ev", overrides=["subset.n=1", "bootstrap=0"])
    task = record["models"][0]["tasks"]["spec_task"]
    assert task["n"] == 1 and task["metrics"]["em"]["ci95"] is None


def test_cli_eval_and_predictions(workspace, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", str(workspace["lora"]), "--tasks", str(workspace["tasks"]), "--out",
                            str(tmp_path / "ev"), "max_new_tokens=2"])
    assert r.exit_code == 0, r.output
    assert "dsc eval" in r.output and (tmp_path / "ev" / "results.json").is_file()

    preds = write_jsonl(tmp_path / "preds.jsonl", [
        {"id": "1", "prediction": "The Eiffel Tower", "answer": "eiffel tower"},
        {"id": "2", "prediction": "Shakespeare", "answer": "William Shakespeare"},
        {"id": "3", "prediction": None, "answer": "x"},
    ])
    r = runner.invoke(app, ["eval", "--predictions", str(preds), "--scorers", "em,f1", "--out", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "p" / "results.json").read_text())
    metrics = res["models"][0]["tasks"]["preds"]["metrics"]
    assert metrics["em"]["mean"] == pytest.approx(1 / 3, abs=1e-6)
    assert metrics["f1"]["mean"] == pytest.approx((1 + 2 / 3 + 0) / 3, abs=1e-6)
    scored = [json.loads(x) for x in (tmp_path / "p" / "preds.scored.jsonl").read_text().splitlines()]
    assert [s["scores"]["em"] for s in scored] == [1.0, 0.0, 0.0]

    r = runner.invoke(app, ["eval", "--predictions", str(preds), "--scorers", "exact"])
    assert r.exit_code == 2 and "unknown scorer 'exact'" in r.output
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "1", "prediction": "x"}])
    r = runner.invoke(app, ["eval", "--predictions", str(bad)])
    assert r.exit_code == 2 and "bad.jsonl:1" in r.output


def test_cli_eval_progress_over_items(workspace, tmp_path, monkeypatch):
    """On a terminal, `dsc eval` draws a bar per model and task over its items (stderr); results
    and item files are the same as with the bar off (DSC_NO_PROGRESS, or not a terminal)."""
    import io

    from rich.console import Console

    import dsc.cli.root

    runner = CliRunner()
    args = ["eval", str(workspace["lora"]), "--tasks", str(workspace["tasks"]), "max_new_tokens=3", "--out"]
    r = runner.invoke(app, [*args, str(tmp_path / "quiet")])
    assert r.exit_code == 0, r.output
    drawn = io.StringIO()
    monkeypatch.setattr(dsc.cli.root, "err_console", Console(file=drawn, force_terminal=True, width=120))
    monkeypatch.delenv("DSC_NO_PROGRESS", raising=False)
    r = runner.invoke(app, [*args, str(tmp_path / "shown")])
    assert r.exit_code == 0, r.output
    bars = drawn.getvalue()
    assert "lora: direct" in bars and "lora: agent" in bars and "3/3" in bars
    for f in ("results.json", "lora/direct.jsonl", "lora/agent.jsonl"):
        quiet, shown = (tmp_path / "quiet" / f).read_text(), (tmp_path / "shown" / f).read_text()
        assert shown == quiet.replace(str(tmp_path / "quiet"), str(tmp_path / "shown")), f


def test_eval_config_errors(workspace, tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  t:\n    data: q.jsonl\n    max_new_token: 3\n")
    r = runner.invoke(app, ["eval", str(workspace["lora"]), "--tasks", str(bad)])
    assert r.exit_code == 2 and f"{bad}:4:5" in r.output and "did you mean 'max_new_tokens'" in r.output
    with pytest.raises(ValueError, match="needs at least one tool"):
        EvalTask(data="x.jsonl", mode="agent")
    missing = tmp_path / "missing.yaml"
    missing.write_text("tasks:\n  t: {data: nowhere.jsonl}\n")
    r = runner.invoke(app, ["eval", str(workspace["lora"]), "--tasks", str(missing)])
    assert r.exit_code == 2 and "eval data file not found" in r.output
    wrong_field = tmp_path / "wrong.yaml"
    wrong_field.write_text(f"tasks:\n  t: {{data: {workspace['questions']}, question_field: Question}}\n")
    r = runner.invoke(app, ["eval", str(workspace["lora"]), "--tasks", str(wrong_field)])
    assert r.exit_code == 2 and "has no field 'Question'" in r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "no-model"), "--tasks", str(workspace["tasks"])])
    assert r.exit_code == 2 and "model directory not found" in r.output


def test_subset_is_fireacts_selection():
    idx = list(range(50))
    random.Random(233).shuffle(idx)
    assert subset_indices(50, 233, 10) == idx[:10]
    assert subset_indices(50, 233, 5, start=10) == idx[10:15]
    assert subset_indices(5, None, None) == [0, 1, 2, 3, 4]


def test_fireact_eval_files(fireact_dir):
    hotpot = EvalTask(data="hotpotqa__dev.json", subset={"seed": 233, "n": 5})
    items = load_items(hotpot, fireact_dir, "hotpotqa")
    data = json.loads((fireact_dir / "hotpotqa__dev.json").read_text())
    order = list(range(len(data)))
    random.Random(233).shuffle(order)
    assert [it["id"] for it in items] == [str(i) for i in order[:5]]
    assert items[0]["question"] == data[order[0]]["question"] and items[0]["answer"] == data[order[0]]["answer"]

    strategy = EvalTask(data="strategyqa__strategyqa_dev.json", id_field="qid", scorers=["yesno"])
    items = load_items(strategy, fireact_dir, "strategyqa")
    assert len(items) == 229 and isinstance(items[0]["answer"], bool) and items[0]["id"] == "e0044a7b4d146d611e73"

    bamboogle = EvalTask(data="bamboogle__test.csv", question_field="Question", answer_field="Answer")
    items = load_items(bamboogle, fireact_dir, "bamboogle")
    assert len(items) == 125 and items[0]["answer"] == "james madison"
    assert items[0]["question"].startswith("Who was president of the United States")


def test_question_template_and_prompt_override(workspace, tmp_path):
    data = write_jsonl(tmp_path / "mmlu.jsonl", [{"q": "2+2?", "A": "3", "B": "4", "answer": "B"}])
    task = EvalTask(data=str(data), question_template="Question: {{ q }}\nA. {{ A }}\nB. {{ B }}", scorers=["choice"])
    (item,) = load_items(task, tmp_path, "mmlu")
    assert item["question"] == "Question: 2+2?\nA. 3\nB. 4"
    copy = tmp_path / "art"
    shutil.copytree(workspace["artifact"], copy)
    record = evaluate([str(workspace["lora"])], artifact_dir=copy, out=tmp_path / "ev",
                      tasks_file=_write(tmp_path / "t.yaml", f"""\
tasks:
  mmlu:
    data: {data}
    question_template: "Question: {{{{ q }}}}"
    prompt: [{{role: system, content: "Answer with a letter."}}, {{role: user, content: "{{{{ question }}}}"}}]
    scorers: [choice]
    max_new_tokens: 2
"""))
    line = json.loads((tmp_path / "ev" / "lora" / "mmlu.jsonl").read_text().splitlines()[0])
    assert line["prompt"].startswith("<|im_start|>system\nAnswer with a letter.<|im_end|>\n<|im_start|>user\n"
                                     "Question: 2+2?<|im_end|>")
    assert record["models"][0]["tasks"]["mmlu"]["n"] == 1


def _write(path, text):
    path.write_text(text)
    return path


def test_spec_blocks_are_validated_with_positions(tmp_path):
    from ruamel.yaml import YAML

    from dsc.core.errors import SpecError
    from dsc.spec.runtime import EvalConfig, TrainConfig, validate_spec_block

    spec = tmp_path / "spec.yaml"
    spec.write_text("dsc: 1\ntrain:\n  epochs: 2\n  lora: {r: 4, alpah: 3}\neval:\n  tasks:\n"
                    "    t: {data: x.jsonl, scorer: em}\n")
    tree = YAML().load(spec.read_text())
    with pytest.raises(SpecError) as e:
        validate_spec_block("train", tree["train"], str(spec))
    assert (e.value.line, e.value.col) == (4, 16) and "did you mean 'alpha'" in e.value.message
    with pytest.raises(SpecError) as e:
        validate_spec_block("eval", tree["eval"], str(spec))
    assert e.value.line == 7 and "did you mean 'scorers'" in e.value.message
    assert isinstance(validate_spec_block("train", {"epochs": 1}), TrainConfig)
    assert isinstance(validate_spec_block("eval", {"tasks": {"t": {"data": "x.jsonl"}}}), EvalConfig)
