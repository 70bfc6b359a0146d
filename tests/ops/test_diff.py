"""dsc diff: exactly the rows a spec or input edit changed, count deltas, git revisions."""
from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest
from artifact_helpers import edit_first_answer, input_lines, make_project, write_input_lines, write_spec
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.ops.diff import diff_artifacts

runner = CliRunner()


def ids_by_split(artifact) -> dict[str, str]:
    out = {}
    for shard in sorted((artifact / "data").glob("*.parquet")):
        split = shard.name.split("-")[0]
        for i in pq.read_table(shard, columns=["id"]).column("id").to_pylist():
            out[i] = split
    return out


def test_changing_split_validation_names_exactly_the_moved_rows(tmp_path):
    spec = make_project(tmp_path, validation=0.1)
    build(spec, tmp_path / "a")
    write_spec(tmp_path, validation=0.4)
    build(spec, tmp_path / "b")
    before, after = ids_by_split(tmp_path / "a"), ids_by_split(tmp_path / "b")
    moved = {i for i in before if before[i] != after[i]}
    assert 0 < len(moved) < len(before)
    d = diff_artifacts(tmp_path / "a", tmp_path / "b")
    assert not d.added and not d.removed
    assert {c.id for c in d.changed} == moved
    assert all(c.fields == ["split"] and c.new_id == c.id for c in d.changed)
    assert d.unchanged == len(before) - len(moved) and d.provenance_only == 0
    assert ("split.validation", 0.1, 0.4) in d.spec_changes
    rows = {(c.dimension, c.key, c.split): c.delta for c in d.counts if c.what == "rows"}
    n_val = sum(1 for i in moved if after[i] == "validation") - sum(1 for i in moved if before[i] == "validation")
    assert rows[("split", "validation", "validation")] == n_val == -rows[("split", "train", "train")]
    assert rows[("source", "chat", "validation")] == n_val
    sup = {c.split: c.delta for c in d.counts if c.what == "supervised_chars" and c.dimension == "split"}
    assert sup["validation"] == -sup["train"] != 0


def test_editing_one_input_row_changes_exactly_that_row(tmp_path):
    spec = make_project(tmp_path)
    build(spec, tmp_path / "a")
    lines = input_lines(tmp_path)
    lines[5] = edit_first_answer(lines[5])
    write_input_lines(tmp_path, lines)
    build(spec, tmp_path / "b")
    d = diff_artifacts(tmp_path / "a", tmp_path / "b")
    assert not d.added and not d.removed
    [change] = d.changed
    assert change.id != change.new_id and change.fields[0] == "id"
    assert {"messages", "text", "loss_spans"} <= set(change.fields)
    # The edited file's hash moved in every other row's provenance, which training never sees.
    assert d.provenance_only == len(lines) - 1 and d.unchanged == 0
    assert any("input data/chat.jsonl (source 'chat') changed" in n for n in d.notes)
    sup = [c for c in d.counts if c.what == "supervised_chars" and c.dimension == "split"]
    assert [c.delta for c in sup] == [len(" (edited)")]


def test_deleting_an_input_row_is_one_removed_row(tmp_path):
    spec = make_project(tmp_path)
    build(spec, tmp_path / "a")
    lines = input_lines(tmp_path)
    gone = ids_by_split(tmp_path / "a")
    write_input_lines(tmp_path, lines[:3] + lines[4:])
    build(spec, tmp_path / "b")
    d = diff_artifacts(tmp_path / "a", tmp_path / "b")
    [removed] = d.removed
    assert removed.id in gone and removed.id not in ids_by_split(tmp_path / "b")
    assert not d.added and not d.changed


def test_cli_output_json_and_side_by_side(tmp_path):
    spec = make_project(tmp_path)
    build(spec, tmp_path / "a")
    lines = input_lines(tmp_path)
    lines[2] = edit_first_answer(lines[2], " EDITED-HERE")
    write_input_lines(tmp_path, lines)
    build(spec, tmp_path / "b")
    r = runner.invoke(app, ["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["summary"] == {"added": 0, "removed": 0, "changed": 1, "provenance_only": len(lines) - 1,
                               "unchanged": 0}
    r = runner.invoke(app, ["diff", str(tmp_path / "a"), str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert "~1 changed" in r.output and "before (" in r.output and "EDITED-HERE" in r.output
    r = runner.invoke(app, ["diff", str(tmp_path / "a")])
    assert r.exit_code == 2 and "give two artifact directories" in r.output
    r = runner.invoke(app, ["diff", str(tmp_path / "a"), str(tmp_path / "nope")])
    assert r.exit_code == 2 and "artifact directory not found" in r.output


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def repo(tmp_path):
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:  # pragma: no cover
        pytest.skip("git is not installed")
    git(tmp_path, "init", "-q")
    return tmp_path


def test_diff_one_artifact_path_at_two_git_revisions(repo):
    spec = make_project(repo, validation=0.1)
    build(spec)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    write_spec(repo, validation=0.4)
    build(spec)
    git(repo, "commit", "-q", "-am", "v2")
    artifact = repo / "build" / "t"
    r = runner.invoke(app, ["diff", str(artifact), "--rev", "HEAD~1", "--rev", "HEAD", "--json"])
    assert r.exit_code == 0, r.output
    via_git = json.loads(r.output)
    assert via_git["summary"]["changed"] > 0 and via_git["summary"]["added"] == 0
    assert via_git["spec_changes"] == [{"key": "split.validation", "before": 0.1, "after": 0.4}]
    # One revision: against the working tree (HEAD's artifact: no row changes).
    r = runner.invoke(app, ["diff", str(artifact), "--rev", "HEAD", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["summary"]["changed"] == 0
    r = runner.invoke(app, ["diff", str(artifact), "--rev", "HEAD~1", "--json"])
    assert json.loads(r.output)["changed"] == via_git["changed"]
    r = runner.invoke(app, ["diff", str(artifact), "--rev", "no-such-rev"])
    assert r.exit_code == 2 and "unknown git revision 'no-such-rev'" in r.output


def test_diff_at_a_revision_with_git_lfs_pointers_fails_clearly(repo):
    spec = make_project(repo)
    build(spec)
    artifact = repo / "build" / "t"
    shard = sorted((artifact / "data").glob("train-*.parquet"))[0]
    shard.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "1" * 64 + "\nsize 10\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pointers only")
    r = runner.invoke(app, ["diff", str(artifact), "--rev", "HEAD", "--rev", "HEAD"])
    assert r.exit_code == 2
    assert "git-lfs pointer" in r.output and "Traceback" not in r.output
