"""dsc plan: the build's per-stage counts and version, with nothing written."""
from __future__ import annotations

import json
import os
import tempfile

from artifact_helpers import input_lines, make_project, write_input_lines
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.ops.plan import plan

runner = CliRunner()


def snapshot(root):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


def test_plan_writes_nothing(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    spec = make_project(project)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the dry run may stage, then remove
    before = snapshot(project)
    r = runner.invoke(app, ["plan", str(spec)])
    assert r.exit_code == 0, r.output
    assert snapshot(project) == before  # no build/, no dsc.lock, nothing touched
    assert os.listdir(scratch) == []
    assert "nothing written" in r.output and "would build version" in r.output


def test_plan_reports_the_builds_own_counts_and_version(tmp_path):
    spec = make_project(tmp_path)
    lines = input_lines(tmp_path)
    write_input_lines(tmp_path, lines[:10] + ["{broken"] + lines[10:])
    report = plan(spec)
    result = build(spec)
    assert report.version == result.manifest["version"]
    assert report.counts == result.manifest["counts"]
    stages = {s.name: dict(s.rows) for s in report.stages}
    assert stages["read"] == {"chat": len(lines) + 1, "total": len(lines) + 1}
    assert stages["quarantine"]["quarantined in all"] == 1
    assert any(k.startswith("read: broken JSON") for k in stages["quarantine"])
    assert stages["split"]["written train"] == result.written["train"]
    assert stages["split"]["written validation"] == result.written["validation"]
    # Now the artifact exists: the plan says whether a build would change it.
    again = plan(spec)
    assert again.existing_version == again.version == result.manifest["version"]
    r = runner.invoke(app, ["plan", str(spec), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["version"] == report.version and data["stages"][0]["name"] == "read"
    assert "already that version" in " ".join(runner.invoke(app, ["plan", str(spec)]).output.split())


def test_plan_reports_spec_errors_like_build(tmp_path):
    spec = make_project(tmp_path)
    spec.write_text(spec.read_text().replace("loss: assistant", "los: assistant"))
    r = runner.invoke(app, ["plan", str(spec)])
    assert r.exit_code == 2 and "unknown key 'los'" in r.output
