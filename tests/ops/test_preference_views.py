"""dsc inspect, report and diff on preference artifacts (DPO pairs, KTO rows): no SFT columns
(`text`, `loss_spans`, `meta`), so they count the rendered prompt/completion texts, show a pair's
prompt with its chosen and rejected sides side by side (in the report, where the sides part
marked), and diff pairs by id with their texts."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.artifact.inspection import (
    artifact_stats,
    common_prefix,
    find_rows,
    row_panel,
    row_text,
)
from dsc.artifact.reader import open_artifact
from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.ops.diff import diff_artifacts
from dsc.ops.report import write_report

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "src" / "dsc" / "ops" / "assets"
runner = CliRunner()


@pytest.fixture(scope="module")
def pref(tmp_path_factory) -> dict[str, Path]:
    """specs/nat-dpo.yaml as dpo and kto, and a dpo variant whose question turn is worded
    differently (the same pairs, by id, with other prompt texts) and keeps 2 pairs a question."""
    root = tmp_path_factory.mktemp("pref-views")
    shutil.copytree(REPO / "specs" / "data" / "nat", root / "data" / "nat")
    text = (REPO / "specs" / "nat-dpo.yaml").read_text()
    variant = text.replace('content: "Question: {{ lookup.questions.question }}."',
                           'content: "Q: {{ lookup.questions.question }}"').replace("per_group_max: 3  ", "per_group_max: 2  ")
    assert variant != text and "per_group_max: 2" in variant
    specs = {"dpo": text, "kto": text.replace("kind: dpo", "kind: kto"), "dpo2": variant}
    out = {}
    for name, body in specs.items():
        (root / f"{name}.yaml").write_text(body)
        out[name] = build(root / f"{name}.yaml", root / "build" / name, cache=False).out_dir
    return {k: Path(v) for k, v in out.items()}


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_stats_read_back_what_the_build_counted(pref):
    for kind in ("dpo", "kto"):
        art = open_artifact(pref[kind])
        stats = artifact_stats(art)
        counts = manifest(pref[kind])["counts"]
        assert {s: t.rows for s, t in stats.splits.items()} == counts["written"]
        assert {s: t.supervised_chars for s, t in stats.splits.items()} == counts["supervised_chars"]
    # KTO's class is its label column; the card's and the manifest's counts agree
    stats = artifact_stats(open_artifact(pref["kto"]))
    classes = manifest(pref["kto"])["preference"]["kto_classes"]
    for cls in ("desirable", "undesirable"):
        assert {s: t.rows for s, per in stats.by["label"].items() for k, t in per.items() if k == cls} == \
            {s: n for s, n in classes[cls].items() if n}


def test_inspect_shows_prompt_chosen_and_rejected_side_by_side(pref):
    from rich.console import Console

    art = open_artifact(pref["dpo"])
    [(split, row)] = find_rows(art, n=1)
    console = Console(width=200, record=True, color_system=None)
    console.print(row_panel(split, row, None, {}))
    out = console.export_text()
    k = common_prefix(row["chosen_text"], row["rejected_text"])
    assert k < min(len(row["chosen_text"]), len(row["rejected_text"]))  # the sides do part
    assert f"the sides part at character {k}" in out and f"chosen {row['chosen_id']}" in out
    # the two sides are columns of one table: a line carries the start of both
    first_c, first_r = row["chosen_text"].splitlines()[0][:40], row["rejected_text"].splitlines()[0][:40]
    assert any(first_c in line and first_r in line[line.index(first_c) + len(first_c):] for line in out.splitlines())
    assert "prompt" in out and row["prompt_text"].splitlines()[1][:40] in out

    result = runner.invoke(app, ["inspect", str(pref["dpo"]), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "DPO pair" in result.output and "rows" in result.output
    result = runner.invoke(app, ["inspect", str(pref["kto"]), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert "KTO row" in result.output and "label desirable" in result.output
    result = runner.invoke(app, ["inspect", str(pref["dpo"]), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["splits"]["train"]["rows"] == manifest(pref["dpo"])["counts"]["written"]["train"]


def report_rows(page: Path) -> list[dict]:
    html = page.read_text()
    start = html.index('id="dsc-data">') + len('id="dsc-data">')
    return json.loads(html[start:html.index("</script>", start)])["rows"]


def test_report_rows_carry_the_pair_and_where_its_sides_part(pref, tmp_path):
    page, data = write_report(pref["dpo"], tmp_path / "dpo.html")
    total = sum(manifest(pref["dpo"])["counts"]["written"].values())
    rows = report_rows(page)
    assert len(rows) == data.total_rows == total  # every pair sampled (fewer than --sample)
    art = open_artifact(pref["dpo"])
    stored = {r["id"]: r for s in art.splits for r in art.rows(s)}
    for r in rows:
        row = stored[r["id"]]
        chosen, rejected = r["pair"]["sides"]
        assert (chosen["name"], rejected["name"]) == ("chosen", "rejected")
        assert r["pair"]["prompt"] == row["prompt_text"]
        assert (chosen["text"], rejected["text"]) == (row["chosen_text"], row["rejected_text"])
        k = chosen["part"]
        assert rejected["part"] == k == common_prefix(row["chosen_text"], row["rejected_text"])  # ASCII rows
        assert chosen["text"][:k] == rejected["text"][:k] and chosen["text"][k:k + 1] != rejected["text"][k:k + 1]
    html = page.read_text()
    assert "where the sides part" in html and "chosen (desirable)" in html

    page, _ = write_report(pref["kto"], tmp_path / "kto.html")
    rows = report_rows(page)
    assert len(rows) == sum(manifest(pref["kto"])["counts"]["written"].values())
    assert {r["label"] for r in rows} == {"desirable", "undesirable"}
    assert all(len(r["pair"]["sides"]) == 1 and r["pair"]["sides"][0]["part"] == 0 for r in rows)

    result = runner.invoke(app, ["report", str(pref["dpo"]), "--out", str(tmp_path / "cli.html")])
    assert result.exit_code == 0, result.output


def test_report_script_draws_the_sides_parted(pref, tmp_path):
    """The page's own script, run under node with a minimal DOM: each pair is drawn as the
    prompt, then two columns whose shared beginning is context and whose rest is marked."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the report's browser tests with chromium cover the page too)")
    page, _ = write_report(pref["dpo"], tmp_path / "dpo.html")
    done = subprocess.run([node, str(Path(__file__).with_name("report_dom_stub.js")), str(page)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    drawn = json.loads(done.stdout)
    assert drawn["ready"] == "1" and drawn["rows"]
    stored = {r["id"]: r for r in report_rows(page)}
    for row in drawn["rows"]:
        want = stored[row["id"]]["pair"]
        assert row["prompt"] == want["prompt"]
        for side, w in zip(row["sides"], want["sides"]):
            assert side["name"] == w["name"]
            assert side["spans"] == [s for s in (["ctx", w["text"][:w["part"]]],
                                                 [f"{w['cls']} parted", w["text"][w["part"]:]]) if s[1]]


def test_diff_matches_pairs_by_id_and_shows_their_texts(pref):
    from rich.console import Console

    from dsc.ops.diff import example_pairs, render_diff

    a, b = open_artifact(pref["dpo"]), open_artifact(pref["dpo2"])
    d = diff_artifacts(a, b)
    ids_a = {r["id"] for s in a.splits for r in a.rows(s, ["id"])}
    ids_b = {r["id"] for s in b.splits for r in b.rows(s, ["id"])}
    assert {r.id for r in d.removed} == ids_a - ids_b and ids_a - ids_b  # per_group_max 3 -> 2
    assert not d.added and {c.id for c in d.changed} == ids_a & ids_b
    for c in d.changed:  # the question turn was reworded: the prompt and its text changed, not the sides
        assert "prompt" in c.fields and "chosen" not in c.fields and "rejected" not in c.fields and "id" not in c.fields
    console = Console(width=220, record=True, color_system=None)
    examples = example_pairs(d, a, b, 1)
    render_diff(d, examples, console)
    out = console.export_text()
    assert "── chosen ──" in row_text(examples[0][1]) and "Question:" in out and "Q:" in out
    assert any(dd.what == "rows" and dd.delta < 0 for dd in d.counts)
    result = runner.invoke(app, ["diff", str(pref["dpo"]), str(pref["kto"]), "--json"])
    assert result.exit_code == 0, result.output
