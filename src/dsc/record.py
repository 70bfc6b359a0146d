"""The canonical record: every input format is normalised to a `Conversation`.

Everything after normalisation sees only these types. They are plain slotted
dataclasses (not pydantic) because they are created once per input row on the
build's hot path; validation happens in the normalisers that create them.

Arrow/parquet shape (see `ROW_SCHEMA` in `dsc.compiler.stages.write.artifact`):
- tool-call arguments are compact JSON strings (mixed argument types would
  otherwise break Arrow's type inference);
- `tools` and `meta.extra` are compact JSON strings for the same reason.

These strings keep the keys in the order the data wrote them (`dsc.core.canonical.compact_json`);
hashes (row ids, dedup keys) use the sorted spelling (`canonical_json`), so they do not depend
on that order.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dsc.core.canonical import canonical_arguments, compact_json, content_hash

ROLES = ("system", "user", "assistant", "tool")


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: str  # compact JSON string of an object, keys in the order written (`compact_json`)
    id: str | None = None

    def to_dict(self, canonical: bool = False) -> dict[str, Any]:
        """The stored shape; `canonical`: arguments spelt with sorted keys (for hashes)."""
        return {"id": self.id, "name": self.name,
                "arguments": canonical_arguments(self.arguments) if canonical else self.arguments}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ToolCall":
        return cls(name=d["name"], arguments=d["arguments"], id=d.get("id"))


@dataclass(slots=True)
class Message:
    role: str  # one of ROLES
    content: str
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    loss: bool | None = None  # None: the spec's `loss` policy decides
    capability: str | None = None

    def to_dict(self, canonical: bool = False) -> dict[str, Any]:
        """The stored shape; `canonical`: tool-call arguments spelt with sorted keys (for hashes)."""
        return {
            "role": self.role,
            "content": self.content,
            "tool_calls": [t.to_dict(canonical) for t in self.tool_calls] if self.tool_calls else None,
            "name": self.name,
            "tool_call_id": self.tool_call_id,
            "loss": self.loss,
            "capability": self.capability,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Message":
        calls = d.get("tool_calls")
        return cls(
            role=d["role"],
            content=d.get("content") or "",
            tool_calls=[ToolCall.from_dict(c) for c in calls] if calls else None,
            name=d.get("name"),
            tool_call_id=d.get("tool_call_id"),
            loss=d.get("loss"),
            capability=d.get("capability"),
        )


@dataclass(slots=True)
class Provenance:
    file: str  # path relative to the spec's directory (or hub id)
    file_sha256: str
    row: int  # 0-based row index within the file
    steps: list[str] = field(default_factory=list)  # transforms and rules applied, in order

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "file_sha256": self.file_sha256, "row": self.row, "steps": list(self.steps)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Provenance":
        return cls(file=d["file"], file_sha256=d["file_sha256"], row=d["row"], steps=list(d.get("steps") or []))


@dataclass(slots=True)
class Meta:
    source: str  # the spec's source name
    provenance: Provenance
    task: str | None = None
    method: str | None = None  # react / cot / reflexion / ...
    capability: str | None = None  # a per-source capability tag, if any
    success: bool | None = None
    score: float | None = None
    label: str | None = None  # the conditioning class
    extra: dict[str, Any] = field(default_factory=dict)  # the raw row's other fields (e.g. NAT `info`)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "task": self.task,
            "method": self.method,
            "capability": self.capability,
            "success": self.success,
            "score": self.score,
            "label": self.label,
            "extra": compact_json(self.extra),
            "provenance": self.provenance.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Meta":
        extra = d.get("extra")
        return cls(
            source=d["source"],
            provenance=Provenance.from_dict(d["provenance"]),
            task=d.get("task"),
            method=d.get("method"),
            capability=d.get("capability"),
            success=d.get("success"),
            score=d.get("score"),
            label=d.get("label"),
            extra=json.loads(extra) if isinstance(extra, str) else dict(extra or {}),
        )


@dataclass(slots=True)
class Conversation:
    id: str
    group: str
    messages: list[Message]
    meta: Meta
    tools: list[dict[str, Any]] | None = None  # JSON-schema function specs offered to the model

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "messages": [m.to_dict() for m in self.messages],
            "tools": compact_json(self.tools) if self.tools is not None else None,
            "meta": self.meta.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Conversation":
        tools = d.get("tools")
        return cls(
            id=d["id"],
            group=d["group"],
            messages=[Message.from_dict(m) for m in d["messages"]],
            tools=json.loads(tools) if isinstance(tools, str) else tools,
            meta=Meta.from_dict(d["meta"]),
        )

    def messages_key(self) -> str:
        """Hash of the normalised conversation content (used for exact dedup)."""
        return content_hash([[m.role, m.content, [t.to_dict(canonical=True) for t in m.tool_calls or []]]
                             for m in self.messages]
                            + [self.tools or []])

    def template_messages(self) -> list[dict[str, Any]]:
        """Messages in the shape chat templates (and transformers) expect:
        OpenAI-style tool calls with `arguments` as an object (keys in their stored order).
        This is exactly what a user gets from the stored `messages` column by `json.loads` of
        each call's `arguments`; `render` feeds the template nothing else."""
        out: list[dict[str, Any]] = []
        for m in self.messages:
            d: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.tool_calls:
                d["tool_calls"] = [
                    {"type": "function", **({"id": t.id} if t.id is not None else {}),
                     "function": {"name": t.name, "arguments": json.loads(t.arguments)}}
                    for t in m.tool_calls
                ]
            if m.name is not None:
                d["name"] = m.name
            if m.tool_call_id is not None:
                d["tool_call_id"] = m.tool_call_id
            out.append(d)
        return out


class BadRow(Exception):
    """A row that cannot be used; it goes to quarantine with this reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Field paths: one walker for raw rows and records
# ---------------------------------------------------------------------------------------------


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What a field path finds where a key or index is absent (distinct from a present `null`)."""


def walk(value: Any, parts: list[str]) -> Any:
    """Follow `parts` through mappings and lists (negative indices count from the end); MISSING
    if any step is absent."""
    cur = value
    for part in parts:
        if isinstance(cur, Mapping):
            if part not in cur:
                return MISSING
            cur = cur[part]
        elif isinstance(cur, list) and _INDEX.fullmatch(part):
            i = int(part)
            if not -len(cur) <= i < len(cur):
                return MISSING
            cur = cur[i]
        else:
            return MISSING
    return cur


_INDEX = re.compile(r"-?\d+")


def get_path(obj: Any, path: str) -> Any:
    """The value at a field path: a literal key first (keys may contain dots), else a dotted
    path through objects (`info.reward`) and list indices (`messages.0.content`, `messages.-1.content` from the end).
    `MISSING` when any step is absent; an empty path is always `MISSING` (a field switched off)."""
    if not path:
        return MISSING
    if isinstance(obj, dict):  # the hot path: a plain key of a plain dict
        value = obj.get(path, MISSING)
        if value is not MISSING or "." not in path:
            return value
    elif isinstance(obj, Mapping) and path in obj:
        return obj[path]
    return walk(obj, path.split("."))
