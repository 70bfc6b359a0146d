"""A `web.search` ReAct trajectory trains and evaluates: the converter, the `react` format and the
agent loop read tool names with a dot by the same grammar (`dsc.dialects.react`)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.runtime import tools as tool_registry
from dsc.runtime.tools import Tool
from dsc.spec.registries import register_tool

from test_runtime_support import write_jsonl

QUESTION = "What is the capital of France?"
TRAJECTORY = ("Thought: I should search the web.\nAction: web.search[capital of France]\n"
              "Observation: Paris is the capital of France.\nThought: It is Paris.\nAction: finish[Paris]")

SPEC = """\
dsc: 1
name: web-search-tiny
seed: 1
sources:
  web: {{path: {data}, format: react}}
template: chatml
loss: assistant
split: {{validation: 0.0}}
train:
  full: true
  max_steps: 200
  batch_size: 1
  learning_rate: 0.003
  warmup_ratio: 0.0
  max_length: 128
  logging_steps: 100
  save_steps: 1000
eval:
  bootstrap: 0
  tasks:
    web:
      data: {questions}
      mode: agent
      max_steps: 2
      max_new_tokens: 40
      scorers: [em]
      tools:
        web.search: {{}}
"""


@pytest.fixture
def web_search():
    """A registered `web.search` tool that records what it was asked."""
    asked: list[str] = []

    @register_tool("web.search")
    def make(settings, base_dir):
        def run(query: str) -> str:
            asked.append(query)
            return "Paris is the capital of France."
        return Tool("web.search", "Search the web.", "query", run)

    yield asked
    tool_registry.TOOLS.defs.pop("web.search", None)


def test_web_search_trajectory_trains_and_evaluates(tmp_path: Path, tiny_model_dir, web_search):
    data = write_jsonl(tmp_path / "web.jsonl", [{"instruction": QUESTION, "output": TRAJECTORY}])
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": QUESTION, "answer": "Paris"}])
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(data=data, questions=questions))
    runner = CliRunner()
    r = runner.invoke(app, ["build", str(spec), "--out", str(tmp_path / "art")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(tmp_path / "art"), "--model", str(tiny_model_dir),
                            "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "run"), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    item = json.loads((tmp_path / "ev" / "run" / "web.jsonl").read_text().splitlines()[0])
    first = item["trajectory"][0]
    # the model wrote the trained action; the loop parsed the dotted name and called the tool
    assert "Action: web.search[" in first["output"], first
    assert first["action"] == "web.search" and web_search == ["capital of France"], item["trajectory"]
    assert first["observation"] == "Paris is the capital of France."
    assert item["trajectory"][-1]["action"] == "finish" and item["prediction"] == "Paris"
