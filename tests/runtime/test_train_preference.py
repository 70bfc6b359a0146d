"""Preference artifacts train under TRL: its own DPOTrainer / KTOTrainer take the artifact's
columns as they are (no glue) and run a step on a tiny offline model, and `dsc train --method
dpo | kto` does the same with the artifact's template pinned, writing run.json; a method that
does not fit the artifact is one clear error (exit 2)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.artifact.reader import open_artifact
from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.core.errors import SpecError
from dsc.runtime.train import train

pytest.importorskip("trl")

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
STEP = ["max_steps=1", "batch_size=2", "logging_steps=1", "max_length=512", "eval_split=null", "precision=fp32",
        "device=cpu"]


@pytest.fixture(scope="module")
def pref_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pref-train")
    shutil.copytree(REPO / "specs" / "data" / "nat", root / "data" / "nat")
    text = (REPO / "specs" / "nat-dpo.yaml").read_text()
    (root / "dpo.yaml").write_text(text)
    (root / "kto.yaml").write_text(text.replace("kind: dpo", "kind: kto"))
    for kind in ("dpo", "kto"):
        build(root / f"{kind}.yaml", root / "build" / kind, cache=False)
    return root


def trl_dataset(artifact_dir: Path, split: str = "train"):
    """What a TRL user does with a dsc artifact: load its parquet shards, nothing else."""
    from datasets import load_dataset

    art = open_artifact(artifact_dir)
    return load_dataset("parquet", data_files=[str(p) for p in art.shards(split)], split="train")


def tokenizer_with_artifact_template(model_dir: Path, artifact_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.chat_template = (artifact_dir / "chat_template.jinja").read_text()
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok


@pytest.mark.parametrize("kind", ["dpo", "kto"])
def test_trl_trainers_take_the_artifact_as_it_is(kind, pref_root, tiny_model_dir, tmp_path):
    import trl
    from transformers import AutoModelForCausalLM

    art = pref_root / "build" / kind
    ds = trl_dataset(art)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config_cls, trainer_cls = (trl.DPOConfig, trl.DPOTrainer) if kind == "dpo" else (trl.KTOConfig, trl.KTOTrainer)
    args = config_cls(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to="none",
                      use_cpu=True, logging_steps=1, max_length=512, save_strategy="no")
    trainer = trainer_cls(model=model, args=args, train_dataset=ds,
                          processing_class=tokenizer_with_artifact_template(tiny_model_dir, art))
    result = trainer.train()
    assert trainer.state.global_step == 1 and math.isfinite(result.training_loss)
    # TRL's prompt is the artifact's prompt text, as its template renders it (transformers'
    # renderer and dsc's agree), and its completion the artifact's completion text.
    first = trainer.train_dataset[0]
    tok = trainer.processing_class
    completion = "chosen" if kind == "dpo" else "completion"
    assert tok.decode(first["prompt_ids"]) == ds[0]["prompt_text"]
    assert tok.decode(first[f"{completion}_ids"]) == ds[0][f"{completion}_text"]


@pytest.mark.parametrize("kind", ["dpo", "kto"])
def test_dsc_train_method_runs_trl_and_writes_run_json(kind, pref_root, tiny_model_dir, tmp_path):
    result = train(pref_root / "build" / kind, model=str(tiny_model_dir), out=tmp_path / "run", method=kind,
                   overrides=STEP)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["objective"] == kind and run["method"] == "lora"
    assert run["metrics"]["global_step"] == 1 and math.isfinite(run["metrics"]["train_loss"])
    assert run["template"]["sha256"] == open_artifact(pref_root / "build" / kind).template_sha256
    assert (tmp_path / "run" / "chat_template.jinja").read_text() == \
        (pref_root / "build" / kind / "chat_template.jinja").read_text()
    assert result.out_dir == tmp_path / "run"


def test_full_finetuning_dpo(pref_root, tiny_model_dir, tmp_path):
    result = train(pref_root / "build" / "dpo", model=str(tiny_model_dir), out=tmp_path / "full", method="dpo",
                   overrides=[*STEP, "full=true"])
    assert result.run["method"] == "full" and result.metrics["global_step"] == 1


def test_a_method_that_does_not_fit_the_artifact_is_one_error(pref_root, tiny_model_dir, tmp_path):
    with pytest.raises(SpecError, match="holds DPO rows"):
        train(pref_root / "build" / "dpo", model=str(tiny_model_dir), out=tmp_path / "a", method="kto")
    with pytest.raises(SpecError, match="holds DPO rows"):  # sft is the default
        train(pref_root / "build" / "dpo", model=str(tiny_model_dir), out=tmp_path / "b")
    r = runner.invoke(app, ["train", str(pref_root / "build" / "kto"), "--model", str(tiny_model_dir),
                            "--method", "dpo", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "train it with --method kto" in r.output
    assert not (tmp_path / "c").exists()
