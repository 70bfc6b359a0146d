"""`dsc train --method dpo | kto`: a preference artifact through TRL's DPOTrainer / KTOTrainer.

The artifact's rows are already in the columns TRL reads (`prompt`, `chosen`, `rejected` or
`prompt`, `completion`, `label`, with `tools`; see `dsc.compiler.stages.preference.columns`), so
this module only loads a split into a `datasets.Dataset` of those columns and configures the
trainer from the same `TrainConfig` as SFT (`trainer_args`). The model, LoRA, the pinned template
(TRL renders prompts and completions with the tokenizer's chat template, which `dsc train` has set
to the artifact's), checkpoints and run.json are `dsc.runtime.train`'s.

TRL is an optional extra: `pip install 'dsc[trl]'`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from dsc.artifact.reader import Artifact
from dsc.core.errors import ArtifactError, SpecError
from dsc.runtime.modeling import Device
from dsc.runtime.trainer_args import dsc_callbacks, training_arguments
from dsc.spec.runtime import TrainConfig

# The columns each objective hands TRL (the others, dsc's ids and texts, stay in the artifact).
TRL_COLUMNS = {"dpo": ["prompt", "chosen", "rejected", "tools"], "kto": ["prompt", "completion", "label", "tools"]}
TRL_HINT = "pip install 'dsc[trl]' (TRL >= 1.8)"


def check_method(artifact: Artifact, method: str) -> None:
    """The objective must be what the artifact's rows were built for: one clear error otherwise."""
    kind = artifact.manifest.kind
    if method == kind:
        return
    if kind == "sft":
        raise SpecError(f"--method {method} needs a preference artifact (a spec with `preference: {{kind: {method}}}`); "
                        f"{artifact.path} holds SFT rows: train it with --method sft")
    raise SpecError(f"--method {method} does not fit {artifact.path}: it holds {kind.upper()} rows "
                    f"(preference.kind: {kind}); train it with --method {kind}")


def preference_dataset(artifact: Artifact, split: str, kind: str) -> Any:
    """A split's TRL columns as a `datasets.Dataset` (Arrow in, Arrow kept: no row dicts)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    artifact.check_split(split)
    tables = [pq.read_table(p, columns=TRL_COLUMNS[kind]) for p in artifact.shards(split)]
    return Dataset(pa.concat_tables(tables))


def _trl() -> Any:
    try:
        import trl
    except ImportError:
        raise SpecError(f"--method dpo / kto trains with TRL, which is not installed: {TRL_HINT}") from None
    return trl


def preference_trainer(config: TrainConfig, device: Device, net: Any, tokenizer: Any, artifact: Artifact,
                       eval_split: str | None, out_dir: Path, callbacks: Sequence[Any]) -> Any:
    """TRL's trainer for `config.method` over the artifact's splits (`net` already has its LoRA
    adapter: TRL then scores the reference by disabling it; full fine-tuning loads a reference copy)."""
    trl = _trl()
    kind = config.method
    train_ds = preference_dataset(artifact, config.train_split, kind)
    if len(train_ds) == 0:
        raise ArtifactError(f"no rows in split '{config.train_split}' of {artifact.path}")
    eval_ds = preference_dataset(artifact, eval_split, kind) if eval_split else None
    if eval_ds is not None and len(eval_ds) == 0:
        eval_ds = None
    cls_config, cls_trainer = (trl.DPOConfig, trl.DPOTrainer) if kind == "dpo" else (trl.KTOConfig, trl.KTOTrainer)
    extra: dict[str, Any] = {"beta": config.beta, "max_length": config.max_length}
    if kind == "kto":
        extra.update(desirable_weight=config.desirable_weight, undesirable_weight=config.undesirable_weight)
    args = cls_config(**training_arguments(config, device, out_dir / "checkpoints", eval_ds is not None, cls_config),
                      **extra)
    trainer = cls_trainer(model=net, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          processing_class=tokenizer, callbacks=list(callbacks))
    dsc_callbacks(trainer)
    return trainer
