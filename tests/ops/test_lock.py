"""dsc.lock: written by `dsc build`, deterministic, checked by `dsc build --locked`."""
from __future__ import annotations

import json
import time

import pytest
from artifact_helpers import input_lines, make_project, tree_digest, write_input_lines, write_spec
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.core.errors import LockError
from dsc.ops.lock import (LOCK_FILE, LockedInput, LockedRef, LockEntry, compare, lock_path, read_lock)

runner = CliRunner()


def build_cli(*args: str):
    return runner.invoke(app, ["build", *map(str, args)])


def test_build_writes_a_deterministic_lock_beside_the_spec(tmp_path):
    spec = make_project(tmp_path)
    r = build_cli(spec)
    assert r.exit_code == 0, r.output
    lock = tmp_path / LOCK_FILE
    first = lock.read_bytes()
    data = json.loads(first)
    entry = data["specs"]["spec.yaml"]
    manifest = json.loads((tmp_path / "build" / "t" / "manifest.json").read_text())
    assert entry["artifact"] == {"version": manifest["version"], "format": manifest["format"], "path": "build/t"}
    [inp] = entry["inputs"]
    raw = (tmp_path / "data" / "chat.jsonl").read_bytes()
    assert inp["path"] == "data/chat.jsonl" and inp["size"] == len(raw) and inp["source"] == "chat"
    assert inp["sha256"] == manifest["inputs"][0]["sha256"]
    assert entry["template"] == {"ref": "chatml", "sha256": manifest["template"]["sha256"]}
    assert entry["dsc_version"] == manifest["dsc_version"] and entry["libraries"]["pyarrow"]
    assert "tokenizer" not in entry  # not tokenised
    assert first == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"
    # No timestamps: a later rebuild writes the very same bytes.
    time.sleep(1.1)
    assert build_cli(spec).exit_code == 0
    assert lock.read_bytes() == first


def test_locked_build_passes_when_nothing_moved(tmp_path):
    spec = make_project(tmp_path)
    assert build_cli(spec).exit_code == 0
    before = (tmp_path / LOCK_FILE).read_bytes()
    r = build_cli(spec, "--locked")
    assert r.exit_code == 0, r.output
    assert (tmp_path / LOCK_FILE).read_bytes() == before


def test_locked_build_fails_on_a_one_byte_input_change_naming_it(tmp_path):
    spec = make_project(tmp_path)
    assert build_cli(spec).exit_code == 0
    artifact = tmp_path / "build" / "t"
    before = tree_digest(artifact)
    data = tmp_path / "data" / "chat.jsonl"
    raw = bytearray(data.read_bytes())
    i = raw.index(b"American")
    raw[i] = ord("a")  # one byte, same size
    data.write_bytes(bytes(raw))
    r = build_cli(spec, "--locked")
    assert r.exit_code == 1
    assert "input data/chat.jsonl (source 'chat') changed: sha256" in r.output
    assert "size" not in r.output.split("changed:")[1].splitlines()[0]  # same size: only the hash moved
    assert tree_digest(artifact) == before  # nothing was replaced
    # Without --locked the build goes ahead and updates the lock.
    assert build_cli(spec).exit_code == 0
    assert build_cli(spec, "--locked").exit_code == 0


def test_locked_build_names_added_and_removed_inputs_and_spec_edits(tmp_path):
    spec = make_project(tmp_path)
    assert build_cli(spec).exit_code == 0
    write_spec(tmp_path, validation=0.3)
    r = build_cli(spec, "--locked")
    assert r.exit_code == 1 and "the spec changed since the lock was written" in r.output
    (tmp_path / "data" / "more.jsonl").write_text(input_lines(tmp_path)[0] + "\n")
    spec.write_text(spec.read_text().replace("path: data/chat.jsonl", "path: data/*.jsonl")
                    .replace("validation: 0.3", "validation: 0.2"))
    r = build_cli(spec, "--locked")
    assert r.exit_code == 1
    assert "input data/more.jsonl (source 'chat') is not in the lock" in r.output


def test_locked_build_without_a_lock_entry_fails_clearly(tmp_path):
    spec = make_project(tmp_path)
    r = build_cli(spec, "--locked")
    assert r.exit_code == 1 and "no lock file" in r.output and "without --locked" in r.output
    other = write_spec(tmp_path, name="other.yaml")
    assert build_cli(other).exit_code == 0
    r = build_cli(spec, "--locked")
    assert r.exit_code == 1 and "has no entry for spec.yaml" in r.output


def test_one_lock_holds_every_spec_of_a_directory(tmp_path):
    spec = make_project(tmp_path)
    other = write_spec(tmp_path, validation=0.5, name="other.yaml",
                       extra="output: {shard_rows: 100}\n")
    assert build_cli(spec).exit_code == 0
    assert build_cli(other, "--out", tmp_path / "build" / "other").exit_code == 0
    lock = read_lock(lock_path(spec))
    assert lock is not None and sorted(lock.specs) == ["other.yaml", "spec.yaml"]
    assert lock.specs["other.yaml"].artifact.path == "build/other"
    # Building one leaves the other's entry as it was.
    before = lock.specs["other.yaml"]
    write_input_lines(tmp_path, input_lines(tmp_path)[:30])
    assert build_cli(spec).exit_code == 0
    assert read_lock(lock_path(spec)).specs["other.yaml"] == before


