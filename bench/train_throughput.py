"""Training throughput on CPU: `dsc train` with packing against an HF `Trainer` with padded batches.

    python bench/train_throughput.py --artifact DIR --model DIR [--steps 100 | --epochs 1] [--batch-size 16]
        [--packing step|dataset] [--dsc-batch-size N] [--pack-length N] [--dsc-first]
    python bench/train_throughput.py --prepare fireact --work DIR   # prints --artifact/--model

`--prepare fireact` builds the length spread of real agent data: FireAct's multitask trajectories
(../shared/data/fireact, 1.3k conversations, 67-1,287 tokens), ChatML, tokenised with a byte-level
BPE (vocab 8k) trained on their own text, and a tiny Llama (hidden 128, 2 layers) built from code.

Same artifact rows (the stored `input_ids`/`labels` of the train split), same model, same batch
size (rows per step), same optimiser settings, full fine-tuning, one torch thread. Reports, per
run, non-padding tokens per second of training (`train_runtime`, the Trainer's own clock, in
both; and per CPU second of the training loop, steadier on a shared machine) and the share of
non-padding tokens in the batches the model saw (both counted by the same wrapper around each
run's collator). dsc packs each step's rows into bins of at most
`pack_length` tokens (default: the artifact's tokenize.max_length, else the batch's longest row),
one sequence per bin, the bins padded to the longest; the baseline pads each batch to its
longest row (`DataCollatorForSeq2Seq`, what HF fine-tuning scripts use).

`--packing dataset` runs dsc with `packing: dataset` instead: the train split packed into bins once
(default `pack_length`: the artifact's tokenize.max_length, else max_length), a step of
`--dsc-batch-size` bins. Its steps then hold a different number of rows than the baseline's, so
compare with `--epochs` (both runs train on every train row exactly that many times; `rows` in
the output counts the rows each run's batches held).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path


def cpu_clock():
    """A TrainerCallback timing the training loop in process CPU seconds (one torch thread: the
    compute, less sensitive than wall time to other jobs on a shared machine)."""
    from transformers import TrainerCallback

    class CpuClock(TrainerCallback):
        seconds = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.process_time()

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.process_time() - self.started

    return CpuClock()


class CountingCollator:
    """Wraps a collator, counting the real (row) tokens and all tokens of every batch it makes."""

    def __init__(self, inner):
        self.inner = inner
        self.real = self.total = self.rows = 0

    def __call__(self, features):
        batch = self.inner(features)
        self.real += sum(len(f["input_ids"]) for f in features)
        # a bin of `packing: dataset` holds one row per restart of its position_ids
        self.rows += sum(list(f["position_ids"]).count(0) if "position_ids" in f else 1 for f in features)
        self.total += int(batch["input_ids"].numel())
        return batch

    def row(self, name: str, seconds: float, cpu_seconds: float) -> dict:
        return {"run": name, "rows": self.rows, "tokens": self.real, "seconds": round(seconds, 2),
                "tokens_per_second": round(self.real / seconds, 1), "cpu_seconds": round(cpu_seconds, 2),
                "tokens_per_cpu_second": round(self.real / cpu_seconds, 1),
                "non_pad_share": round(self.real / self.total, 4)}


def length_args(steps: int, epochs: float | None) -> dict:
    """How long both runs train: `epochs` over the train split when given, else `steps` steps."""
    return {"num_train_epochs": epochs, "max_steps": -1} if epochs else {"max_steps": steps}


def run_dsc(artifact: Path, model: Path, steps: int, batch_size: int, lr: float, epochs: float | None = None,
            pack_length: int | None = None, packing: str = "step") -> dict:
    from dsc.runtime.train import prepare_training, resolve_pack_length

    # (max_steps=null: the artifact's spec may set max_steps, which would win over epochs)
    length = [f"epochs={epochs}", "max_steps=null"] if epochs else [f"max_steps={steps}"]
    overrides = ["full=true", f"packing={'dataset' if packing == 'dataset' else 'true'}", *length,
                 f"batch_size={batch_size}", f"learning_rate={lr}", "save_steps=100000", "eval_split=null",
                 "logging_steps=1000"]
    if pack_length is not None:
        overrides.append(f"pack_length={pack_length}")
    with tempfile.TemporaryDirectory() as out:
        clock = cpu_clock()
        session = prepare_training(artifact, model=str(model), out=Path(out) / "run", overrides=overrides,
                                   callbacks=[clock])
        counter = session.trainer.data_collator = CountingCollator(session.trainer.data_collator)
        result = session.run()
    bins = resolve_pack_length(session.artifact, session.config) or "longest row"
    what = f"packing: dataset, {batch_size} bins a step" if packing == "dataset" else "packing"
    return counter.row(f"dsc train ({what}, bins of {bins})", result.metrics["train_runtime"], clock.seconds)


def run_hf(artifact: Path, model: Path, steps: int, batch_size: int, lr: float, epochs: float | None = None) -> dict:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    files = sorted(str(p) for p in (artifact / "data").glob("train-*.parquet"))
    ds = load_dataset("parquet", data_files=files, split="train").select_columns(["input_ids", "labels"])
    ds = ds.map(lambda r: {"attention_mask": [1] * len(r["input_ids"])})
    tokenizer = AutoTokenizer.from_pretrained(model)
    net = AutoModelForCausalLM.from_pretrained(model)
    collator = CountingCollator(DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch_size, **length_args(steps, epochs),
                                 learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=0.05,
                                 save_strategy="no", report_to=[], logging_steps=1000, use_cpu=True,
                                 seed=42, disable_tqdm=True)
        clock = cpu_clock()
        trainer = Trainer(model=net, args=args, train_dataset=ds, data_collator=collator, callbacks=[clock])
        metrics = trainer.train().metrics
    return collator.row("HF Trainer (padded batches)", metrics["train_runtime"], clock.seconds)


FIREACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "fireact" / "gpt_format__multitask.jsonl"


def prepare_fireact(work: Path) -> tuple[Path, Path]:
    """The FireAct artifact and tiny model described in the module doc, under `work`."""
    import sys

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from dsc.compiler.engine.driver import build

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny import CHATML_WITH_GENERATION, SPECIAL_TOKENS

    texts = [m["content"] for line in FIREACT.read_text(encoding="utf-8").splitlines()
             for m in json.loads(line)["messages"]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainer=trainers.BpeTrainer(
        vocab_size=8000, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>",
                                   pad_token="<pad>")
    fast.chat_template = CHATML_WITH_GENERATION
    fast.save_pretrained(work / "tokenizer")
    (work / "fireact.yaml").write_text(
        f"dsc: 1\nname: fireact-multitask\nseed: 42\nsources:\n  fireact: {{path: {FIREACT}, format: openai}}\n"
        "template: chatml\nloss: assistant\ntokenize: {tokenizer: tokenizer}\nsplit: {validation: 0.05, by: group}\n",
        encoding="utf-8")
    artifact = Path(build(work / "fireact.yaml", work / "build", cache=False).out_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(work / "model")
    fast.save_pretrained(work / "model")
    return artifact, work / "model"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", type=Path)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--prepare", choices=["fireact"], help="build a bench artifact and model, print their paths")
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".work" / "train-throughput")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--epochs", type=float, default=None, help="train both runs this many epochs (wins over --steps)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--packing", choices=["step", "dataset"], default="step", help="dsc's packing mode")
    ap.add_argument("--dsc-batch-size", type=int, default=None, help="dsc's batch_size (default: --batch-size; "
                    "bins with --packing dataset)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--pack-length", type=int, default=None, help="dsc's pack_length (default: its own rule)")
    ap.add_argument("--dsc-first", action="store_true", help="run dsc before the baseline (order check)")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.prepare:
        artifact, model = prepare_fireact(args.work.resolve())
        print(f"--artifact {artifact} --model {model}")
        return
    if args.artifact is None or args.model is None:
        ap.error("--artifact and --model are required (or --prepare)")
    import torch

    torch.set_num_threads(1)
    runs = [functools.partial(run_hf, batch_size=args.batch_size),
            functools.partial(run_dsc, batch_size=args.dsc_batch_size or args.batch_size, pack_length=args.pack_length,
                              packing=args.packing)][::-1 if args.dsc_first else 1]
    rows = [fn(args.artifact, args.model, args.steps, lr=args.lr, epochs=args.epochs)
            for fn in runs][::-1 if args.dsc_first else 1]
    rows[1]["speedup"] = round(rows[1]["tokens_per_second"] / rows[0]["tokens_per_second"], 2)
    rows[1]["speedup_cpu"] = round(rows[1]["tokens_per_cpu_second"] / rows[0]["tokens_per_cpu_second"], 2)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
