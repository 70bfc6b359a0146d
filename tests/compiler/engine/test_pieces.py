"""Stage 1 as independent tasks: each input range is read, normalised and written as a piece of
its source's segment by a worker; the driver only merges the pieces' keys. The artifact is the
same however the input is cut, with any worker count; duplicates across pieces are found; a
range read twice (a retried task) leaves the same piece."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifact_helpers import input_lines, make_project, tree_digest, write_input_lines
from dsc.compiler.engine import executors
from dsc.compiler.engine.context import build_context
from dsc.compiler.engine.driver import build
from dsc.compiler.engine.executors.base import set_worker_context
from dsc.compiler.engine.normalise import ReadTask, read_piece
from dsc.compiler.engine.validation import load_spec
from dsc.compiler.stages.read import ranges


def _project(root: Path) -> Path:
    """40 FireAct rows, the 5th and 30th lines repeated at the end, a broken line in the middle."""
    spec = make_project(root, rows=40)
    lines = input_lines(root)
    write_input_lines(root, lines[:20] + ["{not json"] + lines[20:] + [lines[4], lines[29]])
    return spec


def _cut_small(monkeypatch) -> None:
    """Ranges of ~8 KB: the excerpt's rows are a few KB, so the file becomes many pieces."""
    monkeypatch.setattr(ranges, "MIN_RANGE_BYTES", 8_000)
    monkeypatch.setattr(ranges, "MAX_RANGE_BYTES", 8_000)


def test_the_artifact_does_not_depend_on_the_cuts_or_the_workers(tmp_path, monkeypatch):
    spec = _project(tmp_path)
    whole = build(spec, tmp_path / "whole", workers=1, cache=False)
    _cut_small(monkeypatch)
    one = build(spec, tmp_path / "one", workers=1, cache=False)
    two = build(spec, tmp_path / "two", workers=2, cache=False)
    assert tree_digest(tmp_path / "whole") == tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")
    assert whole.manifest["version"] == one.manifest["version"] == two.manifest["version"]
    quarantine = [json.loads(line) for line in (tmp_path / "two" / "quarantine.jsonl").read_text().splitlines()]
    reasons = sorted((q["stage"], q["row"]) for q in quarantine)
    assert reasons == [("dedup", 42), ("dedup", 43), ("read", 21)]  # across pieces: the first copy stays


def test_cached_pieces_serve_a_build_with_other_cuts(tmp_path, monkeypatch):
    spec = _project(tmp_path)
    cut = build(spec, tmp_path / "cut", workers=2, cache_dir=tmp_path / "cache")
    assert {c.normalised for c in cut.cache.values()} == {"miss"}
    _cut_small(monkeypatch)
    again = build(spec, tmp_path / "again", workers=1, cache_dir=tmp_path / "cache")
    assert {c.normalised for c in again.cache.values()} == {"hit"}
    assert tree_digest(tmp_path / "cut") == tree_digest(tmp_path / "again")


def test_a_range_read_twice_leaves_the_same_piece(tmp_path, monkeypatch):
    spec = _project(tmp_path)
    loaded = load_spec(spec)
    set_worker_context(build_context(loaded))
    chat = loaded.spec.sources["chat"]
    scans = [ranges.scan_file(t) for t in ranges.scan_tasks("chat", chat, loaded.base_dir, 1, 8_000)]
    planned = ranges.plan_ranges("chat", chat, scans)
    assert len(planned) > 3
    out = tmp_path / "segment"
    out.mkdir()
    task = ReadTask(planned[2], 2, str(out))
    first = read_piece(task)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    again = read_piece(task)  # a retry after the first attempt finished (or died after renaming)
    assert first == again
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert sorted(files) == ["keys-000002.arrow", "quarantine-000002.jsonl", "rows-000002.arrow"]
    assert first.rows > 0 and first.rows_read == first.rows


def test_a_merge_run_twice_leaves_the_same_segment(tmp_path, monkeypatch):
    """A source's pieces are merged by a task (Ray retries one whose worker died): run twice, it
    reads the same piece files and places the same segment files."""
    from dsc.compiler.engine.normalise import MergeTask, merge_pieces
    from dsc.compiler.engine.rowfiles import remove_piece_files

    spec = _project(tmp_path)
    loaded = load_spec(spec)
    set_worker_context(build_context(loaded))
    chat = loaded.spec.sources["chat"]
    scans = [ranges.scan_file(t) for t in ranges.scan_tasks("chat", chat, loaded.base_dir, 1, 8_000)]
    out = tmp_path / "segment"
    out.mkdir()
    pieces = [read_piece(ReadTask(r, i, str(out))) for i, r in enumerate(ranges.plan_ranges("chat", chat, scans))]
    task = MergeTask(str(out), "chat", pieces)
    first = merge_pieces(task)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert merge_pieces(task) == first
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    remove_piece_files(out, pieces)
    assert sorted(p.name for p in out.iterdir()) == sorted(["keys.arrow", "quarantine.jsonl", "segment.json",
                                                            *(f"rows-{i:06d}.arrow" for i in range(len(pieces)))])
    assert json.loads((out / "segment.json").read_text())["duplicates"] == 2


def test_a_hub_source_is_one_range_read_by_one_task(tmp_path, monkeypatch):
    """A hub dataset streams in order, so one task reads it (on a cluster, a worker: it must
    reach the hub). The hub is offline here: `datasets.load_dataset` serves the excerpt's rows."""
    import datasets

    from artifact_helpers import EXCERPT

    rows = [json.loads(line) for line in EXCERPT.read_text().splitlines()[:30]]
    calls = []

    def served(path, name=None, *, revision=None, split=None, streaming=False, **_):
        calls.append((path, revision, split, streaming))
        return iter([dict(r) for r in rows])

    monkeypatch.setattr(datasets, "load_dataset", served)
    spec = tmp_path / "hub.yaml"
    spec.write_text("dsc: 1\nname: hub\nseed: 3\nsources:\n"
                    "  chat: {hub: {id: org/chat, revision: " + "b" * 40 + "}, format: openai}\n"
                    "template: chatml\nloss: assistant\nsplit: {validation: 0.2}\n")
    one = build(spec, tmp_path / "one", workers=1, cache=False)
    assert calls == [("org/chat", "b" * 40, "train", True)]
    two = build(spec, tmp_path / "two", workers=2, cache=False)  # forked workers see the stand-in too
    assert one.written["train"] + one.written.get("validation", 0) == 30
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")
    assert one.manifest["version"] == two.manifest["version"]


@pytest.fixture(autouse=True)
def _no_leftover_context():
    yield
    executors.base.set_worker_context(None)
