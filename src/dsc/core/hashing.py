"""The one home for content hashes (sha256, hex): of bytes, text, a file (streamed), a
directory (its files' relative paths and hashes) and a JSON value (its canonical JSON).

These hashes version artifacts, pin inputs in dsc.lock and key the build cache: their
definitions must never change (a change re-versions every artifact).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from dsc.core.canonical import canonical_json

_CHUNK = 1 << 20  # files are hashed a MiB at a time: shards and inputs can be large


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Of the text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    # Not cached by (size, mtime): a same-size rewrite within the clock's resolution would
    # keep a stale hash, and the hash is what versions the artifact.
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_stream(f: IO[bytes], each_block: Callable[[bytes], None] | None = None) -> str:
    """Of what is left to read of a binary file object (a local file, an fsspec file);
    `each_block` sees the bytes as they are hashed (one pass serves another use of them)."""
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(_CHUNK), b""):
        h.update(chunk)
        if each_block is not None:
            each_block(chunk)
    return h.hexdigest()


def sha256_files(root: Path, files: Iterable[Path]) -> str:
    """Of a set of files under `root`: each one's relative path and sha256, one line each, in
    the order given (`files_under` gives a stable one)."""
    return sha256_listing((p.relative_to(root).as_posix(), sha256_file(p)) for p in files)


def sha256_listing(entries: Iterable[tuple[str, str]]) -> str:
    """Of (relative path, sha256) pairs, one line each, in the order given: a directory's hash
    (wherever its files are stored)."""
    h = hashlib.sha256()
    for name, sha in entries:
        h.update(f"{name}\0{sha}\n".encode())
    return h.hexdigest()


def sha256_json(value: Any) -> str:
    """Of the value's canonical JSON (sorted keys, no whitespace; `core.canonical`)."""
    return sha256_text(canonical_json(value))
