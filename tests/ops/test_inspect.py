"""dsc inspect: supervised spans (token by token when tokenised), conditioning strings, stats."""
from __future__ import annotations

import json
import shutil

import pytest
from artifact_helpers import make_project, tokenize_block
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine.driver import build
from dsc.artifact.inspection import (CONDITION_STYLE, CONTEXT_STYLES, IGNORE_INDEX, SPAN_SUPERVISED,
    SUPERVISED_STYLES, artifact_stats, conditioning_strings, find_rows, styled_text)
from dsc.ops.tokens import find_tokenizer
from dsc.artifact.reader import open_artifact

runner = CliRunner()


@pytest.fixture(scope="module")
def tokenised(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("inspect")
    tok = root / "tok"
    shutil.copytree(tiny_tokenizer_dir, tok)
    spec = make_project(root, rows=20, extra=tokenize_block(tok))
    build(spec, root / "build" / "t")
    return root / "build" / "t", tok


def styled_ranges(text, styles):
    return [(s.start, s.end) for s in text.spans if str(s.style) in styles]


def test_tokens_are_shown_one_by_one_with_their_labels(tokenised):
    artifact, tok = tokenised
    art = open_artifact(artifact)
    view, note = find_tokenizer(art.manifest, art.path)  # found beside the artifact's spec directory
    assert view is not None and view.source.resolve() == tok.resolve(), note
    [(split, row)] = find_rows(art, n=1)
    text, mode = styled_text(row, view, {})
    assert mode == "tokens" and text.plain == row["text"]
    sup = styled_ranges(text, SUPERVISED_STYLES)
    ctx = styled_ranges(text, CONTEXT_STYLES)
    assert len(sup) + len(ctx) == len(row["input_ids"])
    assert len(sup) == sum(1 for t in row["labels"] if t != IGNORE_INDEX)
    # Every supervised character span is covered by supervised tokens.
    covered = {i for a, b in sup for i in range(a, b)}
    assert all(i in covered for a, b in row["loss_spans"] for i in range(a, b))


def test_without_a_matching_tokenizer_spans_are_shown_on_the_text(tokenised, tmp_path, tiny_tokenizer_dir):
    artifact, _ = tokenised
    art = open_artifact(artifact)
    other = tmp_path / "other"
    shutil.copytree(tiny_tokenizer_dir, other)
    cfg = other / "tokenizer_config.json"
    cfg.write_text(cfg.read_text().replace("}", ', "x": 1}', 1))  # same tokens, another hash
    view, note = find_tokenizer(art.manifest, art.path, other)
    assert view is None and "differs from the one the artifact was built with" in note
    [(_, row)] = find_rows(art, n=1)
    text, mode = styled_text(row, None, {})
    assert mode == "spans"
    assert styled_ranges(text, {SPAN_SUPERVISED}) == [tuple(s) for s in row["loss_spans"]]


def test_conditioning_strings_are_highlighted():
    from dsc.artifact.manifest import Inference, InferenceCondition, Manifest

    # only the two parts conditioning_strings reads
    manifest = Manifest.model_construct(
        spec={"condition": {"strings": {"success": " Solve it **correctly**.", "failure": " Fail."}}},
        inference=Inference(messages=[], label="success",
                            condition=InferenceCondition(turn="question", position="suffix",
                                                         string=" Solve it **correctly**.")))
    conditions = conditioning_strings(manifest)
    assert conditions == {"failure": " Fail.", "success": " Solve it **correctly**."}
    text = "<|im_start|>user\nQ? Solve it **correctly**.<|im_end|>\n<|im_start|>assistant\nA<|im_end|>"
    row = {"text": text, "loss_spans": [[len(text) - 11, len(text)]]}
    styled, _ = styled_text(row, None, conditions)
    start = text.index(" Solve")
    assert styled_ranges(styled, {CONDITION_STYLE}) == [(start, start + len(" Solve it **correctly**."))]


def test_cli_by_id_prefix_split_and_stats(tokenised):
    artifact, _ = tokenised
    art = open_artifact(artifact)
    [(_, row)] = find_rows(art, split="validation", n=1)
    short = row["id"].split(":")[1][:8]
    r = runner.invoke(app, ["inspect", str(artifact), "--id", short])
    assert r.exit_code == 0, r.output
    assert row["id"] in r.output and "split validation" in r.output and "tokens supervised" in r.output
    assert "rows" in r.output and "supervised tokens" in r.output  # the stats table
    r = runner.invoke(app, ["inspect", str(artifact), "--split", "valdation"])
    assert r.exit_code == 2 and "did you mean 'validation'" in r.output
    r = runner.invoke(app, ["inspect", str(artifact), "--id", "zzzz"])
    assert r.exit_code == 2 and "no row with id 'zzzz'" in r.output
    r = runner.invoke(app, ["inspect", str(artifact / "data")])
    assert r.exit_code == 2 and "not a dsc artifact" in r.output


def test_stats_agree_with_the_manifest(tokenised):
    artifact, _ = tokenised
    art = open_artifact(artifact)
    stats = artifact_stats(art)
    counts = art.manifest.counts.model_dump()
    assert {s: t.rows for s, t in stats.splits.items()} == counts["written"]
    assert {s: t.supervised_chars for s, t in stats.splits.items()} == counts["supervised_chars"]
    assert {s: t.supervised_tokens for s, t in stats.splits.items()} == counts["supervised_tokens"]
    r = runner.invoke(app, ["inspect", str(artifact), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["unit"] == "tokens" and data["by"]["source"]["train"]["chat"]["rows"] == counts["written"]["train"]
    assert data["lengths"]["train"]["max"] >= data["lengths"]["train"]["median"] > 0
