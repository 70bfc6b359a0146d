"""Loading a trained model (base + adapter, or a full model) and batched generation."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from dsc.artifact.manifest import MANIFEST
from dsc.artifact.reader import Artifact
from dsc.runtime.artifact import load_artifact
from dsc.runtime.modeling import (
    ModelError,
    end_of_turn_ids,
    eos_ids_for,
    load_tokenizer,
    peft_compat,
    pick_device,
    quiet_libraries,
    read_json,
    resolve_model_ref,
)
from dsc.runtime.train import RUN_FILE

log = logging.getLogger("dsc.runtime")


class HFGenerator:
    """Batched generation with a transformers causal LM: left padding, greedy by default,
    stopping at the eos ids (the template's end of turn) or a stop string."""

    def __init__(self, model: Any, tokenizer: Any, *, eos_ids: list[int], batch_size: int = 8,
                 temperature: float = 0.0, seed: int = 0, extra_stop: Sequence[str] = ()):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = list(eos_ids)
        self.batch_size = batch_size
        self.temperature = temperature
        self.seed = seed
        self.extra_stop = [s for s in extra_stop if s]
        tokenizer.padding_side = "left"  # generation continues at the right edge of every row
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokens_generated = 0
        self.on_batch: Callable[[int], None] | None = None  # told the size of each batch generated (progress)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def generate(self, prompts: list[str], *, stop: Sequence[str] = (), max_new_tokens: int = 256) -> list[str]:
        import torch

        from dsc.runtime.agent import cut_at_stop

        stops = [*stop, *self.extra_stop]
        # Similar lengths together means less padding; outputs go back to the callers' order.
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
        results: list[str] = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
            kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, eos_token_id=self.eos_ids,
                                          pad_token_id=self.tokenizer.pad_token_id)
            if self.temperature > 0:
                torch.manual_seed(self.seed + start)  # sampling is reproducible per batch
                kwargs.update(do_sample=True, temperature=self.temperature)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if stops:
                kwargs.update(stop_strings=list(stops), tokenizer=self.tokenizer)
            with torch.no_grad():
                out = self.model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            self.tokens_generated += int((new != self.tokenizer.pad_token_id).sum())
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for i, text in zip(idx, texts):
                results[i] = cut_at_stop(text, stops)
            if self.on_batch is not None:
                self.on_batch(len(idx))
        return results


@dataclass
class EvalModel:
    """A model ready for `dsc eval`, with the template and conditioning it was trained with."""

    ref: str
    label: str
    generator: Any
    template_source: str
    template_ref: str
    template_sha256: str | None
    inference: dict[str, Any]
    artifact_version: str | None
    base_model: str | None = None
    run: dict[str, Any] | None = None
    artifact: Artifact | None = field(default=None, repr=False)


def load_for_eval(ref: str, *, artifact: Artifact | None = None, batch_size: int = 8, temperature: float = 0.0,
                  seed: int = 0, device: str = "auto") -> EvalModel:
    """A training output dir (adapter or full model + run.json), or any causal-LM dir/hub id.

    The template and inference messages come from the artifact when given, else from the run's
    record (run.json and the template saved beside the weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_libraries()
    path = resolve_model_ref(ref)
    local = Path(path).is_dir()
    run = read_json(Path(path) / RUN_FILE) if local else None
    if artifact is None and run is not None:
        art_path = Path(run.get("artifact", {}).get("path", ""))
        if (art_path / MANIFEST).is_file():
            artifact = load_artifact(art_path)
    if artifact is not None and run is not None and run["artifact"].get("version") != artifact.version:
        log.warning("%s was trained on artifact version %s but evaluated with version %s", ref,
                    run["artifact"].get("version"), artifact.version)

    adapter = read_json(Path(path) / "adapter_config.json") if local else None
    base_ref = None
    if adapter is not None:
        base_ref = (run or {}).get("base_model_path") or (run or {}).get("base_model") \
            or adapter.get("base_model_name_or_path")
        if not base_ref:
            raise ModelError(f"{ref} is a LoRA adapter that does not name its base model")
        base_ref = resolve_model_ref(str(base_ref))
    dev = pick_device("auto", device)
    tokenizer = load_tokenizer(path if local and (Path(path) / "tokenizer_config.json").is_file() else base_ref or path)
    try:
        model = AutoModelForCausalLM.from_pretrained(base_ref or path, dtype=dev.torch_dtype)
        if adapter is not None:
            from peft import PeftModel

            with peft_compat():
                model = PeftModel.from_pretrained(model, path).merge_and_unload()  # merged: plain-model speed
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model '{ref}': {str(e).strip().splitlines()[0]}") from None
    model.to(torch.device(dev.name)).eval()

    template_source, template_ref, template_sha = _template(path, local, artifact, run, tokenizer, ref)
    end_of_turn = artifact.end_of_turn if artifact is not None else list((run or {}).get("template", {})
                                                                          .get("end_of_turn") or [])
    saved = read_json(Path(path) / "generation_config.json") if local else None
    if saved and saved.get("eos_token_id") is not None:
        eos = saved["eos_token_id"]
        eos_ids = [int(e) for e in (eos if isinstance(eos, list) else [eos])]
    else:
        eos_ids = eos_ids_for(tokenizer, end_of_turn, getattr(model.generation_config, "eos_token_id", None))
    _, multi = end_of_turn_ids(tokenizer, end_of_turn)
    generator = HFGenerator(model, tokenizer, eos_ids=eos_ids, batch_size=batch_size, temperature=temperature,
                            seed=seed, extra_stop=[m.strip() for m in multi])
    if artifact is not None:
        inference, version = artifact.inference, artifact.version
    elif run is not None:
        inference, version = run.get("inference") or {}, run.get("artifact", {}).get("version")
    else:
        log.warning("%s has no run.json and no --artifact was given: prompting with the bare question", ref)
        inference, version = {}, None
    inference = {"messages": inference.get("messages") or [{"role": "user", "content": "{{ question }}"}],
                 "label": inference.get("label"), "dialect": inference.get("dialect")}
    return EvalModel(ref=ref, label=Path(ref).name or ref, generator=generator, template_source=template_source,
                     template_ref=template_ref, template_sha256=template_sha, inference=inference,
                     artifact_version=version, base_model=base_ref, run=run, artifact=artifact)


def _template(path: str, local: bool, artifact: Artifact | None, run: dict[str, Any] | None, tokenizer: Any,
              ref: str) -> tuple[str, str, str | None]:
    from dsc.core.hashing import sha256_text

    if artifact is not None:
        source, tref, sha = artifact.template_source, artifact.template_ref, artifact.template_sha256
    elif local and (Path(path) / "chat_template.jinja").is_file():
        source = (Path(path) / "chat_template.jinja").read_text(encoding="utf-8")
        tref = (run or {}).get("template", {}).get("ref") or "chat_template.jinja"
        sha = sha256_text(source)
    elif isinstance(getattr(tokenizer, "chat_template", None), str):
        source, tref, sha = tokenizer.chat_template, f"tokenizer:{ref}", sha256_text(tokenizer.chat_template)
    else:
        raise ModelError(f"{ref} has no chat template; pass --artifact to use the artifact's")
    recorded = (run or {}).get("template", {}).get("sha256")
    if recorded and recorded != sha:
        log.warning("the template used for %s (sha256 %s) differs from the one it was trained with (%s)",
                    ref, sha[:12], recorded[:12])
    return source, tref, sha
