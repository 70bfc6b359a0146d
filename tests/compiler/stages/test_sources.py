"""Sources: spec validation, streamed reading of every file type, fingerprints, lookups,
and normalisation into the canonical record (ids, groups, meta)."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from dsc.core.errors import BuildError, SpecError
from dsc.record import BadRow
from dsc.compiler.stages.read.ranges import resolve_inputs, scan_file, scan_tasks
from dsc.compiler.stages.read.sources import RawRow, iter_raw_rows, load_lookup, normalise_row, resolve_files
from dsc.spec.model import read_spec
from dsc.spec.sources import SourceSpec

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def scanned(name, spec, base, target=None):
    """The source's files as the build scans them (cut for ranges of `target` bytes, if given)."""
    return [scan_file(t) for t in scan_tasks(name, spec, base, 1 if target else None, target)]


def chat(i: int, **extra) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}], **extra}


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def rows_of(tmp: Path, **spec) -> list[RawRow]:
    spec.setdefault("format", "openai")
    return list(iter_raw_rows("s", SourceSpec(**spec), tmp))


def spec_error(**spec) -> str:
    with pytest.raises(ValidationError) as e:
        SourceSpec(**spec)
    return str(e.value)


# ---------------------------------------------------------------------------------------------
# The spec entry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, message", [
    ({"format": "openai"}, "exactly one of `path`"),
    ({"path": "a.jsonl", "hub": {"id": "x/y", "revision": "abc"}, "format": "openai"}, "exactly one of `path`"),
    ({"hub": {"id": "x/y"}, "format": "openai"}, "revision"),
    ({"hub": {"id": "x/y", "revision": "main"}, "format": "openai"}, "revision 'main' is a branch that moves"),
    ({"hub": {"id": "x/y", "revision": "abc"}, "type": "jsonl", "format": "openai"}, "`type` applies to `path`"),
    ({"path": "a.jsonl", "format": "opnai"}, "unknown format 'opnai' (did you mean 'openai'?); registered: 'agent_flan', 'alpaca'"),
    ({"path": "a.jsonl"}, "missing `format`"),
    ({"path": "a.jsonl", "format": "sharegpt", "fields": {"contnt": "text"}},
     "format 'sharegpt' has no field 'contnt' (did you mean 'content'?); its fields: 'content', 'loss'"),
    ({"path": "a.jsonl", "format": "sharegpt", "fields": {"value": "text"}},
     "no field 'value' ('value' is the raw field that 'content' reads by default: write `content: <your field>`)"),
    ({"path": "a.jsonl", "format": "react", "fields": {"preamble": "drop"}}, "'preamble' must be one of"),
    ({"path": "a.txt", "format": "openai"}, "cannot tell the type of 'a.txt' from its extension"),
    ({"path": [], "format": "openai"}, "`path` is an empty list"),
    ({"path": "q.jsonl", "lookup": "id", "format": "openai"}, "a lookup source (`lookup: id`) is joined"),
    ({"path": "a.jsonl", "format": "openai", "limit": -1}, "greater than or equal to 0"),
    ({"path": "a.jsonl", "format": "openai", "limit": True}, "limit"),
    ({"path": "a.jsonl", "format": "openai", "tags": {"taks": "x"}}, "taks"),
    ({"path": "a.jsonl", "format": "openai", "weight": 2}, "weight"),
])
def test_spec_validation_messages(spec, message):
    assert message in spec_error(**spec)


def test_spec_accepts_the_documented_shapes():
    files = SourceSpec(path=["a/*.jsonl", "b.json"], format="nat", group="id",
                       tags={"task": "hotpotqa", "method": "react"}, limit=5, license="MIT")
    assert (files.path, files.format, files.group, files.limit, files.license) == (
        ["a/*.jsonl", "b.json"], "nat", "id", 5, "MIT")
    assert (files.tags.task, files.tags.method, files.tags.capability) == ("hotpotqa", "react", None)
    typed = SourceSpec(path="x.txt", type="jsonl", format="openai")
    assert (typed.path, typed.type, typed.hub) == ("x.txt", "jsonl", None)
    hub = SourceSpec(hub={"id": "internlm/Agent-FLAN", "revision": "0123abc", "split": "toolbench_negative"},
                     format="agent_flan")
    assert (hub.path, hub.hub.id, hub.hub.revision, hub.hub.split, hub.hub.config) == (
        None, "internlm/Agent-FLAN", "0123abc", "toolbench_negative", None)
    lookup = SourceSpec(path="questions.jsonl", lookup="id")
    assert (lookup.lookup, lookup.format) == ("id", None)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def test_jsonl_broken_line_yields_an_error_row_and_the_rest(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [chat(0), '{"messages": [1 2]}', "", chat(3), "[1, 2]"])
    rows = rows_of(tmp_path, path="d.jsonl")
    assert [r.row for r in rows] == [0, 1, 3, 4]  # row = line index; the blank line is skipped
    assert rows[0].data == chat(0) and rows[2].data == chat(3)
    assert rows[1].data is None and rows[1].error == "broken JSON on line 2: Expecting ',' delimiter: column 17"
    assert rows[3].error == "line 5 is a list, expected a JSON object"
    assert all(r.file == "d.jsonl" and r.source == "s" for r in rows)
    assert rows[0].file_sha256 == hashlib.sha256((tmp_path / "d.jsonl").read_bytes()).hexdigest()


