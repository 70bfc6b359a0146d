"""`dsc train` on CPU with a tiny model built from config: loss, reload, resume, full FT, labels."""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch

from dsc.core.errors import SpecError
from dsc.runtime.artifact import load_artifact
from dsc.core.errors import ArtifactError
from dsc.runtime.features import IGNORE, PackingCollator, PadCollator, pack_bins
from dsc.runtime.modeling import ModelError
from dsc.runtime.train import prepare_training, train

from test_runtime_support import END_OF_TURN, make_artifact

FAST = ["max_steps=6", "batch_size=8", "logging_steps=1", "learning_rate=3e-3"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """Not tokenised: training re-tokenises from text + loss_spans."""
    return make_artifact(tmp_path_factory.mktemp("art") / "arith", n_train=48, n_validation=8)


@pytest.fixture(scope="module")
def tokenised_artifact(tmp_path_factory, tiny_model_dir):
    """Tokenised with the model's own tokenizer, stored labels on the last assistant turn only."""
    return make_artifact(tmp_path_factory.mktemp("art-tok") / "arith", tokenizer_dir=tiny_model_dir,
                         stored_labels="last_turn")


def supervised_texts_from_trainer(session) -> list[str]:
    """Decode what the Trainer's own dataloader supervises, row by row (one epoch)."""
    tok = session.tokenizer
    texts = []
    for batch in session.trainer.get_train_dataloader():
        for ids, labels in zip(batch["input_ids"], batch["labels"]):
            texts.append(tok.decode([int(t) for t, l in zip(ids, labels) if l != IGNORE]))
    return texts


def span_texts(artifact_dir, split="train", last_only=False) -> list[str]:
    table = load_artifact(artifact_dir).table(split)
    out = []
    for text, spans in zip(table.column("text").to_pylist(), table.column("loss_spans").to_pylist()):
        spans = spans[-1:] if last_only else spans
        out.append("".join(text[s:e] for s, e in spans))
    return out


def test_labels_the_trainer_sees_match_the_artifact_spans(artifact, tiny_model_dir, tmp_path):
    session = prepare_training(artifact, model=str(tiny_model_dir), out=tmp_path / "run", overrides=FAST)
    assert session.feature_stats["train"].source == "retokenized"
    seen = supervised_texts_from_trainer(session)
    assert sorted(seen) == sorted(span_texts(artifact))
    assert all(t.endswith(END_OF_TURN) for t in seen)  # the end of turn is trained


def test_stored_tokens_are_used_when_the_tokenizer_matches(tokenised_artifact, tiny_model_dir, tiny_tokenizer_dir,
                                                         tmp_path):
    session = prepare_training(tokenised_artifact, model=str(tiny_model_dir), out=tmp_path / "a", overrides=FAST)
    assert session.feature_stats["train"].source == "artifact"
    # the stored labels cover only the last assistant turn: that is what the trainer sees
    assert sorted(supervised_texts_from_trainer(session)) == sorted(span_texts(tokenised_artifact, last_only=True))

    # the same artifact claimed by another tokenizer: re-tokenised from text + spans (all turns)
    other = tmp_path / "other"
    shutil.copytree(tokenised_artifact, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["tokenizer"]["sha256"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(manifest))
    session = prepare_training(other, model=str(tiny_model_dir), out=tmp_path / "b", overrides=FAST)
    assert session.feature_stats["train"].source == "retokenized"
    assert "different sha256" in session.tokenization_note
    assert sorted(supervised_texts_from_trainer(session)) == sorted(span_texts(other))


def test_lora_lowers_loss_reloads_and_generates(artifact, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = tmp_path / "run"
    session = prepare_training(artifact, model=str(tiny_model_dir), out=out,
                               overrides=["max_steps=30", "batch_size=8", "logging_steps=5", "learning_rate=5e-3",
                                          "lora.r=8", "lora.target_modules=all-linear", "warmup_ratio=0"])
    before = session.trainer.evaluate()["eval_loss"]
    result = session.run()
    m = result.metrics
    assert m["global_step"] == 30
    assert m["final_loss"] < m["first_loss"] - 0.1
    assert m["eval_loss"] < before - 0.1
    assert m["tokens_seen"] > 0 and m["tokens_per_second"] > 0

    run = json.loads((out / "run.json").read_text())
    a = load_artifact(artifact)
    assert run["artifact"]["version"] == a.version and run["template"]["sha256"] == a.template_sha256
    assert run["spec_hash"] == a.spec_hash and run["method"] == "lora"
    assert run["hyperparameters"]["lora"]["target_modules"] == "all-linear"
    assert run["inference"]["messages"] == [{"role": "user", "content": "{{ question }}"}]
    assert {"torch", "transformers", "peft"} <= set(run["versions"])
    card = (out / "README.md").read_text()
    assert a.version in card and "library_name: peft" in card

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == a.template_source
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    assert eot in GenerationConfig.from_pretrained(out).eos_token_id

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, out)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}], tokenize=False,
                                     add_generation_prompt=True)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    gen = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > enc["input_ids"].shape[1]
    # the adapter changed the model: its loss on the validation rows is the trained one
    trained = dict(model.named_parameters())
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in trained.items())


