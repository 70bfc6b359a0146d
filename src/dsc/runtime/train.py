"""`dsc train`: fine-tune a model from a compiled artifact (transformers Trainer + peft).

Single process::

    dsc train build/fireact --model path/to/base --out runs/fireact lora.r=16 epochs=3

Several GPUs run the same command under the standard launchers (the Trainer picks up the
distributed environment; only rank 0 writes run.json and the model card)::

    accelerate launch -m dsc train specs/build/fireact --model path/to/base --out runs/fireact
    torchrun --nproc_per_node 4 -m dsc train specs/build/fireact --model path/to/base --out runs/fireact

`batch_size` is per device: the effective batch is batch_size × grad_accum × number of processes.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dsc.artifact.reader import Artifact
from dsc.core.errors import ArtifactError, SpecError
from dsc.runtime.artifact import load_artifact
from dsc.runtime.features import (
    BinCollator,
    DatasetPacking,
    FeatureStats,
    PackingCollator,
    PadCollator,
    build_features,
    pack_dataset,
    tokenizer_sha256,
    use_stored_tokens,
)
from dsc.runtime.loss import weighted_trainer_class
from dsc.runtime.modeling import (
    Device,
    ModelError,
    eos_ids_for,
    has_weights,
    library_versions,
    load_tokenizer,
    log_lines_enabled,
    peft_compat,
    pick_device,
    pin_template,
    quiet_libraries,
    read_json,
    resolve_model_ref,
)
from dsc.runtime.preference import check_method, preference_trainer
from dsc.runtime.trainer_args import dsc_callbacks, training_arguments
from dsc.spec.runtime import Layer, TrainConfig, copy_layer, override_layer, resolve, yaml_layer

log = logging.getLogger("dsc.runtime")

CHECKPOINTS = "checkpoints"
RUN_FILE = "run.json"
_RESUME_KEY = "dsc-run-key.json"  # in the checkpoints folder: what a resumed run must match


def resolve_train_config(artifact: Artifact, config_file: str | Path | None = None,
                         overrides: Sequence[str] = (), model: str | None = None,
                         method: str | None = None) -> TrainConfig:
    """Spec `train:` block < config file < key=value overrides < --model, --method."""
    layers: list[Layer] = [copy_layer("the spec's train: block (manifest.json)", artifact.spec.get("train"))]
    if config_file is not None:
        layers.append(yaml_layer(config_file))
    if overrides:
        layers.append(override_layer(list(overrides)))
    if model is not None:
        layers.append(Layer(label="--model", data={"model": model}))
    if method is not None:
        layers.append(Layer(label="--method", data={"method": method}))
    return resolve(TrainConfig, layers, "train")


def default_out_dir(artifact: Artifact) -> Path:
    return Path("runs") / f"{artifact.name}-{artifact.version[:12] or 'unversioned'}"


@dataclass
class TrainResult:
    out_dir: Path
    run: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.run["metrics"]


@dataclass
class TrainSession:
    """Everything prepared for one run; `run()` trains and writes the output directory.

    Split from `train()` so that tests (and callers) can inspect what the Trainer will see.
    """

    artifact: Artifact
    config: TrainConfig
    model_ref: str
    out_dir: Path
    device: Device
    tokenizer: Any
    model: Any
    trainer: Any
    eos_ids: list[int]
    feature_stats: dict[str, FeatureStats]
    tokenization_note: str
    template_differed: bool
    resume_from: str | None
    warnings: list[str] = field(default_factory=list)
    dataset_packing: dict[str, DatasetPacking] = field(default_factory=dict)  # packing: dataset, per split

    def run(self) -> TrainResult:
        trainer = self.trainer
        result = trainer.train(resume_from_checkpoint=self.resume_from)
        metrics: dict[str, Any] = {k: _num(v) for k, v in result.metrics.items()}
        if trainer.eval_dataset is not None:
            final_eval = [e for e in trainer.state.log_history
                          if "eval_loss" in e and e.get("step") == trainer.state.global_step]
            # The validation loop already ran at the last step (eval at each epoch's end): not again.
            evaluated = final_eval[-1] if final_eval else trainer.evaluate()
            metrics.update({k: _num(v) for k, v in evaluated.items() if k.startswith("eval_")})
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        if losses:
            metrics["final_loss"] = float(losses[-1])
            metrics["first_loss"] = float(losses[0])
        metrics["global_step"] = trainer.state.global_step
        tokens = getattr(trainer.state, "num_input_tokens_seen", 0) or 0
        if tokens:
            metrics["tokens_seen"] = int(tokens)
            runtime = metrics.get("train_runtime") or 0
            if runtime:
                metrics["tokens_per_second"] = round(tokens / runtime, 2)
        self._save(trainer)
        run = self._run_record(metrics)
        if trainer.is_world_process_zero():
            (self.out_dir / RUN_FILE).write_text(json.dumps(run, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            (self.out_dir / "README.md").write_text(model_card(run), encoding="utf-8")
        return TrainResult(out_dir=self.out_dir, run=run)

    def _save(self, trainer: Any) -> None:
        from transformers import GenerationConfig

        trainer.save_model(str(self.out_dir))  # the adapter for LoRA, the whole model for full FT
        if not trainer.is_world_process_zero():
            return
        self.tokenizer.save_pretrained(str(self.out_dir))
        gen = getattr(_base_model(self.model), "generation_config", None) or GenerationConfig()
        gen.eos_token_id = list(self.eos_ids)
        if gen.pad_token_id is None:
            gen.pad_token_id = self.tokenizer.pad_token_id
        gen.save_pretrained(str(self.out_dir))
        # The exact template file beside the weights (the tokenizer config carries it too).
        (self.out_dir / "chat_template.jinja").write_text(self.artifact.template_source, encoding="utf-8")

    def _packing_record(self) -> dict[str, Any] | None:
        c = self.config
        if not c.packing:
            return None
        pack_length = resolve_pack_length(self.artifact, c)
        record = {"mode": "dataset" if c.packing == "dataset" else "step", "pack_length": pack_length,
                  "one_sequence": uses_flash_attention(self.model)}
        if c.packing == "dataset":
            record.update({
                "batch_size_counts": "bins",
                # a step is batch_size x grad_accum bins of at most pack_length tokens each
                "tokens_per_step_at_most": c.batch_size * c.grad_accum * pack_length,
                "splits": {k: v.to_dict() for k, v in sorted(self.dataset_packing.items())}})
        return record

    def _tokenization_record(self) -> dict[str, Any]:
        if self.config.train_split not in self.feature_stats:  # dpo / kto: TRL tokenises
            return {"source": "trl", "reason": self.tokenization_note, "splits": {}}
        return {"source": self.feature_stats[self.config.train_split].source, "reason": self.tokenization_note,
                "splits": {k: v.to_dict() for k, v in sorted(self.feature_stats.items())}}

    def _run_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        a = self.artifact
        return {
            "dsc_run": 1,
            "artifact": {"path": str(a.path.resolve()), "name": a.name, "version": a.version},
            "spec_hash": a.spec_hash,
            "template": {"ref": a.template_ref, "sha256": a.template_sha256, "end_of_turn": a.end_of_turn,
                         "model_template_differed": self.template_differed},
            "base_model": self.model_ref,
            "base_model_path": str(Path(self.model_ref).resolve()) if Path(self.model_ref).exists() else None,
            "method": "full" if self.config.full else "lora",
            "objective": self.config.method,
            "packing": self._packing_record(),
            "hyperparameters": self.config.model_dump(mode="json"),
            "device": {"type": self.device.name, "precision": self.device.precision},
            "tokenization": self._tokenization_record(),
            "eos_token_id": list(self.eos_ids),
            "inference": a.inference,
            "metrics": metrics,
            "versions": library_versions(),
            "warnings": list(self.warnings),
        }


def _num(v: Any) -> Any:
    return float(v) if isinstance(v, float) else v


def _base_model(model: Any) -> Any:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


class _WarningCollector(logging.Handler):
    """Keeps this run's warnings for run.json (they are also shown as usual)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def prepare_training(artifact_dir: str | Path, *, model: str | None = None, config_file: str | Path | None = None,
                     overrides: Sequence[str] = (), out: str | Path | None = None, resume: bool = False,
                     callbacks: Sequence[Any] = (), method: str | None = None) -> TrainSession:
    """`method`: sft (the default), dpo or kto; it must match the artifact's kind."""
    collector = _WarningCollector()
    log.addHandler(collector)
    try:
        session = _prepare(artifact_dir, model=model, config_file=config_file, overrides=overrides, out=out,
                           resume=resume, callbacks=callbacks, method=method)
    finally:
        log.removeHandler(collector)
    session.warnings = collector.messages
    return session


