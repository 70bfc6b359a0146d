"""Train the bench tokenizer: a byte-level BPE with a ChatML template that has generation markers.

Trained offline with `tokenizers` on generated conversations (a seed range disjoint from the
corpora's), wrapped in `PreTrainedTokenizerFast` and saved with `save_pretrained`, so the
baseline exercises the real `AutoTokenizer.from_pretrained(dir)` path and
`return_assistant_tokens_mask=True` works. The template is `chatml_generation.jinja` beside
this file (the single copy; it is also what the dsc spec uses).

    python bench/make_tokenizer.py --out ./tokenizer [--vocab-size 16000]
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import make_corpus

TEMPLATE_PATH = Path(__file__).resolve().parent / "chatml_generation.jinja"
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
# Training rows come from seeds no corpus uses by default, so the tokenizer has not memorised them.
_TRAIN_SEED = 1_000_003


def chat_template() -> str:
    return TEMPLATE_PATH.read_text(encoding="utf-8")


def _training_texts(rows: int) -> Iterator[str]:
    # Both corpus kinds, so JSON schemas get merges as they would in a real tokenizer.
    for tool_schemas in (0, 24):
        for messages in make_corpus.iter_conversations(rows // 2, seed=_TRAIN_SEED + tool_schemas,
                                                       tool_schemas=tool_schemas):
            for m in messages:
                yield m["content"]


def build_tokenizer(out_dir: Path | str, vocab_size: int = 16000, train_rows: int = 4000) -> Path:
    """Train, wrap and save; returns `out_dir`. Deterministic for given arguments."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # No ByteLevel post-processor: with trim_offsets it zeroes the assistant mask of replies that
    # start with a space (see ../../shared/ENVIRONMENT.md).
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_texts(train_rows), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.chat_template = chat_template()
    out_dir = Path(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--vocab-size", type=int, default=16000)
    p.add_argument("--train-rows", type=int, default=4000)
    a = p.parse_args(argv)
    build_tokenizer(a.out, a.vocab_size, a.train_rows)


if __name__ == "__main__":
    main()
