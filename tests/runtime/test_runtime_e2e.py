"""Spec → `dsc build` → `dsc train` → `dsc eval`, through the CLI, on the bundled FireAct excerpts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.runtime.artifact import load_artifact
from dsc.spec.runtime import EvalTask
from dsc.runtime.evaluation import observation_style

from test_runtime_support import write_jsonl

FIREACT = Path(__file__).resolve().parents[2] / "specs" / "data" / "fireact"

CHAT_SPEC = """\
dsc: 1
name: fireact-chat-tiny
seed: 42
sources:
  fireact:
    path: {data}/gpt_format__multitask.excerpt.jsonl
    format: openai
    tags: {{method: react}}
template: chatml
loss: assistant
tokenize: {{tokenizer: {tokenizer}}}
split: {{validation: 0.1, by: group}}
train:
  max_steps: 3
  batch_size: 2
  max_length: 384
  logging_steps: 1
eval:
  bootstrap: 50
  tasks:
    hotpotqa:
      data: {data}/hotpotqa__dev.excerpt.json
      subset: {{seed: 233, n: 2}}
      mode: agent
      max_steps: 2
      max_new_tokens: 8
      tools:
        search: {{corpus: {corpus}}}
"""

ALPACA_SPEC = """\
dsc: 1
name: fireact-alpaca-tiny
seed: 42
sources:
  fireact:
    path: {data}/alpaca_format__multitask.excerpt.json
    format: alpaca
    tags: {{method: react}}
template: alpaca
loss: all
split: {{validation: 0.1}}
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "wiki.jsonl", [
        {"title": "Scott Derrickson", "text": "Scott Derrickson is an American director."},
        {"title": "Ed Wood", "text": "Ed Wood was an American filmmaker."},
    ])


def test_chat_spec_build_train_eval(tmp_path, tiny_model_dir, corpus):
    runner = CliRunner()
    spec = tmp_path / "spec.yaml"
    spec.write_text(CHAT_SPEC.format(data=FIREACT, tokenizer=tiny_model_dir, corpus=corpus))
    r = runner.invoke(app, ["build", str(spec), "--out", str(tmp_path / "art")])
    assert r.exit_code == 0, r.output
    artifact = load_artifact(tmp_path / "art")
    assert artifact.has_column("train", "input_ids")

    r = runner.invoke(app, ["train", str(tmp_path / "art"), "--model", str(tiny_model_dir), "--out",
                            str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["artifact"]["version"] == artifact.version
    assert run["hyperparameters"]["max_steps"] == 3  # from the spec's train: block
    # the build tokenised with this very tokenizer: its ids and labels were used as they are
    assert run["tokenization"]["source"] == "artifact", run["tokenization"]["reason"]
    assert run["template"]["sha256"] == artifact.template_sha256

    # no --tasks: the spec's eval: block of the artifact the run was trained on
    r = runner.invoke(app, ["eval", str(tmp_path / "run"), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    task = results["models"][0]["tasks"]["hotpotqa"]
    assert task["n"] == 2 and results["models"][0]["artifact_version"] == artifact.version
    items = [json.loads(x) for x in (tmp_path / "ev" / "run" / "hotpotqa.jsonl").read_text().splitlines()]
    assert items[0]["prompt"].startswith("<|im_start|>user\n") and items[0]["prompt"].endswith("assistant\n")
    assert observation_style(EvalTask(data="x", mode="agent", tools={"calculate": {}}), artifact) == "turn"


def test_alpaca_artifact_trains_and_continues_inline(tmp_path, tiny_model_dir):
    from dsc.compiler.engine.driver import build
    from dsc.runtime.train import train

    spec = tmp_path / "spec.yaml"
    spec.write_text(ALPACA_SPEC.format(data=FIREACT))
    build(spec, tmp_path / "art")
    artifact = load_artifact(tmp_path / "art")
    # FireAct's alpaca rows carry their observations inside one assistant turn
    assert observation_style(EvalTask(data="x", mode="agent", tools={"calculate": {}}), artifact) == "inline"
    result = train(tmp_path / "art", model=str(tiny_model_dir), out=tmp_path / "run",
                   overrides=["max_steps=2", "batch_size=2", "max_length=256"])
    assert result.run["tokenization"]["source"] == "retokenized"  # the build did not tokenise
    assert result.run["template"]["ref"] == "alpaca"
    assert result.metrics["global_step"] == 2