def test_locked_build_checks_the_artifact_version_before_replacing(tmp_path):
    spec = make_project(tmp_path)
    assert build_cli(spec).exit_code == 0
    lock = tmp_path / LOCK_FILE
    data = json.loads(lock.read_text())
    data["specs"]["spec.yaml"]["artifact"]["version"] = "0" * 16  # e.g. a non-reproducible build
    lock.write_text(json.dumps(data))
    artifact = tmp_path / "build" / "t"
    before = tree_digest(artifact)
    r = build_cli(spec, "--locked")
    assert r.exit_code == 1 and "the lock says 0000000000000000" in r.output and "nothing was replaced" in r.output
    assert tree_digest(artifact) == before


def test_library_drift_and_a_malformed_lock(tmp_path):
    spec = make_project(tmp_path)
    assert build_cli(spec).exit_code == 0
    lock = tmp_path / LOCK_FILE
    data = json.loads(lock.read_text())
    data["specs"]["spec.yaml"]["libraries"]["pyarrow"] = "1.0.0"
    lock.write_text(json.dumps(data))
    r = build_cli(spec, "--locked")
    assert r.exit_code == 1 and "library pyarrow 1.0.0 locked" in r.output
    lock.write_text('{"dsc_lock": 1, "specs": {"spec.yaml": {"bogus": 1}}}')
    r = build_cli(spec, "--locked")
    assert r.exit_code == 1 and "is not a valid dsc lock file" in r.output and "Traceback" not in r.output


def _entry(**changes) -> LockEntry:
    base = dict(spec_sha256="s" * 64, dsc_version="0.1.0", libraries={"pyarrow": "26"},
                inputs=[LockedInput(source="hub", path="hf://a/b@v1/default/train", hub="a/b", revision="v1",
                                    resolved="1" * 40)],
                template=LockedRef(ref="chatml", sha256="t" * 64),
                tokenizer=LockedRef(ref="tok", sha256="k" * 64))
    base.update(changes)
    return LockEntry(**base)


def test_compare_names_hub_revisions_tokenizers_and_templates():
    locked = _entry()
    assert compare(locked, _entry()) == []
    moved = _entry(inputs=[LockedInput(source="hub", path="hf://a/b@v1/default/train", hub="a/b", revision="v1",
                                       resolved="2" * 40)])
    [m] = compare(locked, moved)
    assert m.startswith("input a/b (source 'hub'): revision v1 now points at commit 222")
    offline = _entry(inputs=[LockedInput(source="hub", path="x", hub="a/b", revision="v1")])
    assert compare(locked, offline) == []  # a tag that cannot be resolved offline is not a mismatch
    repinned = _entry(inputs=[LockedInput(source="hub", path="y", hub="a/b", revision="v2")])
    assert "revision v1 locked, the spec now pins v2" in compare(locked, repinned)[0]
    assert "tokenizer 'tok' changed" in compare(locked, _entry(tokenizer=LockedRef(ref="tok", sha256="z" * 64)))[0]
    assert "tokenizer 'tok' locked, now none" in compare(locked, _entry(tokenizer=None))[0]
    assert "the spec now uses 'llama-3'" in compare(locked, _entry(template=LockedRef(ref="llama-3", sha256="t")))[0]
    assert "dsc 0.1.0 locked, dsc 0.2.0 running" in compare(locked, _entry(dsc_version="0.2.0"))


def test_lock_error_is_a_dsc_error_with_exit_1():
    assert LockError.exit_code == 1
    with pytest.raises(LockError):
        raise LockError("x")


def test_hub_inputs_are_locked_by_id_and_revision(tmp_path):
    from dsc.ops.lock import locked_inputs
    from dsc.spec.model import parse_spec

    sha = "a" * 40
    text = (f"dsc: 1\nname: h\nsources:\n  pinned: {{hub: {{id: org/data, revision: {sha}}}, format: openai}}\n"
            "  tagged: {hub: {id: org/other, revision: v1.0}, format: openai}\n")
    loaded = parse_spec(text, tmp_path / "h.yaml")
    inputs = [{"source": "pinned", "path": f"hf://org/data@{sha}/default/train", "size": None, "sha256": sha},
              {"source": "tagged", "path": "hf://org/other@v1.0/default/train", "size": None, "sha256": "v1.0"}]
    pinned, tagged = locked_inputs(loaded, inputs)
    assert (pinned.hub, pinned.revision, pinned.resolved, pinned.sha256) == ("org/data", sha, sha, None)
    # Offline (the test session is), a tag cannot be resolved: it is pinned as written.
    assert (tagged.hub, tagged.revision, tagged.resolved) == ("org/other", "v1.0", None)


def test_the_lock_file_gets_ordinary_permissions(tmp_path):
    import os
    import stat

    spec = make_project(tmp_path)
    old = os.umask(0o022)
    try:
        assert build_cli(spec).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / LOCK_FILE).stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind
