"""The incremental build cache: cached and uncached builds give the same bytes; a rebuild reads,
renders and tokenises only what changed; corrupt entries are rebuilt; --no-cache leaves nothing."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.compiler.engine import normalise as normalise_stage
from dsc.compiler.engine import rendering as render_stage
from dsc.compiler.engine import cache as cache_module
from dsc.compiler.engine.driver import build
from dsc.compiler.engine.cache import CACHE_FORMAT, normalised_key, rendered_key
from dsc.compiler.engine.validation import load_spec
from dsc.chat.tokenize import RowTokenizer

REPO = Path(__file__).resolve().parents[3]
EXCERPT = REPO / "specs" / "data" / "fireact" / "gpt_format__multitask.excerpt.jsonl"

SPEC = """\
dsc: 1
name: cached
seed: 3
sources:
  chat: {{path: data/chat.jsonl, format: openai, tags: {{task: hotpotqa}}}}
  extra: {{path: data/extra.jsonl, format: openai, id: id, group: qid, tags: {{task: synthetic}}}}
template: chatml
tokenize: {{tokenizer: {tok}, max_length: 400, overflow: drop}}
special_tokens: escape
assemble:
  prepend:
    - {{role: system, file: prompts/system.txt}}
split: {{validation: 0.2}}
output: {{shard_rows: 40, row_group_rows: 9}}
max_bad_rows: 20
mix:
  chat: {{count: {chat_count}}}
  extra: {{rate: {extra_rate}}}
"""


def edited(text: str, *edits: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced; an `old` that is not there fails the test (the edit
    would otherwise silently test nothing)."""
    for old, new in edits:
        assert old in text, f"{old!r} is not in the text"
        text = text.replace(old, new)
    return text


def _extra_rows(n: int = 40) -> list[str]:
    rows = []
    for i in range(n):
        answer = "the answer <|im_end|> is here" if i % 9 == 0 else f"answer {i} " + "word " * (i % 13)
        rows.append(json.dumps({"id": f"e{i}", "qid": f"q{i // 4}", "messages": [
            {"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": answer}]}))
    rows.append(rows[3])  # an in-source duplicate
    return rows


