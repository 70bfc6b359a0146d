"""Helpers for the runtime tests: small artifacts written exactly to the compiler's contract.

Rows are ChatML-rendered ReAct conversations over two-number arithmetic questions, so a tiny model
can visibly learn them. Until the compiler's `build()` exists the runtime tests use these
hand-written artifacts; `test_train.py` also runs against a real build when it is available.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

from dsc.core.hashing import sha256_file
from dsc.record import Conversation, Message, Meta, Provenance
from dsc.core.canonical import canonical_json
from dsc.compiler.stages.write.artifact import ARTIFACT_FORMAT, write_manifest
from dsc.runtime.features import encode, tokenizer_sha256

from tiny import CHATML_WITH_GENERATION

END_OF_TURN = "<|im_end|>"


def row_schema():
    import pyarrow as pa

    tool_call = pa.struct([("id", pa.string()), ("name", pa.string()), ("arguments", pa.string())])
    message = pa.struct([
        ("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.list_(tool_call)),
        ("name", pa.string()), ("tool_call_id", pa.string()), ("loss", pa.bool_()), ("capability", pa.string()),
    ])
    provenance = pa.struct([("file", pa.string()), ("file_sha256", pa.string()), ("row", pa.int64()),
                            ("steps", pa.list_(pa.string()))])
    meta = pa.struct([
        ("source", pa.string()), ("task", pa.string()), ("method", pa.string()), ("capability", pa.string()),
        ("success", pa.bool_()), ("score", pa.float64()), ("label", pa.string()), ("extra", pa.string()),
        ("provenance", provenance),
    ])
    return pa.schema([
        ("id", pa.string()), ("group", pa.string()), ("messages", pa.list_(message)), ("tools", pa.string()),
        ("meta", meta), ("text", pa.string()), ("loss_spans", pa.list_(pa.list_(pa.int64()))),
        ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
    ])


def arithmetic_conversation(i: int, rng: random.Random) -> Conversation:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    messages = [
        Message("user", f"What is {a} plus {b}?", loss=False),
        Message("assistant", f"Thought: I need to calculate {a} plus {b}.\nAction: calculate[{a} + {b}]"),
        Message("user", f"Observation: {a + b}", loss=False),
        Message("assistant", f"Thought: The answer is {a + b}.\nAction: finish[{a + b}]"),
    ]
    meta = Meta(source="arith", provenance=Provenance(file="arith.jsonl", file_sha256="0" * 64, row=i),
                task="arith", method="react", success=True)
    return Conversation(id=f"arith-{i}", group=f"q{i}", messages=messages, meta=meta)


def render_chatml(conv: Conversation) -> tuple[str, list[list[int]]]:
    """The tiny ChatML template's text and its assistant spans (content + end of turn)."""
    text, spans = "", []
    for m in conv.messages:
        text += f"<|im_start|>{m.role}\n"
        if m.role == "assistant":
            start = len(text)
            text += m.content + END_OF_TURN
            spans.append([start, len(text)])
            text += "\n"
        else:
            text += m.content + END_OF_TURN + "\n"
    return text, spans


def tokenizer_sha(tokenizer_dir: Path) -> str:
    return tokenizer_sha256(tokenizer_dir)


def make_artifact(out: Path, *, n_train: int = 48, n_validation: int = 8, tokenizer_dir: Path | None = None,
                  stored_labels: str = "spans", spec: dict[str, Any] | None = None, seed: int = 0,
                  inference: dict[str, Any] | None = None) -> Path:
    """Write an artifact directory. With `tokenizer_dir` the rows are tokenised; `stored_labels`
    "last_turn" then supervises only the final assistant turn in the stored labels (so a test can
    tell stored labels from labels re-derived from the spans)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    tok = None
    if tokenizer_dir is not None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    counts = {"train": n_train, "validation": n_validation}
    index = 0
    for split, n in counts.items():
        if n == 0:
            continue
        rows = []
        for _ in range(n):
            conv = arithmetic_conversation(index, rng)
            index += 1
            text, spans = render_chatml(conv)
            row = conv.to_dict()
            row.update(text=text, loss_spans=spans, input_ids=None, labels=None)
            if tok is not None:
                use = spans if stored_labels == "spans" else spans[-1:]
                (ids,), (labels,), _ = encode(tok, [text], [use])
                row.update(input_ids=ids, labels=labels)
            rows.append(row)
        table = pa.Table.from_pylist(rows, schema=row_schema())
        if tok is None:
            table = table.drop_columns(["input_ids", "labels"])
        pq.write_table(table, out / "data" / f"{split}-00000-of-00001.parquet")
    (out / "chat_template.jinja").write_text(CHATML_WITH_GENERATION, encoding="utf-8")
    files = {f"data/{p.name}": sha256_file(p) for p in sorted((out / "data").glob("*.parquet"))}
    written = {s: n for s, n in counts.items() if n}
    write_manifest(out, {
        "format": ARTIFACT_FORMAT,
        "name": "arith",
        "dsc_version": "0",
        "spec": spec or {"dsc": 1, "name": "arith"},
        "spec_sha256": hashlib.sha256(f"{n_train}-{n_validation}-{seed}-{stored_labels}".encode()).hexdigest(),
        "inputs": [],
        "template": {"ref": "tiny-chatml", "sha256": hashlib.sha256(CHATML_WITH_GENERATION.encode()).hexdigest(),
                     "end_of_turn": END_OF_TURN},
        "tokenizer": ({"ref": str(tokenizer_dir), "sha256": tokenizer_sha(tokenizer_dir), "max_length": 4096,
                       "overflow": "drop"} if tokenizer_dir is not None else None),
        "libraries": {},
        "inference": inference or {"messages": [{"role": "user", "content": "{{ question }}"}], "label": None},
        "selection": {},
        "counts": {"read": {"arith": n_train + n_validation}, "quarantined": 0, "bad_rows": 0,
                   "quarantine_reasons": {}, "duplicates_removed": {}, "written": written,
                   "per_source": {"arith": written}, "per_label": {}, "per_capability": {}, "dropped": {},
                   "supervised_chars": {s: 0 for s in written}, "supervised_tokens": None, "dropped_too_long": 0,
                   "truncated": 0, "special_tokens_in_content": {}},
        "files": files,
    })
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(canonical_json(r) + "\n" for r in rows), encoding="utf-8")
    return path