def progress_callback(progress: Any) -> Any:
    """A transformers TrainerCallback that drives `progress` (the build's interface plus `note`):
    optimizer steps done of the total (so the bar shows an ETA), and the last logged loss and
    the tokens per second so far beside it. Only the main process reports."""
    import time

    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.started = 0.0
            self.step = 0
            self.tokens_at_start = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            self.started, self.step = time.monotonic(), state.global_step
            self.tokens_at_start = getattr(state, "num_input_tokens_seen", 0) or 0
            progress.start("train", state.max_steps or None)
            if state.global_step:  # resumed: the steps already done
                progress.advance(state.global_step)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero and state.global_step > self.step:
                progress.advance(state.global_step - self.step)
                self.step = state.global_step

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if not state.is_world_process_zero:
                return
            parts = []
            if logs and isinstance(logs.get("loss"), (int, float)):
                parts.append(f"loss {logs['loss']:.4f}")
            if logs and isinstance(logs.get("eval_loss"), (int, float)):
                parts.append(f"eval loss {logs['eval_loss']:.4f}")
            tokens = (getattr(state, "num_input_tokens_seen", 0) or 0) - self.tokens_at_start
            elapsed = time.monotonic() - self.started
            if tokens > 0 and elapsed > 0:
                parts.append(f"{tokens / elapsed:.0f} tokens/s")
            if parts and hasattr(progress, "note"):
                progress.note(" · ".join(parts))
            if parts and log_lines_enabled():
                print(f"train step {state.global_step}/{state.max_steps}: {', '.join(parts)}", file=sys.stderr,
                      flush=True)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                progress.done()

    return ProgressCallback()