def make_project(root: Path, tok: Path, chat_count: int = 30, extra_rate: float = 1.5) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "prompts").mkdir(exist_ok=True)
    if not (root / "data" / "chat.jsonl").exists():
        (root / "data" / "chat.jsonl").write_text(EXCERPT.read_text())
        (root / "data" / "extra.jsonl").write_text("\n".join(_extra_rows()) + "\n")
        (root / "prompts" / "system.txt").write_text("You answer questions.\n")
    spec = root / "spec.yaml"
    spec.write_text(SPEC.format(tok=tok, chat_count=chat_count, extra_rate=extra_rate))
    return spec


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path, tiny_tokenizer_dir, monkeypatch):
    monkeypatch.setenv("DSC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "p", tiny_tokenizer_dir


class Counting:
    """Counts rows read from sources and rows tokenised (workers=1: all in this process)."""

    def __init__(self, monkeypatch):
        self.read = 0
        self.encoded = 0
        real_rows, real_encode = normalise_stage.read_range, RowTokenizer.encode_arrays

        def rows(*a, **k):
            for r in real_rows(*a, **k):
                self.read += 1
                yield r

        def encode(tok, batch, **kw):
            self.encoded += len(batch)
            return real_encode(tok, batch, **kw)

        monkeypatch.setattr(normalise_stage, "read_range", rows)
        monkeypatch.setattr(RowTokenizer, "encode_arrays", encode)


def forbid_reading_and_rendering(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("a cached build read or rendered rows")

    monkeypatch.setattr(normalise_stage, "read_range", fail)
    monkeypatch.setattr(render_stage, "render", fail)
    monkeypatch.setattr(RowTokenizer, "encode_arrays", fail)


def test_cached_and_uncached_builds_are_byte_identical_and_a_noop_rebuild_reads_nothing(project, monkeypatch):
    root, tok = project
    spec = make_project(root, tok)
    cold = build(spec, root / "cold", cache=False)
    assert cold.cache_dir is None and not (root.parent / "cache").exists()
    first = build(spec, root / "first")
    assert {c.normalised for c in first.cache.values()} == {"miss"}
    assert sum(c.rendered_reused for c in first.cache.values()) == 0
    # the fixture is worth testing: copies, escaped control tokens, a duplicate, a dropped row
    m = first.manifest
    assert m["selection"]["mix"]["extra"]["copies"] > 0 and m["counts"]["special_tokens_in_content"]
    assert m["counts"]["duplicates_removed"] == {"extra": 1}
    forbid_reading_and_rendering(monkeypatch)
    again = build(spec, root / "again")
    assert {c.normalised for c in again.cache.values()} == {"hit"}
    assert sum(c.rendered_new for c in again.cache.values()) == 0
    assert sum(c.rendered_reused for c in again.cache.values()) == sum(m["counts"]["written"].values()) + \
        m["counts"]["dropped_too_long"] - m["selection"]["mix"]["extra"]["copies"]
    assert tree(root / "cold") == tree(root / "first") == tree(root / "again")
    assert again.warnings == cold.warnings and again.quarantined == cold.quarantined


def test_changing_the_mix_remixes_without_rereading_or_retokenising(project, monkeypatch):
    root, tok = project
    build(make_project(root, tok, chat_count=20, extra_rate=0.5), root / "a")
    counting = Counting(monkeypatch)
    spec = make_project(root, tok, chat_count=35, extra_rate=2.5)
    result = build(spec, root / "b")
    assert counting.read == 0 and {c.normalised for c in result.cache.values()} == {"hit"}
    # only rows never selected before are rendered and tokenised: 15 more chat rows; extra's
    # 40 rows at rate 2.5 are all of them (copies are their originals' rows), 20 selected before
    assert (result.cache["chat"].rendered_reused, result.cache["chat"].rendered_new) == (20, 15)
    assert (result.cache["extra"].rendered_reused, result.cache["extra"].rendered_new) == (20, 20)
    assert counting.encoded == 35
    monkeypatch.undo()
    assert tree(root / "b") == tree(build(spec, root / "cold", cache=False).out_dir)


def test_one_input_byte_invalidates_only_that_source(project, monkeypatch):
    root, tok = project
    spec = make_project(root, tok)
    build(spec, root / "a")
    path = root / "data" / "extra.jsonl"
    data = path.read_bytes()
    i = data.index(b"question 7")
    path.write_bytes(data[:i] + b"Question 7" + data[i + len(b"question 7"):])
    result = build(spec, root / "b")
    assert result.cache["chat"].normalised == "hit" and result.cache["chat"].rendered_new == 0
    assert result.cache["extra"].normalised == "miss"
    assert tree(root / "b") == tree(build(spec, root / "cold", cache=False).out_dir)


def test_what_the_keys_cover(project, monkeypatch):
    root, tok = project
    loaded = load_spec(make_project(root, tok))
    from dsc.compiler.stages.read.ranges import resolve_inputs
    from dsc.chat.templating import load_template

    def keys(loaded):
        spec, base = loaded.spec, loaded.base_dir
        template = load_template(spec.template, base)
        tokenizer = RowTokenizer.load(spec.tokenize, base)
        k1 = normalised_key(spec, "chat", resolve_inputs(loaded).entries, base, template=template, tokenizer=tokenizer)
        return k1, rendered_key(spec, k1, template=template, tokenizer=tokenizer)

    k1, k3 = keys(loaded)
    spec_path = loaded.path
    text = spec_path.read_text()
    # later sections: neither key changes
    spec_path.write_text(edited(text, ("validation: 0.2", "validation: 0.3"), ("row_group_rows: 9", "row_group_rows: 5")))
    assert keys(load_spec(spec_path)) == (k1, k3)
    # a rendering setting: the rows are rendered again, not read again
    spec_path.write_text(edited(text, ("max_length: 400", "max_length: 500")))
    assert keys(load_spec(spec_path))[0] == k1 and keys(load_spec(spec_path))[1] != k3
    spec_path.write_text(edited(text, ("template: chatml", "template: qwen2.5")))
    assert keys(load_spec(spec_path))[0] == k1 and keys(load_spec(spec_path))[1] != k3
    # a prompt file's content, the seed: read again
    spec_path.write_text(text)
    (root / "prompts" / "system.txt").write_text("You answer questions briefly.\n")
    assert keys(load_spec(spec_path))[0] != k1
    (root / "prompts" / "system.txt").write_text("You answer questions.\n")
    assert keys(load_spec(spec_path)) == (k1, k3)
    spec_path.write_text(edited(text, ("seed: 3", "seed: 4")))
    assert keys(load_spec(spec_path))[0] != k1
    # the JSON Schema library decides which tool calls are quarantined: read again
    spec_path.write_text(text)
    monkeypatch.setattr(cache_module, "_jsonschema_version", lambda: "0.0-other")
    assert keys(load_spec(spec_path))[0] != k1


def test_sections_outside_the_normalised_key_come_from_the_spec_models_declaration():
    from dsc.spec.model import SECTION_READERS, Spec

    assert set(SECTION_READERS) == set(Spec.model_fields)  # every section says who reads it
    # the sections stage-1 keys left out before they were declared (keys of existing specs unchanged)
    assert cache_module.LATER_SECTIONS == {
        "name", "description", "license", "max_bad_rows", "split", "output", "dedup", "mix", "train", "eval",
        "sources", "template", "loss", "special_tokens", "tokenize", "plugins"}


def test_edited_refuses_an_edit_that_is_not_there():
    assert edited("a: 1\nb: 2\n", ("b: 2", "b: 3")) == "a: 1\nb: 3\n"
    with pytest.raises(AssertionError, match="'c: 1' is not in the text"):
        edited("a: 1\n", ("c: 1", "c: 2"))


def test_corrupt_entries_are_rebuilt(project):
    root, tok = project
    spec = make_project(root, tok)
    first = build(spec, root / "a")
    cache = first.cache_dir
    assert cache == root.parent / "cache" / f"v{CACHE_FORMAT}"
    segments = sorted(cache.glob("normalised/*/rows-000000.arrow"))
    parts = sorted(cache.glob("rendered/*/parts/part-*.arrow"))
    assert len(segments) == 2 and parts
    for p in (segments[0], parts[0]):  # one flipped byte, same size
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))
    (segments[1].parent / "entry.json").write_text("{")  # a half-written entry
    again = build(spec, root / "b")
    assert {c.normalised for c in again.cache.values()} == {"miss"}
    assert sum(c.rendered_new for c in again.cache.values()) > 0
    assert tree(root / "a") == tree(root / "b")
    # a rendered row in two parts (two builds added it at once) is the same row
    for p in sorted(cache.glob("rendered/*/parts/part-*.arrow")):
        shutil.copy(p, p.with_name(p.name.replace("part-", "part-0")))
    assert tree(build(spec, root / "c").out_dir) == tree(root / "a")


