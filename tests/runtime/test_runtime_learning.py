"""A real learning effect on CPU: `dsc train` teaches a tiny model the ReAct format, and `dsc eval`'s
agent loop then answers arithmetic questions through the real calculator."""
from __future__ import annotations

import json
import random

import pytest

from dsc.runtime.evaluation import evaluate
from dsc.runtime.train import train

from test_runtime_support import make_artifact, write_jsonl


@pytest.mark.slow
def test_trained_model_solves_arithmetic_with_the_calculator(tmp_path, tiny_tokenizer_dir):
    from tiny import make_model

    base = make_model(tmp_path / "base", tiny_tokenizer_dir, hidden_size=128, layers=2)
    artifact = make_artifact(tmp_path / "art", n_train=400, n_validation=8)
    rng = random.Random(99)
    questions = []
    for i in range(30):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        questions.append({"id": str(i), "question": f"What is {a} plus {b}?", "answer": str(a + b)})
    write_jsonl(tmp_path / "q.jsonl", questions)
    (tmp_path / "eval.yaml").write_text(
        "tasks:\n  arith:\n    data: q.jsonl\n    mode: agent\n    max_steps: 3\n    max_new_tokens: 40\n"
        "    batch_size: 16\n    scorers: [em]\n    tools: {calculate: {}}\n")

    untrained = evaluate([str(base)], tasks_file=tmp_path / "eval.yaml", artifact_dir=artifact, out=tmp_path / "e0")
    assert untrained["models"][0]["tasks"]["arith"]["metrics"]["em"]["mean"] == 0.0

    result = train(artifact, model=str(base), out=tmp_path / "run",
                   overrides=["full=true", "max_steps=250", "batch_size=16", "learning_rate=3e-3",
                              "warmup_ratio=0.05", "logging_steps=50", "save_steps=1000"])
    assert result.metrics["eval_loss"] < 0.1

    record = evaluate([str(tmp_path / "run")], tasks_file=tmp_path / "eval.yaml", out=tmp_path / "e1")
    assert record["models"][0]["tasks"]["arith"]["metrics"]["em"]["mean"] >= 0.9
    items = [json.loads(x) for x in (tmp_path / "e1" / "run" / "arith.jsonl").read_text().splitlines()]
    # the answers came through the tool: calculate, then finish with the calculator's result
    solved = [it for it in items if it["scores"]["em"] == 1.0]
    assert all([s["action"] for s in it["trajectory"]] == ["calculate", "finish"] for it in solved)
    assert all(it["trajectory"][0]["observation"] == it["answer"] for it in solved)