def test_jsonl_bom_and_invalid_utf8(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(chat(0)).encode() + b"\n{\"a\": \"\xff\"}\n")
    rows = rows_of(tmp_path, path="d.jsonl")
    assert rows[0].data == chat(0) and rows[1].error == "line 2 is not valid UTF-8 (byte 7)"


def test_json_array_and_object_of_rows(tmp_path):
    (tmp_path / "arr.json").write_text(json.dumps([chat(0), 5, chat(2)], indent=2))
    rows = rows_of(tmp_path, path="arr.json")
    assert [r.data for r in rows] == [chat(0), None, chat(2)] and [r.row for r in rows] == [0, 1, 2]
    assert rows[1].error == "item 1 is a number, expected a JSON object"
    (tmp_path / "obj.json").write_text(json.dumps({"q1": chat(1, score=0.5), "q2": chat(2), "q3": "x"}))
    rows = rows_of(tmp_path, path="obj.json")
    assert [r.key for r in rows] == ["q1", "q2", "q3"]
    assert rows[0].data == chat(1, score=0.5) and isinstance(rows[0].data["score"], float)
    assert "the value of key 'q3' is a string, expected a JSON object" in rows[2].error
    conv = normalise_row(rows[0], "s", SourceSpec(path="obj.json", format="openai", id="__key__"))
    assert conv.group == "q1" and conv.meta.extra == {"score": 0.5, "__key__": "q1"}


def test_json_is_streamed_and_a_broken_file_is_a_build_error(tmp_path):
    # The tail is broken: with a limit the reader never gets there, which it only can if it
    # parses incrementally; without one the whole file is needed and the error is clear.
    (tmp_path / "d.json").write_text("[" + json.dumps(chat(0)) + ", " + json.dumps(chat(1)) + ", {broken")
    assert len(rows_of(tmp_path, path="d.json", limit=2)) == 2
    with pytest.raises(BuildError, match=r"d\.json has broken JSON after 2 rows"):
        rows_of(tmp_path, path="d.json")
    (tmp_path / "s.json").write_text('"just a string"')
    with pytest.raises(BuildError, match="is neither an array nor an object"):
        rows_of(tmp_path, path="s.json")


def test_iter_raw_rows_is_lazy(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [chat(i) for i in range(3)])
    it = iter_raw_rows("s", SourceSpec(path="d.jsonl", format="openai"), tmp_path)
    assert next(it).row == 0
    it.close()


def test_csv_fireact_bamboogle(fireact_dir):
    rows = list(iter_raw_rows("b", SourceSpec(path="bamboogle__test.csv", lookup="Question"), fireact_dir))
    assert len(rows) == 125 and set(rows[0].data) == {"Question", "Answer"}
    assert rows[0].data["Answer"] == "james madison"


def test_csv(tmp_path):
    (tmp_path / "d.csv").write_text("instruction,input,output\nq,,a\n\nq2,x\n\"multi\nline\",,b\n")
    rows = rows_of(tmp_path, path="d.csv", format="alpaca")
    assert rows[0].data == {"instruction": "q", "input": "", "output": "a"}
    assert rows[1].error == "CSV line 4: 2 fields, the header has 3"
    assert rows[2].data["instruction"] == "multi\nline" and [r.row for r in rows] == [0, 1, 2]


