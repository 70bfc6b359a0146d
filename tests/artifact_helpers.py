"""Small projects (a spec and its data in a temporary directory) for the lock / verify / diff /
inspect / plan / card tests, built from the bundled FireAct excerpt."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXCERPT = REPO / "specs" / "data" / "fireact" / "gpt_format__multitask.excerpt.jsonl"

SPEC = """\
dsc: 1
name: t
seed: 7
license: mit
sources:
  chat:
    path: data/chat.jsonl
    format: openai
    tags: {{task: hotpotqa, method: react}}
    license: MIT (FireAct)
template: chatml
loss: assistant
split: {{validation: {validation}}}
max_bad_rows: 2
{extra}"""


def write_spec(root: Path, *, validation: float = 0.2, extra: str = "", name: str = "spec.yaml") -> Path:
    spec = root / name
    spec.write_text(SPEC.format(validation=validation, extra=extra))
    return spec


def make_project(root: Path, *, rows: int = 40, validation: float = 0.2, extra: str = "") -> Path:
    """A spec over the first `rows` lines of the excerpt, in `root`; returns the spec's path."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    lines = EXCERPT.read_text().splitlines()[:rows]
    (root / "data" / "chat.jsonl").write_text("\n".join(lines) + "\n")
    return write_spec(root, validation=validation, extra=extra)


def tokenize_block(tokenizer_dir: Path) -> str:
    return f"tokenize: {{tokenizer: {tokenizer_dir}}}\n"


def input_lines(root: Path) -> list[str]:
    return (root / "data" / "chat.jsonl").read_text().splitlines()


def write_input_lines(root: Path, lines: list[str]) -> None:
    (root / "data" / "chat.jsonl").write_text("\n".join(lines) + "\n")


def edit_first_answer(line: str, suffix: str = " (edited)") -> str:
    """The same row with its last assistant message changed."""
    row = json.loads(line)
    last = max(i for i, m in enumerate(row["messages"]) if m["role"] == "assistant")
    row["messages"][last]["content"] += suffix
    return json.dumps(row)


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
