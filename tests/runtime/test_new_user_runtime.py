"""What a new user met, on the runtime side (issue 24): a model id the machine cannot reach fails
at once with the offline ways on; a directory with only a config trains from scratch; a run off
a terminal logs lines (no bars, no raw dicts), validates once at the end and reports the last
step's loss as the final one; `dsc eval` finds the spec's eval paths from any directory."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsc.runtime.modeling import ModelError, resolve_model_ref
from dsc.runtime.train import train

from test_runtime_support import make_artifact


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return make_artifact(tmp_path_factory.mktemp("art") / "arith", n_train=48, n_validation=8)


def test_an_unreachable_model_id_fails_at_once_naming_the_offline_ways(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelError) as e:
        resolve_model_ref("some-org/no-such-model-xyz")
    assert time.monotonic() - started < 5
    assert "HF_HUB_OFFLINE" in str(e.value) and "local directory" in str(e.value)
    assert "config.json" in str(e.value)  # how to train from scratch without the hub


@pytest.fixture(scope="module")
def config_only(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("cfg") / "tiny-config"
    d.mkdir()
    for p in Path(tiny_model_dir).iterdir():
        if p.suffix not in (".safetensors", ".bin"):
            shutil.copy(p, d / p.name)
    return d


def test_a_model_directory_with_only_a_config_trains_from_scratch(artifact, config_only, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    result = train(artifact, model=str(config_only), out=out,
                   overrides=["full=true", "max_steps=12", "batch_size=8", "logging_steps=4", "learning_rate=3e-3"])
    assert result.metrics["final_loss"] < result.metrics["first_loss"]
    assert AutoModelForCausalLM.from_pretrained(out).config.hidden_size > 0  # saved weights now exist
    again = train(artifact, model=str(config_only), out=tmp_path / "again",
                  overrides=["full=true", "max_steps=12", "batch_size=8", "logging_steps=4", "learning_rate=3e-3"])
    assert again.metrics["final_loss"] == result.metrics["final_loss"]  # the weights come from the seed


def test_lora_on_a_weightless_model_is_refused(artifact, config_only, tmp_path):
    from dsc.core.errors import SpecError

    with pytest.raises(SpecError, match="no weights.*full=true"):
        train(artifact, model=str(config_only), out=tmp_path / "run", overrides=["max_steps=2"])


def test_a_run_off_a_terminal_logs_lines_and_reports_the_last_steps_loss(artifact, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    code = (f"from dsc.cli.root import main; import sys; sys.argv = ['dsc', 'train', {str(artifact)!r}, '--model', "
            f"{str(tiny_model_dir)!r}, '--out', {str(out)!r}, 'max_steps=3', 'logging_steps=100', 'batch_size=8']; "
            "main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "DSC_NO_PROGRESS": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    both = r.stdout + r.stderr
    assert "it/s]" not in both and "{'loss'" not in both and "'eval_loss'" not in both  # no bars, no raw dicts
    assert "train step 3/3" in r.stderr
    run = json.loads((out / "run.json").read_text())
    history = [e for e in run.get("log_history", []) if "loss" in e] if "log_history" in run else None
    metrics = run["metrics"]
    assert metrics["global_step"] == 3
    assert metrics["final_loss"] != metrics["first_loss"]  # step 3's loss, not step 1's again
    if history is not None:
        assert history[-1]["step"] == 3
    assert r.stderr.count("eval loss") <= 1


def test_eval_finds_the_spec_eval_paths_from_anywhere(tmp_path, monkeypatch):
    from dsc.compiler.engine.driver import build
    from dsc.runtime.evaluation import resolve_eval_config
    from dsc.artifact.reader import open_artifact

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "rows.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}) + "\n")
    (project / "data" / "test.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    (project / "spec.yaml").write_text("""dsc: 1
name: evalpaths
sources:
  rows: {path: data/rows.jsonl, format: openai}
template: chatml
eval:
  tasks:
    qa: {data: data/test.jsonl, scorers: [em]}
""")
    out = tmp_path / "elsewhere" / "artifact"
    build(project / "spec.yaml", out, cache=False)
    monkeypatch.chdir(tmp_path)  # neither the spec's directory nor above the artifact
    plan = resolve_eval_config(None, open_artifact(out))
    assert plan.base_dir == project