def train(artifact_dir: str | Path, **kwargs: Any) -> TrainResult:
    """Prepare and run; see `prepare_training` for the arguments."""
    return prepare_training(artifact_dir, **kwargs).run()


def _prepare(artifact_dir: str | Path, *, model: str | None, config_file: str | Path | None,
             overrides: Sequence[str], out: str | Path | None, resume: bool,
             callbacks: Sequence[Any], method: str | None = None) -> TrainSession:
    quiet_libraries()
    artifact = load_artifact(artifact_dir)
    config = resolve_train_config(artifact, config_file, overrides, model, method)
    check_method(artifact, config.method)
    if config.model is None:
        raise SpecError("no model to train: pass --model (a local directory or a hub id) or set train.model")
    if config.train_split not in artifact.splits:
        raise ArtifactError(f"artifact {artifact.path} has no '{config.train_split}' split to train on "
                            f"(it has: {', '.join(artifact.splits)})")
    eval_split = config.eval_split if config.eval_split in artifact.splits else None
    if config.eval_split and eval_split is None:
        log.warning("the artifact has no '%s' split: no validation loss", config.eval_split)

    model_ref = resolve_model_ref(config.model)
    device = pick_device(config.precision, config.device, config.quantization)
    out_dir = Path(out) if out is not None else default_out_dir(artifact)
    resume_from = _checkpoint_to_resume(out_dir, resume, _resume_key(artifact, config))

    from transformers import set_seed

    set_seed(config.seed)  # LoRA/head initialisation draws from torch's RNG

    tokenizer = load_tokenizer(model_ref)
    template_differed = pin_template(tokenizer, artifact.template_source, model_ref)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    if config.method != "sft":
        net = _load_model(model_ref, config, device, len(tokenizer))
        trainer = preference_trainer(config, device, net, tokenizer, artifact, eval_split, out_dir, callbacks)
        return _session(artifact, config, model_ref, out_dir, device, tokenizer, net, trainer, {},
                        f"TRL's {config.method.upper()} tokenisation of the artifact's messages with its pinned template",
                        template_differed, resume_from, {})

    model_sha = tokenizer_sha256(model_ref)
    stored, note = use_stored_tokens(artifact, config.train_split, model_sha)
    stats: dict[str, FeatureStats] = {}
    train_ds, stats[config.train_split] = build_features(artifact, config.train_split, tokenizer,
                                                         max_length=config.max_length, use_stored=stored)
    if len(train_ds) == 0:
        raise ArtifactError(f"no trainable rows in split '{config.train_split}' (every row lacks supervised tokens)")
    eval_ds = None
    if eval_split:
        eval_ds, stats[eval_split] = build_features(artifact, eval_split, tokenizer, max_length=config.max_length,
                                                    use_stored=stored)
        if len(eval_ds) == 0:
            eval_ds = None

    dataset_packing: dict[str, DatasetPacking] = {}
    if config.packing == "dataset":  # the bins are made once; a step takes batch_size of them
        pack_length = resolve_pack_length(artifact, config)
        train_ds, dataset_packing[config.train_split] = pack_dataset(train_ds, pack_length, config.seed)
        if eval_ds is not None:
            eval_ds, dataset_packing[eval_split] = pack_dataset(eval_ds, pack_length, config.seed)

    net = _load_model(model_ref, config, device, len(tokenizer))
    trainer = _make_trainer(config, device, net, tokenizer, train_ds, eval_ds, out_dir, callbacks,
                            resolve_pack_length(artifact, config))
    return _session(artifact, config, model_ref, out_dir, device, tokenizer, net, trainer, stats, note,
                    template_differed, resume_from, dataset_packing)