class _Kill(Exception):
    pass


class KillAfter:
    """Simulates a killed run: raises right after the checkpoint of step `n` is written."""

    def __init__(self, n: int):
        self.n = n

    def __getattr__(self, name):  # every other TrainerCallback hook is a no-op
        if name.startswith("on_"):
            return lambda *a, **k: None
        raise AttributeError(name)

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.n:
            raise _Kill()


class CountSteps(KillAfter):
    def __init__(self):
        super().__init__(-1)
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def _adapter_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter_model.safetensors"))


def assert_resumed_like_full(full, full_dir: Path, resumed, resumed_dir: Path, steps: list[int]) -> None:
    """A 12-step run resumed from checkpoint-8 trained only steps 9-12 and ended where the
    uninterrupted run did: the same final and eval loss and the same adapter weights."""
    assert steps == [9, 10, 11, 12]  # continued from checkpoint-8, not from scratch
    assert resumed.metrics["global_step"] == 12
    assert resumed.metrics["final_loss"] == pytest.approx(full.metrics["final_loss"], abs=1e-5)
    assert resumed.metrics["eval_loss"] == pytest.approx(full.metrics["eval_loss"], abs=1e-5)
    a, b = _adapter_weights(full_dir), _adapter_weights(resumed_dir)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_killed_run_resumes_to_the_same_final_loss(artifact, tiny_model_dir, tmp_path):
    settings = ["max_steps=12", "save_steps=4", "batch_size=8", "logging_steps=1", "learning_rate=3e-3",
                "lora.dropout=0.1"]  # dropout: the resumed run must also restore the RNG state
    full = train(artifact, model=str(tiny_model_dir), out=tmp_path / "full", overrides=settings)

    out = tmp_path / "killed"
    with pytest.raises(_Kill):
        train(artifact, model=str(tiny_model_dir), out=out, overrides=settings, callbacks=[KillAfter(8)])
    assert not (out / "run.json").exists()
    with pytest.raises(SpecError, match="pass --resume"):
        train(artifact, model=str(tiny_model_dir), out=out, overrides=settings)
    with pytest.raises(SpecError, match="different settings .*learning_rate"):
        train(artifact, model=str(tiny_model_dir), out=out, overrides=[*settings, "learning_rate=1e-3"], resume=True)
    counter = CountSteps()
    resumed = train(artifact, model=str(tiny_model_dir), out=out, overrides=settings, resume=True,
                    callbacks=[counter])

    assert_resumed_like_full(full, tmp_path / "full", resumed, out, counter.steps)


def test_full_finetuning(artifact, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    result = train(artifact, model=str(tiny_model_dir), out=out,
                   overrides=["full=true", "max_steps=15", "batch_size=8", "logging_steps=5", "learning_rate=3e-3"])
    assert result.run["method"] == "full"
    assert result.metrics["final_loss"] < result.metrics["first_loss"] - 0.3
    assert not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(model.lm_head.weight, base.lm_head.weight)
    assert "library_name: peft" not in (out / "README.md").read_text()


def test_packing_has_no_cross_row_leakage(artifact, tiny_model_dir, tmp_path):
    """The same rows give the same loss padded one per row or packed into one sequence (bins:
    tests/runtime/test_train_packing.py)."""
    session = prepare_training(artifact, model=str(tiny_model_dir), out=tmp_path / "p", overrides=FAST)
    rows = [session.trainer.train_dataset[i] for i in range(6)]
    model = session.model.eval()
    padded = PadCollator(session.tokenizer.pad_token_id)(rows)
    packed = PackingCollator(session.tokenizer.pad_token_id, pack_length=100_000)(rows)  # one bin
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    lengths = [len(r["input_ids"]) for r in rows]
    (order,) = pack_bins(lengths, 100_000)  # the bin's rows, longest first
    assert starts == [0, *itertools.accumulate(lengths[i] for i in order[:-1])]
    with torch.no_grad():
        loss_padded = model(**padded).loss
        loss_packed = model(**packed).loss
    assert loss_packed == pytest.approx(float(loss_padded), abs=1e-5)

    result = train(artifact, model=str(tiny_model_dir), out=tmp_path / "packed",
                   overrides=["packing=true", "gradient_checkpointing=true", *FAST])
    assert result.metrics["global_step"] == 6 and result.run["hyperparameters"]["packing"] is True


def test_template_pinning_warns_and_saves_the_artifacts_template(artifact, tiny_model_dir, tmp_path):
    variant = tmp_path / "variant"
    shutil.copytree(artifact, variant)
    source = (variant / "chat_template.jinja").read_text() + "{# variant #}"
    (variant / "chat_template.jinja").write_text(source)
    manifest = json.loads((variant / "manifest.json").read_text())
    manifest["template"]["sha256"] = __import__("hashlib").sha256(source.encode()).hexdigest()
    (variant / "manifest.json").write_text(json.dumps(manifest))
    result = train(variant, model=str(tiny_model_dir), out=tmp_path / "run", overrides=["max_steps=1"])
    assert result.run["template"]["model_template_differed"] is True
    assert any("differs from the artifact's" in w for w in result.run["warnings"])
    assert (tmp_path / "run" / "chat_template.jinja").read_text() == source
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "run").chat_template == source


