"""Run configuration for `dsc train` and `dsc eval`: typed models and layered loading.

A run's settings come in layers, later ones winning: the model defaults, the spec's `train:` /
`eval:` block (carried in the artifact's manifest), a YAML config file, then `key=value`
overrides from the command line (dotted keys reach nested blocks: `lora.r=16`).
The layers are merged first and validated once, so a value may be split across them; an error
is reported against the layer that supplied the offending key (file:line:col for YAML files).

This module imports no torch/transformers: the spec parser may import these models to validate a
spec's `train:` and `eval:` blocks cheaply.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from dsc.core.errors import SpecError, allowed_list, did_you_mean, fields_at, yaml_position
from dsc.core.strict import StrictSettings
from dsc.spec.registries import DIALECTS

M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------------------------------------
# dsc train
# --------------------------------------------------------------------------------------------


class LoraSettings(StrictSettings):
    """LoRA adapter settings. Defaults are FireAct's (alpaca-lora fork): r=8, alpha=16, dropout=0.05, q/v."""

    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # "all-linear" lets peft pick every linear layer but the output head (architecture-agnostic).
    target_modules: list[str] | Literal["all-linear"] = Field(default_factory=lambda: ["q_proj", "v_proj"])


PACKING_MODES = ("false", "true", "dataset")  # the values of the train setting `packing`


