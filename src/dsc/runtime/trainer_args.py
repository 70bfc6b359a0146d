"""The settings every `dsc train` objective hands its Trainer (SFT: transformers' Trainer; DPO and
KTO: TRL's trainers, whose configs extend `TrainingArguments`), from one `TrainConfig`, so the
objectives cannot drift apart in how they schedule, checkpoint, log or pick a precision."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dsc.core.errors import SpecError, allowed_list, did_you_mean
from dsc.runtime.modeling import Device, progress_enabled
from dsc.spec.runtime import TrainConfig


def training_arguments(config: TrainConfig, device: Device, checkpoints: Path, has_eval: bool,
                       args_cls: Any) -> dict[str, Any]:
    """Keyword arguments of `args_cls` (TrainingArguments or a subclass) for this run."""
    from transformers import SchedulerType

    schedulers = [s.value for s in SchedulerType]
    if config.lr_scheduler not in schedulers:
        raise SpecError(f"train setting 'lr_scheduler': unknown scheduler '{config.lr_scheduler}'"
                        f"{did_you_mean(config.lr_scheduler, schedulers)}; allowed: {allowed_list(schedulers)}")
    return dict(
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size or config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps if config.warmup_steps is not None else config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler,
        max_grad_norm=config.max_grad_norm,
        bf16=device.precision == "bf16",
        fp16=device.precision == "fp16",
        use_cpu=not device.cuda,
        **checkpointing_args(args_cls, config.gradient_checkpointing),
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy=("steps" if config.eval_steps else "epoch") if has_eval else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps" if config.save_steps else "epoch",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=not progress_enabled(),
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def checkpointing_args(args_cls: Any, enabled: bool) -> dict[str, Any]:
    # transformers 5.x renamed gradient_checkpointing* to activation_checkpointing* (old names warn).
    name = "activation_checkpointing" if "activation_checkpointing" in args_cls.__dataclass_fields__ \
        else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def dsc_callbacks(trainer: Any) -> None:
    """What every dsc run's trainer does besides transformers' defaults: no raw log dicts on
    stdout where there is no progress bar, and a log of the last step, so that the final loss is
    the last step's whatever `logging_steps` is (a 3-step run logging every 100 reports step 3)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    class LogLastStep(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_log = True

    if not progress_enabled():
        trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LogLastStep())
