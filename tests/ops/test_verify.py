"""dsc verify: an untouched artifact passes; a tampered one fails, naming what differs."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from artifact_helpers import make_project
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.ops.verify import verify

runner = CliRunner()


def built(tmp_path):
    spec = make_project(tmp_path)
    r = runner.invoke(app, ["build", str(spec)])
    assert r.exit_code == 0, r.output
    return spec, tmp_path / "build" / "t"


def verify_cli(*args):
    return runner.invoke(app, ["verify", *map(str, args)])


def test_verify_passes_on_an_untouched_artifact(tmp_path):
    spec, artifact = built(tmp_path)
    r = verify_cli(spec, artifact)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ok: ") and len(r.output.strip().splitlines()) <= 2
    # Default artifact (the one the lock names), and hidden files such as .gitattributes ignored.
    (artifact / ".gitattributes").write_text("data/** filter=lfs diff=lfs merge=lfs -text\n")
    assert verify_cli(spec).exit_code == 0


def test_verify_fails_on_a_tampered_parquet_naming_file_and_row(tmp_path):
    spec, artifact = built(tmp_path)
    shard = sorted((artifact / "data").glob("train-*.parquet"))[0]
    table = pq.read_table(shard)
    texts = table.column("text").to_pylist()
    texts[0] = texts[0].replace("Thought", "Thougth", 1)
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(texts))
    pq.write_table(table, shard, compression="zstd")
    r = verify_cli(spec, artifact)
    assert r.exit_code == 1
    assert f"data/{shard.name}: differs" in r.output
    assert "no longer matches the sha256 its own manifest records" in r.output
    assert "~1 changed" in r.output and f"changed {table.column('id')[0].as_py()}: text" in r.output


def test_verify_fails_on_a_tampered_card_extra_and_missing_files(tmp_path):
    spec, artifact = built(tmp_path)
    (artifact / "README.md").write_text((artifact / "README.md").read_text() + "\nedited\n")
    (artifact / "notes.txt").write_text("hi")
    (artifact / "quarantine.jsonl").unlink()
    report = verify(spec, artifact)
    assert not report.ok
    assert report.differences == ["README.md: differs", "notes.txt: not produced by the build (an extra file)",
                                  "quarantine.jsonl: missing from the artifact"]


def test_verify_explains_git_lfs_pointers(tmp_path):
    spec, artifact = built(tmp_path)
    shard = sorted((artifact / "data").glob("train-*.parquet"))[0]
    shard.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 123\n")
    r = verify_cli(spec, artifact)
    assert r.exit_code == 1 and "git-lfs pointer" in r.output and "git lfs pull" in r.output
    assert "Traceback" not in r.output


def test_verify_against_the_lock_alone(tmp_path):
    spec, artifact = built(tmp_path)
    shutil.rmtree(artifact)  # a repository that commits only the lock
    r = verify_cli(spec)
    assert r.exit_code == 0, r.output
    assert "dsc.lock" in r.output
    data = tmp_path / "data" / "chat.jsonl"
    data.write_bytes(data.read_bytes() + b"\n")
    r = verify_cli(spec)
    assert r.exit_code == 1 and "dsc.lock: input data/chat.jsonl (source 'chat') changed" in r.output


def test_verify_with_nothing_to_compare_or_a_missing_artifact(tmp_path):
    spec = make_project(tmp_path)
    r = verify_cli(spec)
    assert r.exit_code == 1 and "nothing to verify" in r.output
    r = verify_cli(spec, tmp_path / "nope")
    assert r.exit_code == 2 and "artifact directory not found" in r.output
