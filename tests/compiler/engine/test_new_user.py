"""What a new user met (issue 24): leak-free default groups, the card and summary naming groups in
two splits, --no-cache scratch left by a killed build removed by the next one, artifacts readable
by others, no lock files left beside the artifact."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dsc.compiler.engine.cache import SCRATCH_LOCK, SCRATCH_PREFIX
from dsc.compiler.engine.driver import build
from dsc.core.files import held_lock

QUESTIONS = [f"What is {i} plus {i}?" for i in range(40)]


def _trajectory(q: str, attempt: int) -> dict:
    return {"messages": [{"role": "user", "content": q},
                         {"role": "assistant", "content": f"Thought {attempt}: it is {2 * len(q)}."}]}


def _project(tmp_path: Path, split: str = "{validation: 0.3, by: group}", extra: str = "") -> Path:
    data = tmp_path / "data"
    data.mkdir()
    # Three trajectories per question, spread over two sources (one file holds attempt 0, the
    # other attempts 1 and 2), and the second source writes the question with extra spaces.
    (data / "first.jsonl").write_text("".join(json.dumps(_trajectory(q, 0)) + "\n" for q in QUESTIONS))
    (data / "more.jsonl").write_text("".join(json.dumps(_trajectory(f"  {q} ", a)) + "\n"
                                             for q in QUESTIONS for a in (1, 2)))
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""dsc: 1
name: groups
sources:
  first: {{path: data/first.jsonl, format: openai}}
  more: {{path: data/more.jsonl, format: openai}}
template: chatml
split: {split}
{extra}""")
    return spec


def _splits_by_question(out: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for f in sorted((out / "data").glob("*.parquet")):
        split = f.name.split("-")[0]
        for messages in pq.read_table(f, columns=["messages"]).column("messages").to_pylist():
            found.setdefault(messages[0]["content"].strip(), set()).add(split)
    return found


def test_a_questions_trajectories_share_a_split_by_default(tmp_path):
    result = build(_project(tmp_path), tmp_path / "out", cache=False)
    splits = _splits_by_question(tmp_path / "out")
    assert len(splits) == len(QUESTIONS)
    assert all(len(s) == 1 for s in splits.values()), {q: s for q, s in splits.items() if len(s) > 1}
    assert {s for v in splits.values() for s in v} == {"train", "validation"}
    card = (tmp_path / "out" / "README.md").read_text()
    assert "no group has rows in two splits" in card
    assert not [w for w in result.warnings if "two splits" in w]


def test_a_split_by_id_is_reported_as_questions_in_two_splits(tmp_path):
    result = build(_project(tmp_path, "{validation: 0.3, by: id}"), tmp_path / "out", cache=False)
    shared = [q for q, s in _splits_by_question(tmp_path / "out").items() if len(s) > 1]
    assert shared
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"**{len(shared)} groups have rows in two splits**" in card
    assert any(f"{len(shared)} groups have rows in two splits" in w for w in result.warnings)


def test_groups_counted_by_tasks_are_those_read_back(tmp_path):
    """The build counts groups per split and those in two splits by tasks over partitions of
    the groups (several shards, two workers); the card must be the one the artifact gives when
    read back, and name every question in two splits."""
    import shutil

    from dsc.artifact.inspection import artifact_stats
    from dsc.artifact.reader import open_artifact
    from dsc.compiler.stages.write.card import write_card

    spec = _project(tmp_path, "{validation: 0.3, test: 0.2, by: id}", extra="output: {shard_rows: 13}\n")
    build(spec, tmp_path / "a", cache=False, workers=2)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert len(manifest["files"]) > 6
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    write_card(tmp_path / "b", manifest)
    assert (tmp_path / "a" / "README.md").read_text() == (tmp_path / "b" / "README.md").read_text()
    stats = artifact_stats(open_artifact(tmp_path / "a"))
    groups: dict[str, set[str]] = {}
    for f in sorted((tmp_path / "a" / "data").glob("*.parquet")):
        for g in pq.read_table(f, columns=["group"]).column("group").to_pylist():
            groups.setdefault(g, set()).add(f.name.split("-")[0])
    shared = sorted(g for g, s in groups.items() if len(s) > 1)
    assert len(shared) > 10 and stats.shared_groups() == shared
    assert stats.groups_per_split() == {s: sum(s in v for v in groups.values()) for s in ("train", "validation", "test")}


def test_group_takes_a_field_path_into_the_messages(tmp_path):
    spec = _project(tmp_path)
    spec.write_text(spec.read_text().replace("format: openai}", "format: openai, group: messages.0.content}"))
    build(spec, tmp_path / "out", cache=False)
    groups = {g for f in (tmp_path / "out" / "data").glob("*.parquet")
              for g in pq.read_table(f, columns=["group"]).column("group").to_pylist()}
    assert groups <= set(QUESTIONS) | {f"  {q} " for q in QUESTIONS} and len(groups) == 2 * len(QUESTIONS)


@pytest.fixture
def own_tempdir(tmp_path, monkeypatch):
    d = tmp_path / "systmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def test_a_killed_no_cache_builds_scratch_goes_with_the_next_build(tmp_path, own_tempdir):
    abandoned = own_tempdir / f"{SCRATCH_PREFIX}killed"
    (abandoned / "normalised").mkdir(parents=True)
    (abandoned / SCRATCH_LOCK).write_text("")  # its holder died: nobody holds the lock
    (abandoned / "normalised" / "big.arrow").write_bytes(b"x" * 1000)
    running = own_tempdir / f"{SCRATCH_PREFIX}running"
    running.mkdir()
    with held_lock(running / SCRATCH_LOCK):  # a build still at work
        build(_project(tmp_path), tmp_path / "out", cache=False)
    assert not abandoned.exists()
    assert running.exists()
    assert [p.name for p in own_tempdir.glob(f"{SCRATCH_PREFIX}*")] == [running.name]  # its own scratch went too


def test_the_artifact_is_readable_by_others_and_no_lock_is_left_beside_it(tmp_path):
    old = os.umask(0o022)
    try:
        build(_project(tmp_path), tmp_path / "build" / "out", cache=False)
    finally:
        os.umask(old)
    assert (tmp_path / "build" / "out").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in (tmp_path / "build").iterdir()) == ["out"]


