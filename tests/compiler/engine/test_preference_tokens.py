"""`tokenize:` for preference artifacts: each side's token ids and labels, checked against what
the artifact's template renders (transformers' `apply_chat_template(tokenize=True)` on the
row's messages gives the same ids), the prompt masked, the completion supervised; the counts and
`dsc inspect` read the tokens back; max_length drops or truncates a side."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dsc.artifact.inspection import IGNORE_INDEX, artifact_stats
from dsc.artifact.reader import open_artifact
from dsc.compiler.engine.driver import build

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def root(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    root = tmp_path_factory.mktemp("pref-tokens")
    shutil.copytree(REPO / "specs" / "data" / "nat", root / "data" / "nat")
    shutil.copytree(tiny_tokenizer_dir, root / "tok")
    return root


def build_kind(root: Path, kind: str, tokenize: str, name: str) -> Path:
    text = (REPO / "specs" / "nat-dpo.yaml").read_text().replace("kind: dpo", f"kind: {kind}")
    (root / f"{name}.yaml").write_text(text + f"\ntokenize: {tokenize}\n")
    return Path(build(root / f"{name}.yaml", root / "build" / name, cache=False).out_dir)


def rows(path: Path) -> list[dict]:
    art = open_artifact(path)
    return [r for s in art.splits for r in art.rows(s)]


def hf_tokenizer(root: Path, artifact: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "tok")
    tok.chat_template = (artifact / "chat_template.jinja").read_text()
    return tok


def clean(messages: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


@pytest.mark.parametrize("kind", ["dpo", "kto"])
def test_each_side_is_its_rendering_tokenised_prompt_masked(root, kind):
    path = build_kind(root, kind, "{tokenizer: tok}", kind)
    tok = hf_tokenizer(root, path)
    sides = ("chosen", "rejected") if kind == "dpo" else ("completion",)
    got = rows(path)
    assert got
    sup_tokens = 0
    for row in got:
        prompt_ids = row["prompt_input_ids"]
        assert prompt_ids == tok(row["prompt_text"], add_special_tokens=False)["input_ids"]
        for side in sides:
            ids, labels = row[f"{side}_input_ids"], row[f"{side}_labels"]
            # what the template renders, tokenised as transformers does it
            assert ids == tok.apply_chat_template(clean(row["prompt"]) + clean(row[side]), tokenize=True,
                                                  return_dict=False)
            assert tok.decode(ids) == row["prompt_text"] + row[f"{side}_text"]
            n = len(prompt_ids)
            assert ids[:n] == prompt_ids and set(labels[:n]) == {IGNORE_INDEX}
            assert labels[n:] == ids[n:] and len(ids) > n
            sup_tokens += len(ids) - n
    manifest = json.loads((path / "manifest.json").read_text())
    assert sum(manifest["counts"]["supervised_tokens"].values()) == sup_tokens
    stats = artifact_stats(open_artifact(path))
    assert stats.unit == "tokens" and sum(t.supervised_tokens for t in stats.splits.values()) == sup_tokens
    # the objective's own columns are untouched: the same rows as the untokenised build
    plain = {r["id"]: r for r in rows(build_kind(root, kind, "null", f"{kind}-plain"))}
    assert {r["id"] for r in got} == set(plain)
    assert all(r[k] == plain[r["id"]][k] for r in got for k in plain[r["id"]])


def test_max_length_drops_or_truncates_a_side(root):
    full = rows(build_kind(root, "dpo", "{tokenizer: tok}", "dpo-full"))
    longest = max(len(r[f"{s}_input_ids"]) for r in full for s in ("chosen", "rejected"))
    prompt = max(len(r["prompt_input_ids"]) for r in full)
    limit = (prompt + longest) // 2
    assert prompt < limit < longest
    dropped_path = build_kind(root, "dpo", f"{{tokenizer: tok, max_length: {limit}}}", "dpo-drop")
    kept = rows(dropped_path)
    too_long = {r["id"] for r in full if max(len(r["chosen_input_ids"]), len(r["rejected_input_ids"])) > limit}
    assert too_long and {r["id"] for r in kept} == {r["id"] for r in full} - too_long
    quarantine = [json.loads(x) for x in (dropped_path / "quarantine.jsonl").read_text().splitlines()]
    assert sum(1 for q in quarantine if q["stage"] == "tokenize") == len(too_long)
    cut = rows(build_kind(root, "dpo", f"{{tokenizer: tok, max_length: {limit}, overflow: truncate}}", "dpo-cut"))
    by_id = {r["id"]: r for r in full}
    assert len(cut) == len(full)
    for r in cut:
        for s in ("chosen", "rejected"):
            assert r[f"{s}_input_ids"] == by_id[r["id"]][f"{s}_input_ids"][:limit]
            assert r[f"{s}_labels"] == by_id[r["id"]][f"{s}_labels"][:limit]