def test_config_layers_and_errors(artifact, tiny_model_dir, tmp_path):
    spec_block = tmp_path / "with-train"
    shutil.copytree(artifact, spec_block)
    manifest = json.loads((spec_block / "manifest.json").read_text())
    manifest["spec"]["train"] = {"model": str(tiny_model_dir), "max_steps": 2, "lora": {"r": 4}}
    (spec_block / "manifest.json").write_text(json.dumps(manifest))
    cfg = tmp_path / "train.yaml"
    cfg.write_text("lora:\n  alpha: 8\nbatch_size: 4\n")
    session = prepare_training(spec_block, config_file=cfg, overrides=["batch_size=2"], out=tmp_path / "r")
    c = session.config
    assert (c.model, c.max_steps, c.lora.r, c.lora.alpha, c.batch_size) == (str(tiny_model_dir), 2, 4, 8, 2)

    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nlora:\n  rank: 4\n")
    with pytest.raises(SpecError) as e:
        prepare_training(artifact, model=str(tiny_model_dir), config_file=bad, out=tmp_path / "x")
    assert e.value.file == str(bad) and e.value.line == 3 and "lora.rank" in str(e.value)
    with pytest.raises(SpecError, match="did you mean 'learning_rate'"):
        prepare_training(artifact, model=str(tiny_model_dir), overrides=["lr=1e-4"], out=tmp_path / "x")
    with pytest.raises(SpecError, match="did you mean 'epochs'"):
        prepare_training(artifact, model=str(tiny_model_dir), overrides=["epoch=1"], out=tmp_path / "x")
    with pytest.raises(SpecError, match="needs a GPU"):
        prepare_training(artifact, model=str(tiny_model_dir), overrides=["precision=bf16"], out=tmp_path / "x")
    with pytest.raises(SpecError, match="needs a GPU"):
        prepare_training(artifact, model=str(tiny_model_dir), overrides=["quantization=4bit"], out=tmp_path / "x")
    with pytest.raises(SpecError, match="no model"):
        prepare_training(artifact, out=tmp_path / "x")
    with pytest.raises(ModelError, match="model directory not found"):
        prepare_training(artifact, model=str(tmp_path / "missing-model"), out=tmp_path / "x")
    with pytest.raises(SpecError, match="unknown scheduler 'cosin'"):
        prepare_training(artifact, model=str(tiny_model_dir), overrides=["lr_scheduler=cosin"], out=tmp_path / "x")
    with pytest.raises(SpecError, match="this model's linear layers"):
        prepare_training(artifact, model=str(tiny_model_dir), overrides=["lora.target_modules=[qkv]"],
                         out=tmp_path / "x")
    with pytest.raises(SpecError, match="no checkpoint"):
        prepare_training(artifact, model=str(tiny_model_dir), out=tmp_path / "fresh", resume=True)


def test_artifact_errors(tiny_model_dir, tmp_path):
    no_train = make_artifact(tmp_path / "val-only", n_train=0, n_validation=4)
    with pytest.raises(ArtifactError, match="no 'train' split"):
        prepare_training(no_train, model=str(tiny_model_dir), out=tmp_path / "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not a dsc artifact"):
        prepare_training(tmp_path / "empty", model=str(tiny_model_dir))
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nope")


def test_cli_train(artifact, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from dsc.cli.root import app

    runner = CliRunner()
    out = tmp_path / "cli-run"
    r = runner.invoke(app, ["train", str(artifact), "--model", str(tiny_model_dir), "--out", str(out),
                            "max_steps=2", "logging_steps=1"])
    assert r.exit_code == 0, r.output
    assert "final loss" in r.output and (out / "run.json").is_file()
    r = runner.invoke(app, ["train", str(artifact), "--model", str(tiny_model_dir), "--out", str(tmp_path / "o"),
                            "max_step=2"])
    assert r.exit_code == 2 and "did you mean 'max_steps'" in r.output
    r = runner.invoke(app, ["train", str(tmp_path / "nothing"), "--model", str(tiny_model_dir)])
    assert r.exit_code == 2 and "artifact directory not found" in r.output
