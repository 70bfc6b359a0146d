"""Canonical JSON: one spelling per value, for hashes (`canonical_json`, sorted keys) and one
for what is stored (`compact_json`, keys in their given order), both exactly what `json.dumps`
writes with no spaces and UTF-8 kept; `content_hash`, a row's short id over its canonical JSON.

Chat templates render tools and arguments in their key order, and what is stored must render back
to the artifact's `text` byte for byte, so the stored spelling keeps the order; hashes (row ids,
dedup keys) use the sorted spelling, so they do not depend on it.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any


def _json_dumps(value: Any, sort_keys: bool = True) -> str:
    return json.dumps(value, sort_keys=sort_keys, ensure_ascii=False, separators=(",", ":"))


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept — exactly `json.dumps(value,
    sort_keys=True, ensure_ascii=False, separators=(",", ":"))`.

    Built here rather than by `json.dumps` because rows hash the same long strings over and over
    (system prompts carrying tool schemas, in every row's id and dedup key): their escaped form
    is remembered (`_escape`), and the walk over plain dicts, lists, strings and ints costs less
    than the library's sorting encoder. Any other value (floats, str subclasses, dicts with
    non-string keys) is spelt by `json.dumps` itself."""
    out: list[str] = []
    _spell(value, out.append, True)
    return "".join(out)


def compact_json(value: Any) -> str:
    """The stored spelling of a value: keys in their given order, otherwise as `canonical_json`
    spells it — exactly `json.dumps(value, ensure_ascii=False, separators=(",", ":"))`."""
    out: list[str] = []
    _spell(value, out.append, False)
    return "".join(out)


def canonical_arguments(arguments: str) -> str:
    """A tool call's stored arguments (a JSON string) in their canonical spelling, for hashes."""
    return canonical_json(json.loads(arguments))


_escape_plain = json.encoder.encode_basestring  # type: ignore[attr-defined]
_LONG = 256  # strings at least this long have their escaped form remembered
_escaped_long: dict[str, str] = {}
_escaped_chars = 0
_ESCAPED_MAX_CHARS = 4_000_000  # (cleared when full: memory stays bounded, only speed depends on it)
_REMEMBERED_MAX_LEN = 1 << 18  # longer strings (a 50 MB message) are escaped, never remembered


def _escape(text: str) -> str:
    global _escaped_chars
    if len(text) < _LONG:
        return _escape_plain(text)
    if len(text) > _REMEMBERED_MAX_LEN:
        return _escape_plain(text)
    hit = _escaped_long.get(text)
    if hit is None:
        hit = _escape_plain(text)
        if _escaped_chars + len(text) > _ESCAPED_MAX_CHARS:
            _escaped_long.clear()
            _escaped_chars = 0
        _escaped_long[text] = hit
        _escaped_chars += len(text)
    return hit


def _spell(value: Any, emit: Callable[[str], None], sort_keys: bool) -> None:
    kind = type(value)
    if kind is str:
        emit(_escape(value))
    elif kind is dict:
        if not all(type(k) is str for k in value):
            emit(_json_dumps(value, sort_keys))  # json.dumps' own rules for non-string keys
            return
        emit("{")
        for n, key in enumerate(sorted(value) if sort_keys else value):
            if n:
                emit(",")
            emit(_escape(key))
            emit(":")
            _spell(value[key], emit, sort_keys)
        emit("}")
    elif kind is list or kind is tuple:
        emit("[")
        for n, item in enumerate(value):
            if n:
                emit(",")
            _spell(item, emit, sort_keys)
        emit("]")
    elif value is None:
        emit("null")
    elif value is True:
        emit("true")
    elif value is False:
        emit("false")
    elif kind is int:
        emit(int.__repr__(value))
    else:
        emit(_json_dumps(value, sort_keys))


def content_hash(value: Any, length: int = 16) -> str:
    """The first `length` hex digits of the sha256 of the value's canonical JSON."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]