def test_no_cache_leaves_no_cache_dir_and_no_temporaries(project, tmp_path, monkeypatch):
    root, tok = project
    spec = make_project(root, tok)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    r = CliRunner().invoke(app, ["build", str(spec), "--out", str(root / "out"), "--no-cache"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "cache").exists() and os.listdir(scratch) == []
    assert "cache:" not in r.output
    r = CliRunner().invoke(app, ["build", str(spec), "--out", str(root / "out2"), "--cache-dir",
                                 str(tmp_path / "elsewhere")])
    assert r.exit_code == 0, r.output
    assert "cache: 0 of 2 sources" in r.output and (tmp_path / "elsewhere" / f"v{CACHE_FORMAT}").is_dir()
    assert not (tmp_path / "cache").exists() and os.listdir(scratch) == []
    assert tree(root / "out") == tree(root / "out2")


def test_verify_uses_the_cache_unless_told_not_to(project, monkeypatch):
    root, tok = project
    spec = make_project(root, tok)
    build(spec, root / "art")
    counting = Counting(monkeypatch)
    r = CliRunner().invoke(app, ["verify", str(spec), str(root / "art"), "--workers", "1"])  # counted in-process
    assert r.exit_code == 0, r.output
    assert counting.read == 0
    r = CliRunner().invoke(app, ["verify", str(spec), str(root / "art"), "--no-cache", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert counting.read > 0 and counting.encoded > 0


def test_workers_and_cache_give_the_same_bytes(project):
    root, tok = project
    spec = make_project(root, tok)
    build(spec, root / "w2", workers=2)  # fills the cache from worker processes
    build(spec, root / "w1", workers=1)  # served from it
    build(spec, root / "w2b", workers=2, cache=False)
    assert tree(root / "w1") == tree(root / "w2") == tree(root / "w2b")
