"""The baseline: what a user writes today to tokenise agent conversations with loss masks.

`datasets.load_dataset("json")`, a batched `.map` over
`tokenizer.apply_chat_template(..., return_assistant_tokens_mask=True)` that builds `labels`
(-100 outside assistant generations), then `save_to_disk`.

    python bench/baseline.py --corpus corpus.jsonl --tokenizer ./tokenizer --out OUT [--num-proc 2]

Prints one `BENCH_RESULT {json}` line: phase timings (epoch seconds, comparable with the
parent's spawn time), the time the first batch of rows was tokenised, and token counts.
"""
from __future__ import annotations

import time

_T_SCRIPT = time.time()  # before the heavy imports: import time is part of what users wait for

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import emit, set_offline, token_counts  # noqa: E402


def tokenize_batch(batch: dict[str, list], tokenizer) -> dict[str, list]:
    """The map body users write: chat template + assistant mask -> input_ids, labels."""
    enc = tokenizer.apply_chat_template(
        batch["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    labels = [
        [tok if m else -100 for tok, m in zip(ids, mask)]
        for ids, mask in zip(enc["input_ids"], enc["assistant_masks"])
    ]
    return {"input_ids": enc["input_ids"], "labels": labels}


_first_batch_marked = False


def _tokenize_batch_marked(batch: dict[str, list], tokenizer, mark_dir: str | None) -> dict[str, list]:
    # With num_proc > 1 the body runs in worker processes: each records the end of its first
    # batch in a file, and the earliest one is "first row out".
    global _first_batch_marked
    out = tokenize_batch(batch, tokenizer)
    if mark_dir and not _first_batch_marked:
        _first_batch_marked = True
        Path(mark_dir, f"first-{os.getpid()}").write_text(repr(time.time()))
    return out


def run_baseline(corpus: Path | str, tokenizer_dir: Path | str, out_dir: Path | str, num_proc: int = 1,
                 cache_dir: Path | str | None = None, batch_size: int = 1000,
                 mark_dir: Path | str | None = None) -> dict[str, Any]:
    """Run the whole baseline; returns phase timestamps (epoch s) and the saved dataset's counts."""
    t: dict[str, float] = {}
    import datasets
    from transformers import AutoTokenizer

    t["imported"] = time.time()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    t["tokenizer_loaded"] = time.time()
    ds = datasets.load_dataset("json", data_files=str(corpus), split="train",
                               cache_dir=str(cache_dir) if cache_dir else None)
    t["loaded"] = time.time()
    ds = ds.map(
        _tokenize_batch_marked,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=ds.column_names,
        fn_kwargs={"tokenizer": tokenizer, "mark_dir": str(mark_dir) if mark_dir else None},
    )
    t["mapped"] = time.time()
    ds.save_to_disk(str(out_dir))
    t["saved"] = time.time()
    return {"times": t, **token_counts(ds.data.table)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--num-proc", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="datasets cache (default: a fresh temp dir, so every run starts uncached)")
    a = p.parse_args(argv)
    set_offline()
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as tmp:
        mark_dir = Path(tmp, "marks")
        mark_dir.mkdir()
        res = run_baseline(a.corpus, a.tokenizer, a.out, a.num_proc, a.cache_dir or Path(tmp, "cache"),
                           a.batch_size, mark_dir)
        marks = [float(f.read_text()) for f in mark_dir.iterdir()]
    res["times"]["script"] = _T_SCRIPT
    res["times"]["first_row"] = min(marks) if marks else None
    emit(res)


if __name__ == "__main__":
    main()