def test_an_empty_source_is_named_with_0_rows_and_a_warning(tmp_path):
    spec = _project(tmp_path)
    (tmp_path / "data" / "more.jsonl").write_text("")
    result = build(spec, tmp_path / "out", cache=False)
    assert result.manifest["counts"]["read"] == {"first": 40, "more": 0}
    assert any("source 'more' read 0 rows" in w for w in result.warnings)
    (tmp_path / "data" / "first.jsonl").write_text("")
    from dsc.core.errors import BuildError

    with pytest.raises(BuildError, match="no rows to build from: sources 'first', 'more' read 0 rows"):
        build(spec, tmp_path / "out2", cache=False)


def test_the_row_accounting_names_why_rows_were_filtered(tmp_path):
    spec = _project(tmp_path, extra="filters:\n  - {where: {source: first}, finished: 'never'}\n")
    build(spec, tmp_path / "out", cache=False)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "+ filtered 40 (filter: finished 40)" in card


def test_a_prepended_turn_reads_a_field_of_a_json_prompt_file(tmp_path):
    spec = _project(tmp_path, extra="assemble:\n  prepend:\n    - {role: system, file: prompts.json, field: 0.value}\n")
    instruction = "Solve the task step by step.\n  Keep   its whitespace."
    (tmp_path / "prompts.json").write_text(json.dumps([{"from": "human", "value": instruction},
                                                       {"from": "gpt", "value": "OK."}]))
    build(spec, tmp_path / "out", cache=False)
    rows = pq.read_table(next((tmp_path / "out" / "data").glob("train-*.parquet")), columns=["messages"])
    first = rows.column("messages")[0].as_py()[0]
    assert first["role"] == "system" and first["content"] == instruction


def test_a_missing_prompt_field_is_a_located_spec_error(tmp_path):
    from typer.testing import CliRunner

    from dsc.cli.root import app

    spec = _project(tmp_path, extra="assemble:\n  prepend:\n    - {role: system, file: prompts.json, field: 3.value}\n")
    (tmp_path / "prompts.json").write_text(json.dumps([{"from": "human", "value": "x"}]))
    r = CliRunner().invoke(app, ["validate", str(spec)])
    assert r.exit_code == 2 and "has no field '3.value'" in r.output and "spec.yaml:" in r.output
    spec.write_text(spec.read_text().replace("prompts.json, field: 3.value", "prompts.txt, field: 0"))
    r = CliRunner().invoke(app, ["validate", str(spec)])
    assert r.exit_code == 2 and "`field` reads a value of a .json or .jsonl `file`" in r.output
