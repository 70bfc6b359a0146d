"""A prepared GPU check: SFT with packing, DPO and an eval through `dsc train` on one CUDA GPU, in
bf16, with tokens/s against an HF `Trainer` with padded batches in the same run.

    bash bench/gpu_check.sh                  # or: python bench/gpu_check.py [--steps 60] [--work DIR]

Nothing comes from the internet: the tokenizer is a byte-level BPE trained here on generated
agent text (tests/tiny.py), the model a Llama-shaped decoder built from its config (random
weights: the check is about the pipeline and its speed, not about learning), the SFT data
generated ReAct conversations of spread-out lengths compiled by `dsc build` (tokenised, ChatML),
the preference data specs/nat-dpo.yaml. Steps:

1. SFT, `dsc train` with `packing=true` (bf16, full fine-tuning), then the baseline: an HF
   `Trainer` with padded batches (`DataCollatorForSeq2Seq`) on the same stored rows, same batch
   size, steps and optimiser; both report non-padding tokens per second.
2. Eval: the validation loss of the SFT run (`trainer.evaluate` on the validation split).
3. DPO: `dsc train --method dpo` (TRL's DPOTrainer, LoRA) on the NAT-style pairs.

Without CUDA it stops at once with exit code 2 (CI never runs it). `--allow-cpu` runs the same
steps with a tiny model on CPU (a smoke test of the script itself, not a measurement).
Well under 10 minutes on one H100 (the default sizes: a 12-layer, 768-wide model, about 110M
parameters with its 8k vocabulary).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # tiny.py: the offline tokenizer builder
sys.path.insert(0, str(REPO / "src"))


def fail(message: str) -> None:
    print(f"gpu_check: {message}", file=sys.stderr)
    raise SystemExit(2)


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    """ReAct conversations of 1-8 steps (a length spread like real agent data)."""
    rng = random.Random(seed)
    words = "the a of search finish film director city river year team answer question thought".split()
    rows = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"Question {i}: " + " ".join(rng.choices(words, k=rng.randint(5, 30)))}]
        for step in range(rng.randint(1, 8)):
            msgs.append({"role": "assistant", "content": "Thought: " + " ".join(rng.choices(words, k=rng.randint(10, 60)))
                         + f"\nAction: search[{rng.choice(words)}]"})
            msgs.append({"role": "user", "content": "Observation: " + " ".join(rng.choices(words, k=rng.randint(10, 80)))})
        msgs.append({"role": "assistant", "content": f"Thought: done.\nAction: finish[{rng.choice(words)}]"})
        rows.append({"id": f"r{i}", "messages": msgs})
    return rows


def prepare(work: Path, hidden: int, layers: int, vocab: int, rows: int) -> tuple[Path, Path, Path]:
    """(SFT artifact, DPO artifact, model dir) under `work`."""
    import torch
    from tiny import make_tokenizer
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from dsc.compiler.engine.driver import build

    tok_dir = make_tokenizer(work / "tokenizer", vocab_size=vocab)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 4 if hidden >= 256 else hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=max(4, hidden // 64),
                         num_key_value_heads=max(4, hidden // 64), max_position_embeddings=4096,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(work / "model")
    tok.save_pretrained(work / "model")
    data = work / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sft_rows(rows)), encoding="utf-8")
    (work / "sft.yaml").write_text(
        "dsc: 1\nname: gpu-check-sft\nseed: 0\nsources:\n  gen: {path: sft.jsonl, format: openai}\n"
        "template: chatml\nloss: assistant\ntokenize: {tokenizer: tokenizer, max_length: 2048, overflow: drop}\n"
        "split: {validation: 0.05, by: group}\n", encoding="utf-8")
    sft = Path(build(work / "sft.yaml", work / "build" / "sft", cache=False).out_dir)
    dpo = Path(build(REPO / "specs" / "nat-dpo.yaml", work / "build" / "dpo", cache=False).out_dir)
    return sft, dpo, work / "model"


class Counting:
    """Wraps a collator, counting the non-padding tokens of the batches the model saw."""

    def __init__(self, inner):
        self.inner, self.real = inner, 0

    def __call__(self, features):
        self.real += sum(len(f["input_ids"]) for f in features)
        return self.inner(features)


def run_dsc_sft(artifact: Path, model: Path, out: Path, steps: int, batch: int, precision: str) -> dict:
    from dsc.runtime.train import prepare_training

    session = prepare_training(artifact, model=str(model), out=out, overrides=[
        "full=true", "packing=true", f"max_steps={steps}", f"batch_size={batch}", "learning_rate=3e-4",
        f"precision={precision}", "save_steps=100000", "logging_steps=10", "eval_split=validation",
        "max_length=2048"])
    counter = session.trainer.data_collator = Counting(session.trainer.data_collator)
    result = session.run()
    seconds = result.metrics["train_runtime"]
    return {"run": "dsc train (packing)", "tokens": counter.real, "seconds": round(seconds, 2),
            "tokens_per_second": round(counter.real / seconds, 1), "final_loss": result.metrics.get("final_loss"),
            "eval_loss": result.metrics.get("eval_loss")}


def run_hf_padded(artifact: Path, model: Path, out: Path, steps: int, batch: int, bf16: bool) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    files = sorted(str(p) for p in (artifact / "data").glob("train-*.parquet"))
    ds = load_dataset("parquet", data_files=files, split="train").select_columns(["input_ids", "labels"])
    ds = ds.map(lambda r: {"attention_mask": [1] * len(r["input_ids"])})
    tok = AutoTokenizer.from_pretrained(model)
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    collator = Counting(DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=3e-4, lr_scheduler_type="cosine", warmup_steps=0.03, bf16=bf16,
                             save_strategy="no", report_to=[], logging_steps=10, seed=42, disable_tqdm=True,
                             use_cpu=not torch.cuda.is_available())
    metrics = Trainer(model=net, args=args, train_dataset=ds, data_collator=collator).train().metrics
    seconds = metrics["train_runtime"]
    return {"run": "HF Trainer (padded batches)", "tokens": collator.real, "seconds": round(seconds, 2),
            "tokens_per_second": round(collator.real / seconds, 1)}


def run_dsc_dpo(artifact: Path, model: Path, out: Path, steps: int, precision: str) -> dict:
    from dsc.runtime.train import train

    started = time.perf_counter()
    result = train(artifact, model=str(model), out=out, method="dpo", overrides=[
        f"max_steps={steps}", "batch_size=4", "learning_rate=5e-5", f"precision={precision}", "max_length=2048",
        "logging_steps=5", "save_steps=100000", "lora.target_modules=all-linear"])
    return {"run": "dsc train --method dpo (TRL, LoRA)", "steps": result.metrics["global_step"],
            "train_loss": result.metrics.get("train_loss"), "eval_loss": result.metrics.get("eval_loss"),
            "seconds": round(time.perf_counter() - started, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60, help="SFT steps of each run (dsc and the baseline)")
    ap.add_argument("--dpo-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rows", type=int, default=3000, help="generated SFT conversations")
    ap.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--allow-cpu", action="store_true", help="smoke-test the script on CPU with a tiny model")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        import torch
    except ImportError:
        fail("torch is not installed")
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        fail("no CUDA device (torch.cuda.is_available() is False): this check needs one GPU; "
             "--allow-cpu smoke-tests the script itself")
    if cuda:
        if not torch.cuda.is_bf16_supported():
            fail(f"{torch.cuda.get_device_name(0)} has no bf16")
        sizes = dict(hidden=768, layers=12, vocab=8000, rows=args.rows)
        precision, steps, dpo_steps, batch = "bf16", args.steps, args.dpo_steps, args.batch_size
        print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    else:
        sizes = dict(hidden=64, layers=2, vocab=600, rows=min(args.rows, 120))
        precision, steps, dpo_steps, batch = "fp32", min(args.steps, 3), min(args.dpo_steps, 2), 4
        print("gpu_check: --allow-cpu: a smoke test of the script, not a measurement", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        sft, dpo, model = prepare(work, **sizes)
        print(f"prepared in {time.perf_counter() - started:.0f} s: model {model}, SFT {sft}, DPO {dpo}", flush=True)
        results = [run_hf_padded(sft, model, work / "runs" / "hf", steps, batch, bf16=precision == "bf16"),
                   run_dsc_sft(sft, model, work / "runs" / "sft", steps, batch, precision)]
        results[1]["speedup"] = round(results[1]["tokens_per_second"] / results[0]["tokens_per_second"], 2)
        results.append(run_dsc_dpo(dpo, model, work / "runs" / "dpo", dpo_steps, precision))
    for r in results:
        print(json.dumps(r), flush=True)
    sft_run = results[1]
    print(f"SFT: dsc (packing) {sft_run['tokens_per_second']:.0f} tokens/s vs HF padded "
          f"{results[0]['tokens_per_second']:.0f} tokens/s (x{sft_run['speedup']}); eval loss "
          f"{sft_run['eval_loss']}; DPO {results[2]['steps']} steps, loss {results[2]['train_loss']}; "
          f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