class TrainConfig(StrictSettings):
    """Hyperparameters of `dsc train`."""

    model: str | None = None  # base model: a local directory or a hub id; `--model` overrides
    # the objective: sft (the artifact's rows), dpo or kto (a preference artifact, through TRL's
    # trainers); it must match the artifact's kind. `--method` overrides
    method: Literal["sft", "dpo", "kto"] = "sft"
    full: bool = False  # full fine-tuning instead of LoRA
    beta: float = Field(0.1, gt=0)  # dpo / kto: how far the policy may move from the reference model
    desirable_weight: float = Field(1.0, gt=0)  # kto: loss weight of desirable rows (see the manifest's kto_classes)
    undesirable_weight: float = Field(1.0, gt=0)  # kto: loss weight of undesirable rows
    lora: LoraSettings = Field(default_factory=LoraSettings)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # when set, wins over epochs
    batch_size: int = Field(8, ge=1)  # per device
    eval_batch_size: int | None = Field(None, ge=1)
    grad_accum: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0)  # when set, wins over warmup_ratio
    lr_scheduler: str = "cosine"
    max_grad_norm: float = Field(1.0, ge=0)
    max_length: int = Field(2048, ge=2)  # rows are truncated to this many tokens
    # several rows per sequence, no attention or position leakage between them. true: each step's rows
    # are packed into bins; "dataset": the train split is packed into bins once, before training, and
    # a step takes batch_size bins (batch_size then counts bins)
    packing: bool | Literal["dataset"] = False
    # packing: the most tokens in one packed sequence (rows are packed first-fit-decreasing into bins of it);
    # None: the artifact's tokenize.max_length, else (packing: true) the longest row of each batch or
    # (packing: dataset) max_length
    pack_length: int | None = Field(None, ge=2)
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on capable GPUs, else fp32
    quantization: Literal["none", "4bit", "8bit"] = "none"  # QLoRA-style base model (GPU + bitsandbytes)
    attn_implementation: str | None = None  # e.g. sdpa, eager, flash_attention_2
    device: Literal["auto", "cpu"] = "auto"
    seed: int = 42
    logging_steps: int = Field(10, ge=1)
    eval_steps: int | None = Field(None, ge=1)  # None: evaluate at the end of each epoch
    save_steps: int | None = Field(None, ge=1)  # None: checkpoint at the end of each epoch
    save_total_limit: int | None = Field(2, ge=1)
    train_split: str = "train"
    eval_split: str | None = "validation"  # None: no validation loss

    @field_validator("packing", mode="before")
    @classmethod
    def _packing_mode(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "dataset":
            raise ValueError(f"'{v}' is not a packing mode{did_you_mean(v, list(PACKING_MODES))}; "
                             f"allowed: {allowed_list(list(PACKING_MODES))}")
        return v

    @field_validator("pack_length")
    @classmethod
    def _pack_length_needs_packing(cls, v: int | None, info: Any) -> int | None:
        if v is not None and not info.data.get("packing"):
            raise ValueError("pack_length applies to packed batches only; set packing: true, or drop pack_length")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.full and self.quantization != "none":
            raise ValueError("full fine-tuning of a quantized model is not possible; use LoRA (full: false)")
        if self.method != "sft" and self.packing:
            raise ValueError(f"packing applies to sft; method {self.method} trains on pairs through TRL (drop packing)")
        return self


# --------------------------------------------------------------------------------------------
# dsc eval
# --------------------------------------------------------------------------------------------


class Subset(StrictSettings):
    """Which items to evaluate. FireAct: `random.Random(233).shuffle(indices)`, then `[start:start+n]`."""

    seed: int | None = 233  # None: file order
    n: int | None = Field(None, ge=1)
    start: int = Field(0, ge=0)


class PromptMessage(StrictSettings):
    role: Literal["system", "user", "assistant"]
    content: str  # Jinja over `question` (and the item's other fields)


class EvalTask(StrictSettings):
    """One evaluation task: a question file, how to prompt, how to score."""

    data: str  # jsonl / json (a list of objects) / csv; relative to the config file
    format: Literal["auto", "jsonl", "json", "csv"] = "auto"
    id_field: str | None = None  # None: the item's position in the file
    question_field: str = "question"
    question_template: str | None = None  # Jinja over the item's fields; wins over question_field
    answer_field: str = "answer"
    subset: Subset | None = None
    mode: Literal["direct", "agent"] = "direct"
    scorers: list[str] = Field(default_factory=lambda: ["em", "f1"], min_length=1)
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(8, ge=1)
    temperature: float = Field(0.0, ge=0)  # 0: greedy
    prompt: list[PromptMessage] | None = None  # None: the artifact's inference-time messages
    extract: str | None = None  # direct mode: a regex whose first group is the prediction
    stop: list[str] | None = None  # None: "\nObservation:" for inline ReAct, nothing otherwise
    # agent mode
    max_steps: int = Field(11, ge=1)  # FireAct's loop runs at most 11 model turns
    actions: Literal["react", "tool_calls"] = "react"  # `tool[arg]` text or JSON tool calls
    # The tool-call dialect the model writes (`dsc.dialects`: react, react_json, hermes, …);
    # None: the one the artifact was built in (its manifest's `inference.dialect`), else from `actions`.
    dialect: str | None = None
    observation: Literal["auto", "turn", "inline"] = "auto"  # auto: as the artifact's trajectories do
    observation_role: Literal["user", "tool"] = "user"
    observation_prefix: str = "Observation: "
    step_prefix: str = ""  # opens every model turn; FireAct's loop used "Thought:"
    tools: dict[str, dict[str, Any]] = Field(default_factory=dict)  # tool name -> its settings

    @field_validator("dialect")
    @classmethod
    def _known_dialect(cls, v: str | None) -> str | None:
        return v if v is None else DIALECTS.check_name(v)  # ValueError with a did-you-mean

    @model_validator(mode="after")
    def _consistent(self) -> "EvalTask":
        if self.mode == "agent" and not self.tools:
            raise ValueError("mode 'agent' needs at least one tool under 'tools' (e.g. search: {corpus: ...})")
        return self


class EvalConfig(StrictSettings):
    tasks: dict[str, EvalTask] = Field(min_length=1)
    seed: int = 0  # bootstrap resampling
    bootstrap: int = Field(1000, ge=0)  # resamples for the 95% confidence interval; 0: none


# --------------------------------------------------------------------------------------------
# Layered loading
# --------------------------------------------------------------------------------------------


@dataclass
class Layer:
    """One source of settings. `file` is set for YAML files (errors then carry file:line:col)."""

    label: str
    data: dict[str, Any]
    file: str | None = None


def load_yaml_file(path: str | Path) -> Any:
    """Round-trip YAML (keeps line numbers for error messages)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"config file not found: {p}")
    try:
        return YAML(typ="rt").load(p.read_text(encoding="utf-8"))
    except MarkedYAMLError as e:
        mark = e.problem_mark
        raise SpecError(f"invalid YAML: {e.problem}", str(p), mark.line + 1 if mark else None,
                        mark.column + 1 if mark else None) from None


def yaml_layer(path: str | Path) -> Layer:
    data = load_yaml_file(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError("a config file must be a mapping of settings", str(path), 1, 1)
    return Layer(label=str(path), data=data, file=str(path))


def _parse_scalar(text: str) -> Any:
    """YAML scalar semantics for override values: 3 → int, 1e-4 → float, true → bool, [a, b] → list."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if text == "":
        return ""
    try:
        return YAML(typ="safe").load(text)
    except YAMLError:
        return text


def override_layer(items: list[str]) -> Layer:
    """`key=value` strings → one nested layer; dotted keys reach into nested blocks."""
    data: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"override '{item}' is not of the form key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"override '{item}' conflicts with another override of '{part}'")
            node = child
        node[parts[-1]] = _parse_scalar(value)
    return Layer(label="command-line overrides", data=data)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _plain(value: Any) -> Any:
    """ruamel's commented containers → plain dicts/lists (pydantic validates those)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _has_path(data: Any, loc: tuple[Any, ...]) -> bool:
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    return True


# The recipes' own script flags (FireAct's alpaca-lora, NAT's HF Trainer) → our names, for hints.
_RECIPE_NAMES = {
    "lr": "learning_rate",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "micro_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "cutoff_len": "max_length",
    "model_max_length": "max_length",
    "lora_r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules",
    "bf16": "precision",
    "fp16": "precision",
    "load_in_8bit": "quantization",
    "load_in_4bit": "quantization",
    "warmup": "warmup_ratio",
}


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def resolve(model: type[M], layers: list[Layer], what: str) -> M:
    """Merge `layers` (later wins) and validate into `model`; errors are located in their layer."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _merge(merged, _plain(layer.data))
    try:
        return model.model_validate(merged)
    except ValidationError as e:
        raise _located_error(model, e, layers, what) from None


def _problem(model: type[BaseModel], err: Any, what: str) -> str:
    """One validation problem as a sentence: an unknown key with a did-you-mean and what is
    allowed, a missing key, or a bad value."""
    loc = tuple(err["loc"])
    key = _dotted(loc)
    if err["type"] == "extra_forbidden":
        allowed = fields_at(model, loc[:-1])
        name = str(loc[-1])
        hint = f" (did you mean '{_RECIPE_NAMES[name]}'?)" if name in _RECIPE_NAMES else did_you_mean(name, allowed)
        message = f"unknown {what} setting '{key}'{hint}"
        if allowed and not hint:
            message += f"; allowed: {allowed_list(allowed)}"
        return message
    if err["type"] == "missing":
        return f"{what} setting '{key}' is required"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{what} setting '{key}': {msg}" if key else f"{what}: {msg}"


def _located_error(model: type[BaseModel], error: ValidationError, layers: list[Layer], what: str) -> SpecError:
    # A typo shows up as an unknown key plus a missing one: the unknown key is the useful report.
    errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = errors[0]
    loc = tuple(first["loc"])
    message = _problem(model, first, what)
    if len(errors) > 1:  # every problem named, the first one located
        message += "; also " + "; ".join(_problem(model, e, what) for e in errors[1:])
    # Report against the last layer that supplied the key (that is the value that was used).
    for layer in reversed(layers):
        if loc and _has_path(layer.data, loc):
            if layer.file:
                line, col = yaml_position(layer.data, loc)
                return SpecError(message, layer.file, line, col)
            return SpecError(f"{message} (in {layer.label})")
    return SpecError(message)


def copy_layer(label: str, data: dict[str, Any] | None) -> Layer:
    """A layer from an in-memory block (e.g. the spec's `train:` block in a manifest)."""
    return Layer(label=label, data=copy.deepcopy(dict(data or {})))


def validate_spec_block(name: Literal["train", "eval"], block: Any, file: str | None = None) -> BaseModel:
    """Check a spec's `train:` or `eval:` block (for `dsc validate` and the build). Pass the
    ruamel node of the block and the spec's path to get file:line:col in errors."""
    model: type[BaseModel] = TrainConfig if name == "train" else EvalConfig
    data = block if isinstance(block, dict) else {}
    if block is not None and not isinstance(block, dict):
        raise SpecError(f"'{name}' must be a mapping of settings", file)
    return resolve(model, [Layer(label=file or f"the spec's {name}: block", data=data, file=file)], name)
