"""Tiny tokenizers and models built from code, offline, for tests (no weights are committed).

A byte-level BPE trained with `tokenizers` on generated agent-style text, wrapped in
`PreTrainedTokenizerFast` and saved, so tests exercise the real `from_pretrained(dir)` path.
"""
from __future__ import annotations

import random
from pathlib import Path

SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]

# A ChatML template with generation markers, so `return_assistant_tokens_mask` works.
CHATML_WITH_GENERATION = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "the a of to in is was who what when where which question answer search finish thought action "
    "observation episode finished reward true false yes no film director born city river country "
    "year team player song album band state university president capital population first second "
    "I need to find then so it be that for on with as by at from this are were his her their "
    "calculate number one two three four five six seven eight nine ten plus minus times"
).split()


def corpus(n: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 25)))
        lines.append(
            f"Thought: {words}\nAction: search[{rng.choice(_WORDS)} {rng.choice(_WORDS)}]\n"
            f"Observation: {words.capitalize()}. {rng.randint(0, 9999)}\nAction: finish[{rng.choice(_WORDS)}]"
        )
    return lines


def make_tokenizer(out_dir: Path, vocab_size: int = 600, chat_template: str = CHATML_WITH_GENERATION) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.chat_template = chat_template
    out_dir = Path(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir


def make_model(out_dir: Path, tokenizer_dir: Path, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
