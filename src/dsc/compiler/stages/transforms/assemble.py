"""Prompt assembly: turns prepended (or appended) to every trajectory, from inline text or
files, each a sandboxed Jinja template over the record and over lookup sources joined by a key.

NAT stores trajectories without their instruction and question; its loader prepends them
(`data/utils.py::load_data_with_prompts`). The same, as a spec:

    sources:
      questions: {path: data/nat/strategyqa_questions.jsonl, lookup: id}   # joined, not emitted
    assemble:
      question: lookup.questions.question          # what "the question" is (inference, decontamination)
      prepend:
        - {role: user, file: prompts/strategyqa_instruction.txt}
        - {role: assistant, content: "I've understood your instruction, start please."}
        - {id: question, role: user, content: "Question: {{ lookup.questions.question }}."}

A template sees the raw row's fields at the top level (`{{ id }}`, `{{ info.f1 }}`), `record`
(id, group), `meta`, `messages`, and `lookup.<source>`: the lookup row whose key (the lookup
source's `lookup:` field) equals the record's join field — by default the field of the same
name in the raw row, or the path given in `join: {<source>: <path>}`. A record whose join key
is missing, or has no row in the lookup table, goes to quarantine.

Assembled turns are not supervised unless a turn says `loss: true`. Prepended turns go after the
record's leading system messages.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsc.compiler.stages.transforms.common import add_step, get_field, lookup_refs, render_bounded, render_text
from dsc.core.sandbox import compile_text
from dsc.record import MISSING, BadRow, Conversation, Message, get_path
from dsc.spec.sections import AssembleSpec, Turn

# A placeholder the runtime fills in with the user's question at inference time.
QUESTION_PLACEHOLDER = "{{ question }}"


@dataclass(frozen=True)
class ResolvedTurn:
    role: str
    text: str  # the Jinja source (file content for `file:` turns)
    loss: bool | None
    id: str | None
    inference: str | None
    where: str  # for messages: "assemble.prepend[2]"


@dataclass
class Joiner:
    """Lookup tables and, per lookup, the record field whose value is the key to join on."""

    tables: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # lookup → key → row
    join: dict[str, str] = field(default_factory=dict)  # lookup → record field path

    def joined(self, conv: Conversation, names: list[str]) -> dict[str, Any]:
        """The lookup rows of this record: BadRow when a join key is missing or unknown."""
        from dsc.compiler.stages.read.sources import key_str

        out: dict[str, Any] = {}
        for name in names:
            path = self.join.get(name)
            if not path:
                raise BadRow(f"lookup '{name}': no join field")
            value = get_field(conv, path)
            if value is MISSING or value is None:
                raise BadRow(f"lookup '{name}' joins on field '{path}', which this row does not have")
            try:
                key = key_str(value)
            except ValueError as e:
                raise BadRow(f"lookup '{name}': join field '{path}' {e}") from None
            row = self.tables.get(name, {}).get(key)
            if row is None:
                raise BadRow(f"lookup '{name}' has no row with key {key!r} (joined on '{path}')")
            out[name] = row
        return out


@dataclass
class Assembler:
    """An AssembleSpec with its files read (once, before workers fork)."""

    spec: AssembleSpec
    prepend: list[ResolvedTurn]
    append: list[ResolvedTurn]
    joiner: Joiner = field(default_factory=Joiner)

    def lookups_used(self) -> list[str]:
        names: set[str] = set()
        for t in [*self.prepend, *self.append]:
            names |= lookup_refs(t.text)
        names |= set(path_lookups(self.spec.question))
        return sorted(names)


def path_lookups(path: str | None) -> list[str]:
    """The lookup a field path reads (`lookup.questions.question` → ['questions'])."""
    if path and path.startswith("lookup.") and len(path.split(".")) > 1:
        return [path.split(".")[1]]
    return []


def join_paths(names: list[str], explicit: dict[str, str], lookup_keys: dict[str, str]) -> dict[str, str]:
    """Per lookup: the spec's `join` path, else the field named like the lookup's key field."""
    return {n: explicit.get(n, lookup_keys.get(n, "")) for n in names}


def _field_text(text: str, file: str, path: str) -> str:
    """The string at `path` in a JSON file (a JSONL file: the list of its lines), exactly as stored."""
    try:
        data: Any = ([json.loads(line) for line in text.splitlines() if line.strip()]
                     if file.lower().endswith(".jsonl") else json.loads(text))
    except json.JSONDecodeError as e:
        raise ValueError(f"prompt file '{file}' is not valid JSON: {e.msg} (line {e.lineno})") from None
    value = get_path(data, path)
    if value is MISSING:
        raise ValueError(f"prompt file '{file}' has no field '{path}'")
    if not isinstance(value, str):
        raise ValueError(f"field '{path}' of prompt file '{file}' is {type(value).__name__}, not text")
    return value


def read_turns(turns: list[Turn], base_dir: Path, section: str) -> list[ResolvedTurn]:
    """Turn specs → resolved turns; ValueError naming the file when one cannot be read or parsed."""
    out = []
    for i, t in enumerate(turns):
        where = f"assemble.{section}[{i}]"
        if t.file is not None:
            p = Path(base_dir) / t.file
            try:
                text = p.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ValueError(f"prompt file '{t.file}' does not exist (relative to {base_dir})") from None
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"cannot read prompt file '{t.file}': {e}") from None
            if t.field is not None:
                text = _field_text(text, t.file, str(t.field))  # `field: 0`, a list index, is the path "0"
            try:
                compile_text(text)
            except ValueError as e:
                raise ValueError(f"prompt file '{t.file}': {e}") from None
        else:
            assert t.content is not None
            text = t.content
        out.append(ResolvedTurn(t.role, text, t.loss, t.id, t.inference, where))
    return out


def make_assembler(spec: AssembleSpec, base_dir: Path) -> Assembler:
    return Assembler(spec, read_turns(spec.prepend, base_dir, "prepend"), read_turns(spec.append, base_dir, "append"))


def leading_system(messages: list[Message]) -> int:
    n = 0
    while n < len(messages) and messages[n].role == "system":
        n += 1
    return n


def apply_assemble(conv: Conversation, asm: Assembler) -> dict[str, int]:
    """Insert the assembled turns in place; returns the message index of each turn with an id."""
    from dsc.compiler.stages.transforms.common import template_context

    ctx = template_context(conv, asm.joiner.joined(conv, asm.lookups_used()))
    pre = [Message(t.role, render_text(t.text, ctx, t.where), loss=t.loss) for t in asm.prepend]
    post = [Message(t.role, render_text(t.text, ctx, t.where), loss=t.loss) for t in asm.append]
    at = leading_system(conv.messages)
    conv.messages[at:at] = pre
    conv.messages.extend(post)
    positions = {t.id: at + i for i, t in enumerate(asm.prepend) if t.id}
    n = len(conv.messages)
    positions.update({t.id: n - len(post) + i for i, t in enumerate(asm.append) if t.id})
    add_step(conv, "assemble")
    return positions


def question_of(conv: Conversation, joiner: Joiner | None, path: str | None) -> str | None:
    """The record's question: the value at `path` in the template context (lookups joined), else
    the first user message's content."""
    from dsc.compiler.stages.transforms.common import template_context
    from dsc.record import walk

    if path:
        ctx = template_context(conv, joiner.joined(conv, path_lookups(path)) if joiner is not None else None)
        value = walk(ctx, path.split("."))
        if value is MISSING or value is None:
            raise BadRow(f"question field '{path}' is missing")
        return str(value)
    first = next((m for m in conv.messages if m.role == "user"), None)
    return first.content if first is not None else None


def inference_turns(asm: Assembler) -> list[dict[str, Any]]:
    """The prepended turns as they are at inference time: each turn's `inference` text, else the
    turn rendered with the question path standing for `{{ question }}`. ValueError when a turn
    reads anything else of the record (it is unknown at inference time)."""
    import jinja2

    ctx: dict[str, Any] = {}
    if asm.spec.question:
        node = ctx
        parts = asm.spec.question.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = QUESTION_PLACEHOLDER
    out = []
    for t in asm.prepend:
        if t.inference is not None:
            text = t.inference
        else:
            try:
                text = render_bounded(t.text, ctx)
            except jinja2.UndefinedError as e:
                hint = ("" if asm.spec.question else " (set `assemble.question` to the field that holds the question)")
                raise ValueError(f"{t.where} reads something only a training row has ({e.message}); "
                                 f"give the turn an `inference:` text with {{{{ question }}}}{hint}") from None
        out.append({"role": t.role, "content": text})
    return out