def _session(artifact: Artifact, config: TrainConfig, model_ref: str, out_dir: Path, device: Device, tokenizer: Any,
             net: Any, trainer: Any, stats: dict[str, FeatureStats], note: str, template_differed: bool,
             resume_from: str | None, dataset_packing: dict[str, DatasetPacking]) -> TrainSession:
    """The session of a prepared trainer (any objective); writes the resume key beside the checkpoints."""
    eos_ids = eos_ids_for(tokenizer, artifact.end_of_turn, getattr(_base_model(net).generation_config,
                                                                   "eos_token_id", None))
    if trainer.is_world_process_zero():
        (out_dir / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        (out_dir / CHECKPOINTS / _RESUME_KEY).write_text(
            json.dumps(_resume_key(artifact, config), indent=2, sort_keys=True), encoding="utf-8")
    return TrainSession(
        artifact=artifact, config=config, model_ref=model_ref, out_dir=out_dir, device=device, tokenizer=tokenizer,
        model=net, trainer=trainer, eos_ids=eos_ids, feature_stats=stats, tokenization_note=note,
        template_differed=template_differed, resume_from=resume_from, dataset_packing=dataset_packing,
    )


def _resume_key(artifact: Artifact, config: TrainConfig) -> dict[str, Any]:
    return {"artifact_version": artifact.version, "config": config.model_dump(mode="json")}


def _checkpoint_to_resume(out_dir: Path, resume: bool, key: dict[str, Any]) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = out_dir / CHECKPOINTS
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if not resume:
        if last is not None or (out_dir / RUN_FILE).exists():
            raise SpecError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
        return None
    if last is None:
        raise SpecError(f"--resume: no checkpoint in {ckpt_dir} to continue from")
    saved = read_json(ckpt_dir / _RESUME_KEY)
    if saved is not None and saved != key:
        diffs = _diff_keys(saved, key)
        raise SpecError(f"--resume: the run in {out_dir} used different settings ({', '.join(diffs)}); "
                        "resume with the same artifact and settings, or start a new --out")
    return last


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _from_config(model_ref: str, config: TrainConfig, kwargs: dict[str, Any]) -> Any:
    """A local directory with config.json and no weights: a model of that shape with weights drawn
    from the run's seed (set before this is called), trained in full — LoRA would train adapters on
    random weights that no file keeps."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not config.full:
        raise SpecError(f"model '{model_ref}' has a config.json but no weights: it trains from scratch, which "
                        "needs full=true (LoRA adapters would sit on random weights no file keeps)")
    log.info("model '%s' has no weights: initialised from its config.json (seed %d)", model_ref, config.seed)
    model_config = AutoConfig.from_pretrained(model_ref)
    if kwargs.get("attn_implementation"):
        model_config._attn_implementation = kwargs["attn_implementation"]
    return AutoModelForCausalLM.from_config(model_config, dtype=kwargs["dtype"])


def _load_model(model_ref: str, config: TrainConfig, device: Device, vocab_size: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    # Full FT keeps fp32 master weights (the Trainer autocasts); LoRA can hold the frozen base in bf16.
    kwargs["dtype"] = device.torch_dtype if (not config.full and device.cuda) else torch.float32
    if config.quantization != "none":
        kwargs["quantization_config"] = _bnb_config(config.quantization, device)
    try:
        if has_weights(model_ref):
            net = AutoModelForCausalLM.from_pretrained(model_ref, **kwargs)
        else:
            net = _from_config(model_ref, config, kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model '{model_ref}': {str(e).strip().splitlines()[0]}") from None
    if net.get_input_embeddings().num_embeddings < vocab_size:
        raise ModelError(f"model '{model_ref}' has {net.get_input_embeddings().num_embeddings} embeddings "
                         f"but its tokenizer has {vocab_size} tokens")
    net.config.use_cache = False  # caching is useless in training and conflicts with checkpointing
    if config.full:
        return net
    return _add_lora(net, config)


def _bnb_config(quantization: str, device: Device) -> Any:
    import importlib.util

    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise SpecError(f"quantization '{quantization}' needs the bitsandbytes package (pip install bitsandbytes)")
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=device.torch_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def _add_lora(net: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if config.quantization != "none":
        net = prepare_model_for_kbit_training(net, use_gradient_checkpointing=config.gradient_checkpointing)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
        bias="none",
    )
    try:
        with peft_compat():
            net = get_peft_model(net, lora)
    except ValueError as e:
        linear = sorted({name.rsplit(".", 1)[-1] for name, mod in net.named_modules()
                         if type(mod).__name__ in ("Linear", "Linear8bitLt", "Linear4bit")})
        raise SpecError(f"lora.target_modules {config.lora.target_modules}: {str(e).splitlines()[0]} "
                        f"(this model's linear layers: {', '.join(linear)}; or use 'all-linear')") from None
    if config.gradient_checkpointing:
        net.enable_input_require_grads()  # checkpointed blocks need a grad-requiring input under LoRA
    return net


def resolve_pack_length(artifact: Artifact, config: TrainConfig) -> int | None:
    """The bin size of packed batches: `pack_length`, else the artifact's tokenize.max_length (the
    longest row it promises), else None (packing: true, each batch's longest row) or max_length
    (packing: dataset, the longest a row can be after truncation)."""
    if config.pack_length is not None:
        return config.pack_length
    tok = artifact.manifest.tokenizer
    fallback = config.max_length if config.packing == "dataset" else None
    return (tok.max_length if tok is not None else None) or fallback


def uses_flash_attention(net: Any) -> bool:
    return "flash" in (getattr(_base_model(net).config, "_attn_implementation", None) or "")


def batch_collator(config: TrainConfig, tokenizer: Any, net: Any, pack_length: int | None) -> Any:
    if not config.packing:
        return PadCollator(tokenizer.pad_token_id)
    if config.packing == "dataset":  # the rows are already in bins (`pack_dataset`)
        return BinCollator(tokenizer.pad_token_id, one_sequence=uses_flash_attention(net))
    # flash-attention separates packed rows only in a batch of one sequence (and then per row)
    return PackingCollator(tokenizer.pad_token_id, pack_length, one_sequence=uses_flash_attention(net))


def _make_trainer(config: TrainConfig, device: Device, net: Any, tokenizer: Any, train_ds: Any, eval_ds: Any,
                  out_dir: Path, callbacks: Sequence[Any], pack_length: int | None = None) -> Any:
    from transformers import TrainingArguments

    args = TrainingArguments(**training_arguments(config, device, out_dir / CHECKPOINTS, eval_ds is not None,
                                                  TrainingArguments),
                             include_num_input_tokens_seen="non_padding")
    collator = batch_collator(config, tokenizer, net, pack_length)
    trainer = weighted_trainer_class()(
        model=net,
        args=args,
        data_collator=collator,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    dsc_callbacks(trainer)
    return trainer


def model_card(run: dict[str, Any]) -> str:
    """A Hub-style model card naming the artifact version the model was trained on."""
    a = run["artifact"]
    m = run["metrics"]
    hp = run["hyperparameters"]
    lines = [
        "---",
        f"base_model: {json.dumps(run['base_model'])}",
        *(["library_name: peft"] if run["method"] == "lora" else []),
        "tags:",
        "- dsc",
        f"- {run['method']}",
        "---",
        "",
        f"# {a['name']} ({run['method']} fine-tune of {run['base_model']})",
        "",
        f"Trained by `dsc train` on the dsc artifact **{a['name']}**, version `{a['version']}` "
        f"(spec hash `{run['spec_hash'][:16]}`).",
        "",
        f"- Chat template: `{run['template']['ref']}` (sha256 `{run['template']['sha256'][:16]}`), saved with the "
        "tokenizer; generation stops at its end of turn "
        f"(eos ids {run['eos_token_id']}).",
        f"- Tokenisation: {run['tokenization']['source']} ({run['tokenization']['reason']}).",
        f"- Steps: {m.get('global_step')}; final training loss: {_fmt(m.get('final_loss'))}; "
        f"validation loss: {_fmt(m.get('eval_loss'))}.",
        f"- Hyperparameters: learning rate {hp['learning_rate']}, batch {hp['batch_size']}"
        f"{' bins' if hp['packing'] == 'dataset' else ''} × accumulation "
        f"{hp['grad_accum']}, epochs {hp['epochs']}, max steps {hp['max_steps']}, max length {hp['max_length']}"
        + (f", LoRA r={hp['lora']['r']} alpha={hp['lora']['alpha']} dropout={hp['lora']['dropout']} "
           f"targets={hp['lora']['target_modules']}" if run["method"] == "lora" else ", full fine-tuning")
        + f", seed {hp['seed']}.",
        "",
        "## Inference",
        "",
        "Prompts must be rendered with this model's chat template and the artifact's inference-time "
        "messages (recorded in `run.json` under `inference`); `dsc eval` does both:",
        "",
        "```",
        "dsc eval <this directory> --tasks eval.yaml",
        "```",
        "",
        "Library versions: " + ", ".join(f"{k} {v}" for k, v in sorted(run["versions"].items())) + ".",
        "",
    ]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "n/a"
