"""Reliability, disk: the build cache is bounded (an automatic LRU cap after each build) and
`dsc cache prune` / `dsc cache info` manage it. See docs/RELIABILITY.md."""
from __future__ import annotations

import os
import time

from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.compiler.engine.cache import cache_root
from dsc.compiler.engine.cache_upkeep import entries, parse_size

from test_build import make_spec, split_excerpt, tree_bytes


def _age(paths, hours: float) -> None:
    t = time.time() - hours * 3600
    for p in paths:
        os.utime(p, (t, t))


def test_prune_removes_least_recently_used_first_and_rebuilds_stay_identical(tmp_path):
    split_excerpt(tmp_path)
    cache = tmp_path / "cache"
    spec_a = make_spec(tmp_path)
    spec_b = tmp_path / "b.yaml"
    spec_b.write_text(spec_a.read_text().replace("seed: 7", "seed: 8").replace("loss: assistant", "loss: all"))
    build(spec_a, tmp_path / "a", cache_dir=cache)
    root = cache_root(cache)
    used_by_a = {e.path for e in entries(root)}
    _age(used_by_a, 5)
    build(spec_b, tmp_path / "b", cache_dir=cache)
    listed = entries(root)
    total = sum(e.size for e in listed)
    lru = listed[0]
    assert lru.path in used_by_a and lru.last_used < listed[-1].last_used - 3600  # a's, not touched by b

    result = CliRunner().invoke(app, ["cache", "prune", "--max-size", str(total - lru.size),
                                      "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert {e.path for e in entries(root)} == {e.path for e in listed[1:]}  # exactly the least recently used
    assert "removed 1 entries" in result.stdout

    before = tree_bytes(tmp_path / "a")
    build(spec_a, tmp_path / "a", cache_dir=cache)  # what was pruned is rebuilt, to the same bytes
    assert tree_bytes(tmp_path / "a") == before

    result = CliRunner().invoke(app, ["cache", "prune", "--older-than", "0", "--cache-dir", str(cache)])
    assert result.exit_code == 0 and not entries(root)
    info = CliRunner().invoke(app, ["cache", "info", "--cache-dir", str(cache)])
    assert info.exit_code == 0 and "entries: 0" in info.stdout


def test_each_build_caps_the_cache_sparing_what_it_just_used(tmp_path, monkeypatch):
    split_excerpt(tmp_path)
    cache = tmp_path / "cache"
    spec_a = make_spec(tmp_path)
    build(spec_a, tmp_path / "a", cache_dir=cache)
    old = {e.path for e in entries(cache_root(cache))}
    _age(old, 2)
    monkeypatch.setenv("DSC_CACHE_MAX_SIZE", "1")  # one byte: everything not just used goes
    spec_b = tmp_path / "b.yaml"
    spec_b.write_text(spec_a.read_text().replace("tags: {task: hotpotqa, method: react}", "tags: {task: other}"))
    build(spec_b, tmp_path / "b", cache_dir=cache)
    left = {e.path for e in entries(cache_root(cache))}
    assert left and not (left & old)


def test_sizes_parse_and_bad_ones_are_usage_errors():
    assert parse_size("500M") == 500 << 20 and parse_size("1.5GiB") == 3 << 29 and parse_size("1024") == 1024
    result = CliRunner().invoke(app, ["cache", "prune", "--max-size", "lots"])
    assert result.exit_code == 2 and "not a size" in result.stderr


def test_prune_removes_directories_of_other_cache_formats(tmp_path):
    """A cache format change (dsc upgraded) leaves the old `v<N>` directory unused: prune removes it,
    and only it among the other formats' look-alikes."""
    split_excerpt(tmp_path)
    cache = tmp_path / "cache"
    build(make_spec(tmp_path), tmp_path / "a", cache_dir=cache)
    root = cache_root(cache)
    old = cache / "v0" / "normalised" / "k"
    old.mkdir(parents=True)
    (old / "rows.arrow").write_bytes(b"x" * 1000)
    (cache / "notes").mkdir()  # not a format directory: left alone
    info = CliRunner().invoke(app, ["cache", "info", "--cache-dir", str(cache)])
    assert info.exit_code == 0 and "other cache formats" in info.stdout and "v0" in info.stdout
    kept = {e.path for e in entries(root)}
    result = CliRunner().invoke(app, ["cache", "prune", "--max-size", "100G", "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert "removed 1 directories of other cache formats" in result.stdout
    assert not (cache / "v0").exists() and (cache / "notes").is_dir()
    assert {e.path for e in entries(root)} == kept
