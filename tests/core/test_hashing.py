"""The one home for hashes (`core/hashing.py`) and for listing files (`core/files.py`): their
definitions version artifacts and key the cache, so they are pinned here."""
from __future__ import annotations

import hashlib
from pathlib import Path

from dsc.core.files import files_under
from dsc.core.hashing import sha256_bytes, sha256_file, sha256_files, sha256_json, sha256_text
from dsc.core.canonical import canonical_json, content_hash


def test_hashes_are_sha256_of_the_bytes(tmp_path):
    big = tmp_path / "big.bin"
    data = bytes(range(256)) * (5 * 4096 + 7)  # > 1 MiB: read in several chunks
    big.write_bytes(data)
    assert sha256_file(big) == hashlib.sha256(data).hexdigest() == sha256_bytes(data)
    assert sha256_text("é\n") == hashlib.sha256("é\n".encode("utf-8")).hexdigest()
    value = {"b": [1, 2.5, None], "a": "x"}
    assert sha256_json(value) == hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()
    assert content_hash(value) == sha256_json(value)[:16]


def _tree(root: Path) -> None:
    for name in ("a/x", "a-b/x", "a.py", "b/.hidden", ".git/config", "c"):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(name)


def test_files_are_listed_by_relative_posix_path(tmp_path):
    _tree(tmp_path)
    names = [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path)]
    # string order of the relative paths ('-' and '.' sort before '/'), not Path order
    assert names == [".git/config", "a-b/x", "a.py", "a/x", "b/.hidden", "c"]
    visible = [p.relative_to(tmp_path).as_posix() for p in files_under(tmp_path, hidden=False)]
    assert visible == ["a-b/x", "a.py", "a/x", "c"]
    kept = [p.name for p in files_under(tmp_path, keep=lambda p: p.name != "x")]
    assert kept == ["config", "a.py", ".hidden", "c"]


def test_a_directory_hash_is_its_files_paths_and_hashes(tmp_path):
    _tree(tmp_path)
    files = files_under(tmp_path)
    lines = "".join(f"{p.relative_to(tmp_path).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
                    for p in files)
    assert sha256_files(tmp_path, files) == hashlib.sha256(lines.encode()).hexdigest()
