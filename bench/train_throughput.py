"""Training throughput on CPU: `dsc train` with packing against an HF `Trainer` with padded batches.

    python bench/train_throughput.py --artifact DIR --model DIR [--steps 100 --batch-size 16]

Same artifact rows (the stored `input_ids`/`labels` of the train split), same model, same batch
size (rows per step), same optimiser settings, full fine-tuning, one torch thread. Reports, per
run, non-padding tokens per second of training and the share of non-padding tokens in the
batches the model saw. dsc's packing flattens each batch into one sequence with restarting
position ids (no pad token at all); the baseline pads each batch to its longest row
(`DataCollatorForSeq2Seq`, what HF fine-tuning scripts use).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def run_dsc(artifact: Path, model: Path, steps: int, batch_size: int, lr: float) -> dict:
    from dsc.runtime.train import train

    with tempfile.TemporaryDirectory() as out:
        result = train(artifact, model=str(model), out=Path(out) / "run", overrides=[
            "full=true", "packing=true", f"max_steps={steps}", f"batch_size={batch_size}",
            f"learning_rate={lr}", "save_steps=100000", "eval_split=null", "logging_steps=1000"])
    m = result.metrics
    return {"run": "dsc train (packing)", "tokens": m["tokens_seen"], "seconds": round(m["train_runtime"], 2),
            "tokens_per_second": round(m["tokens_seen"] / m["train_runtime"], 1), "non_pad_share": 1.0}


class CountingCollator:
    """DataCollatorForSeq2Seq, counting real and padded tokens of every batch it makes."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorForSeq2Seq

        self.inner = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        self.real = self.total = 0

    def __call__(self, features):
        batch = self.inner(features)
        self.real += int(batch["attention_mask"].sum())
        self.total += int(batch["attention_mask"].numel())
        return batch


def run_hf(artifact: Path, model: Path, steps: int, batch_size: int, lr: float) -> dict:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    files = sorted(str(p) for p in (artifact / "data").glob("train-*.parquet"))
    ds = load_dataset("parquet", data_files=files, split="train").select_columns(["input_ids", "labels"])
    ds = ds.map(lambda r: {"attention_mask": [1] * len(r["input_ids"])})
    tokenizer = AutoTokenizer.from_pretrained(model)
    net = AutoModelForCausalLM.from_pretrained(model)
    collator = CountingCollator(tokenizer)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size, max_steps=steps,
                                 learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 20),
                                 save_strategy="no", report_to=[], logging_steps=1000, use_cpu=True,
                                 seed=42, disable_tqdm=True)
        trainer = Trainer(model=net, args=args, train_dataset=ds, data_collator=collator)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    return {"run": "HF Trainer (padded batches)", "tokens": collator.real, "seconds": round(seconds, 2),
            "tokens_per_second": round(collator.real / seconds, 1),
            "non_pad_share": round(collator.real / collator.total, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--dsc-first", action="store_true", help="run dsc before the baseline (order check)")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(1)
    runs = [run_hf, run_dsc][::-1 if args.dsc_first else 1]
    rows = [fn(args.artifact, args.model, args.steps, args.batch_size, args.lr) for fn in runs][::-1 if args.dsc_first else 1]
    rows[1]["speedup"] = round(rows[1]["tokens_per_second"] / rows[0]["tokens_per_second"], 2)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
