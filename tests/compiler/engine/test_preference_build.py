"""Building preference artifacts: specs/nat-dpo.yaml (and KTO / step variants of it) builds,
deterministically and byte-identically across worker counts, `dsc verify` accepts it, specs
without `preference:` keep their versions, and bad configurations are located spec errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dsc.artifact.reader import open_artifact
from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.ops.verify import verify

REPO = Path(__file__).resolve().parents[3]
NAT_VERSION = "3faf8d0718bfaf7c"  # specs/nat.yaml's artifact version: a new section must not move it
runner = CliRunner()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def nat_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pref")
    shutil.copytree(REPO / "specs" / "data" / "nat", root / "data" / "nat")
    return root


def variant(root: Path, name: str, old: str, new: str) -> Path:
    text = (REPO / "specs" / "nat-dpo.yaml").read_text()
    assert old in text
    path = root / f"{name}.yaml"
    path.write_text(text.replace(old, new))
    return path


@pytest.fixture(scope="module")
def dpo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dpo") / "nat-dpo"
    build(REPO / "specs" / "nat-dpo.yaml", out, workers=1, cache=False)
    return out


def test_nat_dpo_has_trl_columns_and_pairs_within_questions(dpo):
    art = open_artifact(dpo)
    pref = art.manifest.preference
    assert art.manifest.kind == "dpo" and pref.pairs > 0 and pref.granularity == "trajectory"
    assert sum(pref.rows.values()) == pref.pairs
    t = pq.read_table(art.shards("train")[0])
    assert t.column_names[:6] == ["id", "group", "prompt", "chosen", "rejected", "tools"]
    per_group: dict[str, int] = {}
    for row in t.to_pylist():
        per_group[row["group"]] = per_group.get(row["group"], 0) + 1
        assert row["score_gap"] == 1.0 and row["chosen_id"] != row["rejected_id"]
        assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert "**correctly**" not in row["prompt_text"]  # conditioning is off for pairs
        assert row["prompt_text"].endswith("[/INST]") and row["chosen_text"] and row["rejected_text"]
    assert max(per_group.values()) <= 3
    # Every pair of a question lands in one split.
    groups = {s: set(pq.read_table(p, columns=["group"]).column("group").to_pylist())
              for s in art.splits for p in art.shards(s)}
    assert not (groups["train"] & groups.get("validation", set()))


def test_build_is_byte_identical_across_workers_and_verifies(dpo, tmp_path):
    again = tmp_path / "w2"
    build(REPO / "specs" / "nat-dpo.yaml", again, workers=2, cache=False)
    assert tree_bytes(again) == tree_bytes(dpo)
    report = verify(REPO / "specs" / "nat-dpo.yaml", dpo, cache=False)
    assert report.ok, report.summary()


def test_specs_without_preference_keep_their_versions(tmp_path):
    result = build(REPO / "specs" / "nat.yaml", tmp_path / "nat", cache=False)
    assert result.manifest["version"].startswith(NAT_VERSION)
    assert "preference" not in result.manifest and "preference" not in result.manifest["spec"]


def test_kto_rows_and_class_counts(nat_root, tmp_path):
    spec = variant(nat_root, "kto", "kind: dpo", "kind: kto")
    result = build(spec, tmp_path / "kto", cache=False)
    art = open_artifact(tmp_path / "kto")
    pref = art.manifest.preference
    assert art.manifest.kind == "kto" and pref.kto_classes is not None
    rows = [r for s in art.splits for p in art.shards(s) for r in pq.read_table(p).to_pylist()]
    assert {"prompt", "completion", "label", "tools"} <= set(rows[0])
    for split, n in result.written.items():
        assert pref.kto_classes["desirable"][split] + pref.kto_classes["undesirable"][split] == n
    assert len({r["id"] for r in rows}) == len(rows)  # each side once


def test_step_granularity_quarantines_pairs_it_cannot_cut(nat_root, tmp_path):
    spec = variant(nat_root, "step", "granularity: trajectory", "granularity: step")
    build(spec, tmp_path / "step", cache=False)
    art = open_artifact(tmp_path / "step")
    rows = [r for s in art.splits for p in art.shards(s) for r in pq.read_table(p).to_pylist()]
    assert rows and all(len(r["chosen"]) == 1 == len(r["rejected"]) for r in rows)
    quarantine = [json.loads(line) for line in (tmp_path / "step" / "quarantine.jsonl").read_text().splitlines()]
    cut = [q for q in quarantine if q["stage"] == "preference"]
    assert len(cut) == art.manifest.preference.unpairable
    assert all("not an assistant turn" in q["reason"] or "ends where" in q["reason"] for q in cut)


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_where_naming_an_unknown_class_is_a_located_error(nat_root):
    spec = variant(nat_root, "typo", "rejected: {label: failure}", "rejected: {label: failrue}")
    r = runner.invoke(app, ["build", str(spec), "--out", str(nat_root / "out-typo")])
    assert r.exit_code == 2
    assert f"{spec}:{line_of(spec, 'rejected:')}:" in r.output
    assert "failrue" in r.output and "did you mean 'failure'" in r.output


def test_no_pair_possible_is_a_located_error(nat_root):
    # Successful rows only come from the positive source: nothing is left to prefer them over.
    spec = variant(nat_root, "nopairs", "rejected: {label: failure}", "rejected: {label: failure, source: positive}")
    r = runner.invoke(app, ["build", str(spec), "--out", str(nat_root / "out-nopairs")])
    assert r.exit_code == 2, r.output
    assert f"{spec}:{line_of(spec, 'preference:')}:" in r.output and "made no pair" in r.output


def test_same_sides_are_a_located_error(nat_root):
    spec = variant(nat_root, "same", "rejected: {label: failure}", "rejected: {label: success}")
    r = runner.invoke(app, ["validate", str(spec)])
    assert r.exit_code == 2 and "select the same rows" in r.output
    assert f"{spec}:{line_of(spec, 'preference:')}:" in r.output or f"{spec}:{line_of(spec, 'chosen:')}:" in r.output
