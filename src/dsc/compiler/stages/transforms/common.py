"""Pieces shared by the transform stages: the strict spec base, row selectors (`where:`),
field paths over a record, the sandboxed text-template environment and seeded hashing.

Nothing here imports `dsc.spec.model` (which imports the stage modules), so every stage
module can use it.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.nodes

from dsc.core.sandbox import bounded_render, compile_text
from dsc.core.sandbox import text_environment as _env
from dsc.record import BadRow, Conversation, Message, walk

META_ATTRS = ("source", "task", "method", "capability", "success", "score", "label")


# ---------------------------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Field paths over a record
# ---------------------------------------------------------------------------------------------

def get_field(conv: Conversation, path: str) -> Any:
    """The value of a field path over a record (MISSING when absent):

    - `record.id`, `record.group`: the record's own id and group;
    - `messages.<i>.<key>`: a message (negative indices count from the end: `messages.-1.content`);
    - `meta.<attr>` for the record's meta attributes (source, task, method, capability, success,
      score, label); `meta.extra.<path>` or `meta.<other>`: the raw row's other fields;
    - anything else: a path into the raw row's other fields (`info.reward`, `id`)."""
    parts = path.split(".")
    head = parts[0]
    if head == "record" and len(parts) == 2 and parts[1] in ("id", "group"):
        return getattr(conv, parts[1])
    if head == "messages":
        return walk([m.to_dict() for m in conv.messages], parts[1:])
    if head == "meta" and len(parts) >= 2:
        if parts[1] in META_ATTRS:
            return walk(getattr(conv.meta, parts[1]), parts[2:])
        if parts[1] == "extra":
            return walk(conv.meta.extra, parts[2:])
        return walk(conv.meta.extra, parts[1:])
    if isinstance(conv.meta.extra, Mapping) and path in conv.meta.extra:
        return conv.meta.extra[path]  # a raw key that itself contains dots
    return walk(conv.meta.extra, parts)


def template_context(conv: Conversation, lookup: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a text template sees: the raw row's fields at the top level (`{{ id }}`,
    `{{ info.f1 }}`), plus `record` (id, group), `meta`, `messages` and `lookup.<source>`."""
    ctx: dict[str, Any] = dict(conv.meta.extra) if isinstance(conv.meta.extra, Mapping) else {}
    ctx.update({
        "record": {"id": conv.id, "group": conv.group},
        "meta": {**{a: getattr(conv.meta, a) for a in META_ATTRS}, "extra": conv.meta.extra},
        "messages": [m.to_dict() for m in conv.messages],
        "lookup": dict(lookup or {}),
    })
    return ctx


# ---------------------------------------------------------------------------------------------
# Text templates (prompt turns, responses): sandboxed Jinja, undefined names are errors
# ---------------------------------------------------------------------------------------------


def render_bounded(source: str, context: Mapping[str, Any]) -> str:
    """A text template rendered under the sandbox's limits (Jinja errors propagate)."""
    out: list[str] = []
    bounded_render(_env(), compile_text(source).generate(**context), out)
    return "".join(out)


def render_text(source: str, context: Mapping[str, Any], what: str) -> str:
    """Render a text template; a name the row does not have → BadRow naming it."""
    try:
        return render_bounded(source, context)
    except jinja2.UndefinedError as e:
        raise BadRow(f"{what}: {e.message}") from None
    except jinja2.TemplateError as e:
        raise BadRow(f"{what}: {e}") from None


def lookup_refs(source: str) -> set[str]:
    """Lookup sources a template reads (`lookup.questions...` or `lookup['questions']`)."""
    tree = _env().parse(source)
    out: set[str] = set()
    for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        if isinstance(node.node, jinja2.nodes.Name) and node.node.name == "lookup":
            if isinstance(node, jinja2.nodes.Getattr):
                out.add(node.attr)
            elif isinstance(node.arg, jinja2.nodes.Const) and isinstance(node.arg.value, str):
                out.add(node.arg.value)
    return out


# ---------------------------------------------------------------------------------------------
# Seeded, order-independent hashing
# ---------------------------------------------------------------------------------------------


def unit_hash(*parts: Any) -> float:
    """A seeded uniform number in [0, 1) for a key; the same key always gives the same number."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def rank_key(seed: int, purpose: str, key: str) -> str:
    """Sort key of a seeded hash rank: sorting by it is a seeded shuffle that does not depend on
    which other keys are present (adding rows never reorders the others)."""
    return hashlib.sha256(f"{seed}\x1f{purpose}\x1f{key}".encode("utf-8")).hexdigest() + "\x1f" + key


# ---------------------------------------------------------------------------------------------
# Small record helpers
# ---------------------------------------------------------------------------------------------


def copy_conv(conv: Conversation, **changes: Any) -> Conversation:
    """A deep copy, so stages never mutate their input (key order of tools and extra kept: the
    template renders tools as given)."""
    out = copy.deepcopy(conv)
    for k, v in changes.items():
        setattr(out, k, v)
    return out


def add_step(conv: Conversation, step: str) -> None:
    conv.meta.provenance.steps.append(step)


def first_index(messages: list[Message], role: str) -> int | None:
    return next((i for i, m in enumerate(messages) if m.role == role), None)
