"""Pieces the bench scripts share: the child-result protocol, token counting, the dsc spec."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "

# No network here: an accidental hub lookup would otherwise hang for ~50 s.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "DSC_NO_PROGRESS": "1",
}

BENCH_DIR = Path(__file__).resolve().parent
TEMPLATE_PATH = BENCH_DIR / "chatml_generation.jinja"


def set_offline() -> None:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)


def emit(result: dict[str, Any]) -> None:
    """A child's one machine-readable line on stdout; everything else it prints is log."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def token_counts(table) -> dict[str, int]:
    """rows, tokens and supervised tokens (labels != -100) of a table with input_ids [, labels]."""
    import pyarrow.compute as pc

    out = {"rows": table.num_rows, "tokens": 0, "supervised": 0}
    if table.num_rows == 0:
        return out
    out["tokens"] = int(pc.sum(pc.list_value_length(table.column("input_ids"))).as_py() or 0)
    if "labels" in table.column_names:
        flat = pc.list_flatten(table.column("labels"))
        out["supervised"] = int(pc.sum(pc.not_equal(flat, -100)).as_py() or 0)
    return out


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def write_spec(spec_dir: Path, corpus: str = "corpus.jsonl", name: str = "bench") -> Path:
    """The dsc spec equivalent to the baseline: same template, same tokenizer, labels on assistant
    turns, nothing dropped (no validation split, no truncation at this corpus's lengths).

    Expects `spec_dir/corpus` and `spec_dir/tokenizer/`; copies the bench template beside them.
    """
    spec_dir = Path(spec_dir)
    (spec_dir / "bench_template.jinja").write_text(TEMPLATE_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    spec = spec_dir / "spec.yaml"
    spec.write_text(
        "dsc: 1\n"
        f"name: {name}\n"
        "seed: 0\n"
        "sources:\n"
        f"  corpus: {{path: {corpus}, format: openai}}\n"
        "template: bench_template.jinja\n"
        "loss: assistant\n"
        "tokenize: {tokenizer: ./tokenizer, max_length: 100000, overflow: truncate}\n"
        "split: {validation: 0.0}\n",
        encoding="utf-8",
    )
    return spec


def _dsc_train_files(out_dir: Path) -> list[Path]:
    files = sorted((Path(out_dir) / "data").glob("train-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no data/train-*.parquet in {out_dir}")
    return files


def read_dsc_train(out_dir: Path, columns: list[str] | None = None):
    """The tokenised train split of a dsc artifact as one pyarrow Table (files in name order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.concat_tables([pq.read_table(f, columns=columns) for f in _dsc_train_files(out_dir)])


def dsc_token_counts(out_dir: Path) -> dict[str, int]:
    """token_counts of a dsc artifact's train split, a batch at a time (1M rows of tokens would
    not fit in the measuring process)."""
    import pyarrow.parquet as pq

    total = {"rows": 0, "tokens": 0, "supervised": 0}
    for f in _dsc_train_files(out_dir):
        for batch in pq.ParquetFile(f).iter_batches(batch_size=4096, columns=["input_ids", "labels"]):
            for k, v in token_counts(batch).items():
                total[k] += v
    return total
