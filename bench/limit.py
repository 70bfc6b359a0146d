"""The limit: the fast tokenizer alone, batched, on texts rendered beforehand.

No template rendering, no masks, no JSON parsing, no writing: only `Tokenizer.encode_batch` of
the `tokenizers` library over the already-rendered texts. Only the encode calls are timed.

    python bench/limit.py render --corpus corpus.jsonl --tokenizer ./tokenizer --out rendered.parquet
    python bench/limit.py run --texts rendered.parquet --tokenizer ./tokenizer [--batch-size 1000]

Threads: `encode_batch` uses the Rayon pool; set RAYON_NUM_THREADS and TOKENIZERS_PARALLELISM=true
(run.py does) to choose 1 or 2.
"""
from __future__ import annotations

import time

_T_SCRIPT = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import emit, set_offline  # noqa: E402


def render(corpus: Path | str, tokenizer_dir: Path | str, out: Path | str, batch_size: int = 1000) -> Path:
    """Render every conversation with the tokenizer's chat template (exactly the text the
    baseline tokenises) into a one-column parquet file, streaming."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    schema = pa.schema([("text", pa.large_string())])
    with pq.ParquetWriter(tmp, schema) as writer, open(corpus, encoding="utf-8") as f:
        batch: list[list[dict]] = []

        def flush() -> None:
            texts = tokenizer.apply_chat_template(batch, tokenize=False)
            writer.write_table(pa.table({"text": pa.array(texts, pa.large_string())}))
            batch.clear()

        for line in f:
            if line.strip():
                batch.append(json.loads(line)["messages"])
                if len(batch) == batch_size:
                    flush()
        if batch:
            flush()
    tmp.replace(out)
    return out


def run_limit(texts: Path | str, tokenizer_dir: Path | str, batch_size: int = 1000) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    t: dict[str, float] = {"imported": time.time()}
    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    t["tokenizer_loaded"] = time.time()
    rows = tokens = 0
    encode_s = 0.0
    first_row = None
    for rb in pq.ParquetFile(texts).iter_batches(batch_size=batch_size, columns=["text"]):
        batch = rb.column(0).to_pylist()
        t0 = time.time()
        # add_special_tokens=False, as apply_chat_template(tokenize=True) does: the special
        # tokens are in the rendered text.
        encs = tok.encode_batch(batch, add_special_tokens=False)
        t1 = time.time()
        encode_s += t1 - t0
        first_row = first_row or t1
        rows += len(batch)
        tokens += sum(len(e.ids) for e in encs)
    t["done"] = time.time()
    t["first_row"] = first_row
    return {"times": t, "encode_s": encode_s, "rows": rows, "tokens": tokens, "supervised": None}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="render the corpus once (not timed)")
    r.add_argument("--corpus", type=Path, required=True)
    r.add_argument("--tokenizer", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    x = sub.add_parser("run", help="time the bare tokenizer on rendered texts")
    x.add_argument("--texts", type=Path, required=True)
    x.add_argument("--tokenizer", type=Path, required=True)
    x.add_argument("--batch-size", type=int, default=1000)
    a = p.parse_args(argv)
    set_offline()
    if a.cmd == "render":
        render(a.corpus, a.tokenizer, a.out)
        return
    res = run_limit(a.texts, a.tokenizer, a.batch_size)
    res["times"]["script"] = _T_SCRIPT
    emit(res)


if __name__ == "__main__":
    main()