def test_parquet_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 2500  # more than one read batch
    table = pa.table({"instruction": [f"q{i}" for i in range(n)], "output": [f"a{i}" for i in range(n)],
                      "score": [i / 2 for i in range(n)]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=700)
    rows = rows_of(tmp_path, path="d.parquet", format="alpaca")
    assert len(rows) == n and [r.row for r in rows] == list(range(n))
    assert rows[2499].data == {"instruction": "q2499", "output": "a2499", "score": 1249.5}
    conv = normalise_row(rows[3], "s", SourceSpec(path="d.parquet", format="alpaca"))
    assert conv.messages[0].content == "q3" and conv.meta.extra == {"score": 1.5}
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(BuildError, match="cannot read bad.parquet as Parquet"):
        rows_of(tmp_path, path="bad.parquet")


def test_save_to_disk_directory(tmp_path):
    import datasets

    rows = [{"conversations": chat(i)["messages"], "id": f"q{i}", "info": {"reward": i % 2 == 0}} for i in range(5)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    spec = SourceSpec(path="ds", format="nat", fields={"role": "role"}, group="id")
    raws = list(iter_raw_rows("n", spec, tmp_path))
    assert [r.data for r in raws] == rows and raws[0].file == "ds"
    conv = normalise_row(raws[2], "n", spec)
    assert conv.group == "q2" and conv.meta.extra == {"id": "q2", "info": {"reward": True}}
    # The hash covers the data, not state.json (whose fingerprint depends on path and mtime).
    before = scanned("n", spec, tmp_path)[0].fingerprint()
    state = tmp_path / "ds" / "state.json"
    state.write_text(state.read_text().replace('"_fingerprint"', '"_fingerprint_x"'))
    assert scanned("n", spec, tmp_path)[0].sha256 == before["sha256"]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(BuildError, match=r"DatasetDict with splits 'train'; point `path` at one split"):
        rows_of(tmp_path, path="dd", format="nat")


def test_globs_are_sorted_and_deduplicated(tmp_path):
    write_jsonl(tmp_path / "data" / "b.jsonl", [chat(2)])
    write_jsonl(tmp_path / "data" / "a.jsonl", [chat(0), chat(1)])
    write_jsonl(tmp_path / "data" / "sub" / "c.jsonl", [chat(3)])
    for paths in (["data/*.jsonl", "data/a.jsonl"], ["data/b.jsonl", "./data/a.jsonl"], "data/**/*.jsonl"):
        rows = rows_of(tmp_path, path=paths)
        files = [r.file for r in rows]
        assert files == sorted(files) and len(set((r.file, r.row) for r in rows)) == len(rows)
    assert [(r.file, r.row) for r in rows] == [("data/a.jsonl", 0), ("data/a.jsonl", 1), ("data/b.jsonl", 0),
                                               ("data/sub/c.jsonl", 0)]
    fps = [s.fingerprint() for s in scanned("s", SourceSpec(path=["data/b.jsonl", "data/a.jsonl"], format="openai"),
                                                tmp_path)]
    assert [f["path"] for f in fps] == ["data/a.jsonl", "data/b.jsonl"]
    assert fps[0]["size"] == (tmp_path / "data" / "a.jsonl").stat().st_size
    assert fps[0]["sha256"] == hashlib.sha256((tmp_path / "data" / "a.jsonl").read_bytes()).hexdigest()


def test_limit_takes_the_first_rows_across_files(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [chat(0), "{bad"])
    write_jsonl(tmp_path / "b.jsonl", [chat(2), chat(3)])
    rows = rows_of(tmp_path, path="*.jsonl", limit=3)
    assert [(r.file, r.row) for r in rows] == [("a.jsonl", 0), ("a.jsonl", 1), ("b.jsonl", 0)]
    assert rows_of(tmp_path, path="*.jsonl", limit=0) == []


def test_missing_files_and_empty_globs_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match=r"source 's': file 'nope.jsonl' does not exist"):
        rows_of(tmp_path, path="nope.jsonl")
    with pytest.raises(SpecError, match=r"pattern 'data/\*.jsonl' matches no file"):
        resolve_files(SourceSpec(path="data/*.jsonl", format="openai"), tmp_path)
    (tmp_path / "plain").mkdir()
    with pytest.raises(SpecError, match="'plain' is a directory but not a `datasets` save_to_disk directory"):
        rows_of(tmp_path, path="plain")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(SpecError, match="cannot tell the type of 'x.txt'"):
        rows_of(tmp_path, path="x*")  # `*.txt` is refused by the spec check already


def test_hub_source_offline_is_a_clear_build_error(tmp_path):
    spec = SourceSpec(hub={"id": "dsc-test/does-not-exist", "revision": "0" * 40}, format="openai")
    start = time.monotonic()
    with pytest.raises(BuildError) as e:
        rows_of(tmp_path, **spec.model_dump(exclude_unset=True))
    assert time.monotonic() - start < 30
    msg = str(e.value)
    assert "cannot open hub dataset 'dsc-test/does-not-exist' (revision '0000000000" in msg
    assert "HF_HUB_OFFLINE" in msg
    (tmp_path / "spec.yaml").write_text(f"dsc: 1\nname: h\ntemplate: chatml\nsources:\n  s: {{hub: {{id: "
                                        f"dsc-test/does-not-exist, revision: '{'0' * 40}'}}, format: openai}}\n")
    assert resolve_inputs(read_spec(tmp_path / "spec.yaml")).entries == [
        {"source": "s", "path": f"hf://dsc-test/does-not-exist@{'0' * 40}/default/train", "size": None,
         "sha256": "0" * 40}]


def test_hub_rows_carry_the_revision(tmp_path, monkeypatch):
    import datasets

    calls = {}

    def fake_load(id_, config, *, revision, split, streaming):
        calls.update(id=id_, config=config, revision=revision, split=split, streaming=streaming)
        return iter([{"conversation": [{"role": "user", "content": "q"}], "id": "x"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    spec = SourceSpec(hub={"id": "o/d", "revision": "v1.0", "split": "s", "config": "c"}, format="agent_flan")
    rows = list(iter_raw_rows("h", spec, tmp_path))
    assert calls == {"id": "o/d", "config": "c", "revision": "v1.0", "split": "s", "streaming": True}
    assert (rows[0].file, rows[0].file_sha256, rows[0].row) == ("hf://o/d@v1.0/c/s", "v1.0", 0)


# ---------------------------------------------------------------------------------------------
# Lookups
# ---------------------------------------------------------------------------------------------


def test_load_lookup(tmp_path):
    write_jsonl(tmp_path / "q.jsonl", [{"id": 1, "question": "A?"}, {"id": "2", "question": "B?"},
                                       {"id": 1, "question": "A?"}])
    table = load_lookup(SourceSpec(path="q.jsonl", lookup="id"), tmp_path, "questions")
    assert table == {"1": {"id": 1, "question": "A?"}, "2": {"id": "2", "question": "B?"}}
    write_jsonl(tmp_path / "dup.jsonl", [{"id": 1, "question": "A?"}, {"id": 1, "question": "C?"}])
    with pytest.raises(BuildError, match=r"key '1' has two different rows \(dup.jsonl row 1 and dup.jsonl row 2\)"):
        load_lookup(SourceSpec(path="dup.jsonl", lookup="id"), tmp_path, "questions")
    write_jsonl(tmp_path / "nokey.jsonl", [{"qid": 1}])
    with pytest.raises(BuildError, match="nokey.jsonl row 1 has no key field 'id'"):
        load_lookup(SourceSpec(path="nokey.jsonl", lookup="id"), tmp_path)
    write_jsonl(tmp_path / "broken.jsonl", ["{"])
    with pytest.raises(BuildError, match="broken JSON on line 1"):
        load_lookup(SourceSpec(path="broken.jsonl", lookup="id"), tmp_path)


# ---------------------------------------------------------------------------------------------
# Normalisation: ids, groups, meta
# ---------------------------------------------------------------------------------------------


def test_ids_do_not_depend_on_file_order_or_position(tmp_path):
    rows = [chat(i) for i in range(4)]
    write_jsonl(tmp_path / "one" / "a.jsonl", rows)
    write_jsonl(tmp_path / "two" / "z.jsonl", rows[:2])
    write_jsonl(tmp_path / "two" / "b.jsonl", rows[:1:-1])
    ids = {}
    for d in ("one", "two"):
        spec = SourceSpec(path=f"{d}/*.jsonl", format="openai")
        ids[d] = {normalise_row(r, "src", spec).id for r in iter_raw_rows("src", spec, tmp_path)}
    assert ids["one"] == ids["two"] and len(ids["one"]) == 4
    assert all(i.startswith("src:") for i in ids["one"])


def test_id_group_and_meta(tmp_path):
    nat = {"conversations": [{"role": "assistant", "content": "Action: finish[Yes]", "loss": True}],
           "info": {"reward": False}, "id": "e48b", "source": "0.5"}
    write_jsonl(tmp_path / "neg.jsonl", [nat, {**nat, "id": "f00d"}, {**nat, "id": None}, {**nat, "id": [1]}])
    spec = SourceSpec(path="neg.jsonl", format="nat", id="id", tags={"task": "strategyqa", "method": "react"})
    raws = list(iter_raw_rows("neg", spec, tmp_path))
    a, b = (normalise_row(r, "neg", spec) for r in raws[:2])
    assert a.id != b.id  # same trajectory, different question: the raw id is part of the hash
    assert (a.group, b.group) == ("e48b", "f00d")  # the id field groups (NAT: negatives share it)
    assert a.meta.source == "neg" and (a.meta.task, a.meta.method, a.meta.capability) == ("strategyqa", "react", None)
    assert a.meta.provenance.to_dict() == {"file": "neg.jsonl", "file_sha256": raws[0].file_sha256, "row": 0,
                                           "steps": ["format:nat"]}
    assert a.meta.extra == {"info": {"reward": False}, "id": "e48b", "source": "0.5"}
    with pytest.raises(BadRow, match="missing id field 'id'"):
        normalise_row(raws[2], "neg", spec)
    with pytest.raises(BadRow, match="id field 'id' is a list, expected a string or a number"):
        normalise_row(raws[3], "neg", spec)
    # An explicit group field wins; without id/group fields the group is the id.
    by_source = SourceSpec(path="neg.jsonl", format="nat", group="info.reward")
    assert normalise_row(raws[0], "neg", by_source).group == "false"
    plain = normalise_row(raws[0], "neg", SourceSpec(path="neg.jsonl", format="nat"))
    assert plain.group == plain.id
    # The record round-trips through its Arrow-friendly dict.
    assert type(a).from_dict(a.to_dict()).to_dict() == a.to_dict()


def test_error_rows_become_bad_rows_with_their_reason(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", ["{oops", {"messages": [{"role": "narrator", "content": "x"}]}])
    spec = SourceSpec(path="d.jsonl", format="openai")
    raws = list(iter_raw_rows("s", spec, tmp_path))
    reasons = []
    for r in raws:
        with pytest.raises(BadRow) as e:
            normalise_row(r, "s", spec)
        reasons.append(e.value.reason)
    assert reasons[0].startswith("broken JSON on line 1: Expecting property name enclosed in double quotes")
    assert reasons[1].startswith("message 0: unknown role 'narrator' (allowed: ")


def test_values_that_json_cannot_hold_are_made_serialisable(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"instruction": ["q"], "output": ["a"], "when": [datetime.date(2024, 1, 2)],
                             "blob": [b"\x00\x01"]}), tmp_path / "d.parquet")
    spec = SourceSpec(path="d.parquet", format="alpaca")
    conv = normalise_row(next(iter_raw_rows("s", spec, tmp_path)), "s", spec)
    assert conv.meta.extra["when"] == "2024-01-02" and conv.meta.extra["blob"].startswith("<2 bytes, sha256 ")
    json.loads(conv.meta.to_dict()["extra"])


def test_deferred_jsonl_lines_parse_to_exactly_the_rows_read_directly(tmp_path):
    """Workers parse JSONL lines the main process only splits: the same rows, errors and row
    numbers, blank and Unicode-whitespace-only lines skipped, the BOM stripped."""
    lines = ["\ufeff" + json.dumps({"messages": [], "n": 1}), "", "   ", "\u00a0\u2028",
             "{broken", "[1, 2]", json.dumps({"n": "é 日本"}, ensure_ascii=False)]
    data = "\n".join(lines).encode("utf-8") + b"\n\xff\xfe not utf-8\n" + json.dumps({"last": True}).encode()
    (tmp_path / "d.jsonl").write_bytes(data)
    spec = SourceSpec(path="d.jsonl", format="openai")
    direct = list(iter_raw_rows("s", spec, tmp_path))
    deferred = list(iter_raw_rows("s", spec, tmp_path, defer_parsing=True))
    assert all(r.line is not None and r.data is None for r in deferred)
    parsed = [p for p in (r.parsed() for r in deferred) if p is not None]
    assert parsed == direct
    assert [r.row for r in direct] == [0, 4, 5, 6, 7, 8]
    assert direct[0].data == {"messages": [], "n": 1}
    assert "broken JSON on line 5" in direct[1].error and "not valid UTF-8" in direct[4].error
    # a limit counts parsed rows, so it is read in the main process
    limited = list(iter_raw_rows("s", SourceSpec(path="d.jsonl", format="openai", limit=2), tmp_path,
                                 defer_parsing=True))
    assert [r.line for r in limited] == [None, None] and limited == direct[:2]
