"""Regenerate this example's data, tokenizer and tiny model config (what `make demo` runs on).

    python examples/nat-miniature/make.py

The files are committed, so the demo needs none of this; it is here so that they can be made
again exactly: the miniature NAT task of experiments/nat_miniature (seed 0: 600 training
questions, 4 attempts each, labelled by the exact-match scorer; 300 held-out test questions),
its byte-level BPE tokenizer, and the config of a 2-layer Llama with no weights, which
`dsc train` initialises from its seed.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPERIMENT = HERE.parents[1] / "experiments" / "nat_miniature"
sys.path.insert(0, str(EXPERIMENT))

import run as experiment  # noqa: E402
import task as nat_task  # noqa: E402


def main() -> None:
    data = HERE / "data"
    shutil.rmtree(data, ignore_errors=True)
    nat_task.generate(data, seed=experiment.DATA_SEED)
    (data / "instruction.txt").unlink(missing_ok=True)  # the NAT arm's spec does not prepend it
    size = experiment.ModelSize()
    experiment.make_tokenizer(HERE / "tokenizer", nat_task.corpus_lines(data), size.vocab_size)
    model = HERE / "tiny-llama"
    shutil.rmtree(model, ignore_errors=True)
    made = experiment.make_model(HERE / ".tmp-model", HERE / "tokenizer", size, seed=0)
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(made / name, model / name)
    shutil.rmtree(made)
    print(json.dumps({p.name: p.stat().st_size for p in sorted(HERE.rglob("*")) if p.is_file()}, indent=1))


if __name__ == "__main__":
    main()
