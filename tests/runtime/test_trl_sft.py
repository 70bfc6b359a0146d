"""A tokenised SFT artifact trains under TRL's SFTTrainer as it is: its stored `input_ids` and
`labels` (-100 outside the supervised spans) are what SFTTrainer uses, and the first step's loss
on a tiny model equals `dsc train`'s on the same rows (one batch holds the whole split, so the
sampler's order cannot make them differ)."""
from __future__ import annotations

import pytest

from dsc.runtime.train import train
from test_runtime_support import make_artifact

pytest.importorskip("trl")

N_TRAIN = 16


def test_sft_trainer_first_step_loss_equals_dsc_train(tmp_path, tiny_model_dir):
    import trl
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    art = make_artifact(tmp_path / "art", n_train=N_TRAIN, n_validation=0, tokenizer_dir=tiny_model_dir)
    files = sorted(str(p) for p in (art / "data").glob("train-*.parquet"))
    ds = load_dataset("parquet", data_files=files, split="train").select_columns(["input_ids", "labels"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = trl.SFTConfig(output_dir=str(tmp_path / "trl"), max_steps=1, per_device_train_batch_size=N_TRAIN,
                         logging_steps=1, report_to="none", use_cpu=True, bf16=False, save_strategy="no",
                         max_length=None, learning_rate=1e-4)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    trl_loss = trainer.state.log_history[0]["loss"]

    result = train(art, model=str(tiny_model_dir), out=tmp_path / "dsc", overrides=[
        "max_steps=1", f"batch_size={N_TRAIN}", "logging_steps=1", "full=true", "eval_split=null",
        "precision=fp32", "device=cpu", "learning_rate=1e-4"])
    assert result.run["tokenization"]["source"] == "artifact"  # its stored ids and labels, as TRL used them
    assert trl_loss == pytest.approx(result.metrics["first_loss"], rel=1e-4)
