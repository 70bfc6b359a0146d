"""The artifact manifest's model (`dsc.artifact.manifest`): the writer's bytes go
through it unchanged, the committed JSON Schema is the model's, and readers refuse a manifest of
an unknown schema version or with unknown / missing keys with one clear error."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.artifact.manifest import (MANIFEST, READABLE_VERSIONS, ManifestVersionError, json_schema_text,
                                             manifest_text, parse_manifest, read_manifest, schema_path)
from dsc.artifact.reader import open_artifact
from dsc.core.errors import ArtifactError
from dsc.compiler.engine.driver import build
from dsc.runtime.artifact import load_artifact

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "specs").glob("*.yaml"))


@pytest.fixture(scope="module")
def nat_artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifest") / "nat"
    build(REPO / "specs" / "nat.yaml", out, workers=1)
    return out


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_example_spec_round_trips_through_the_model(spec, tmp_path):
    result = build(spec, tmp_path / "a", workers=1)
    written = (tmp_path / "a" / MANIFEST).read_text(encoding="utf-8")
    model = read_manifest(tmp_path / "a" / MANIFEST)
    assert manifest_text(model) == written  # the model gives back the very bytes it was read from
    # ... which are the JSON of the build's own manifest (key for key, absent keys absent)
    assert model.to_dict() == json.loads(written) == result.manifest
    assert written == json.dumps(result.manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_a_tokenised_weighted_artifact_round_trips_too(tmp_path):
    from artifact_helpers import make_project, tokenize_block
    from tiny import make_tokenizer

    tok = make_tokenizer(tmp_path / "tok")
    spec = make_project(tmp_path, rows=20, extra=tokenize_block(tok))
    weighted = "loss:\n  mode: assistant\n  weights:\n    - {pattern: 'Action', weight: 0.5}\n"
    spec.write_text(spec.read_text().replace("loss: assistant\n", weighted))
    result = build(spec, tmp_path / "a", workers=1)
    model = read_manifest(tmp_path / "a" / MANIFEST)
    assert model.tokenizer is not None and model.counts.supervised_tokens
    assert model.spec["loss"]["weights"]
    assert manifest_text(model) == (tmp_path / "a" / MANIFEST).read_text(encoding="utf-8")
    assert model.to_dict() == result.manifest


def test_committed_json_schema_is_the_models():
    path = schema_path(REPO)
    assert path.is_file(), f"run `python -m dsc.artifact.manifest` to write {path}"
    assert path.read_text(encoding="utf-8") == json_schema_text(), \
        "the Manifest model changed: run `python -m dsc.artifact.manifest` (and bump the schema version?)"


def _edited(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    m = json.loads((dst / MANIFEST).read_text())
    edit(m)
    (dst / MANIFEST).write_text(json.dumps(m))
    return dst


def test_a_newer_schema_version_is_refused_by_every_reader(nat_artifact, tmp_path):
    newer = max(READABLE_VERSIONS) + 1
    art = _edited(nat_artifact, tmp_path / "newer", lambda m: m.update(format=newer))
    expected = (f"has manifest schema v{newer} (written by a newer dsc: upgrade dsc to read it); "
                "this dsc reads manifest schema v1")
    for read in (open_artifact, load_artifact):
        with pytest.raises(ManifestVersionError, match=re.escape(expected)):
            read(art)
    for cmd in (["inspect", str(art)], ["report", str(art), "--out", str(tmp_path / "r.html")],
                ["diff", str(nat_artifact), str(art)], ["export", "lm-eval", str(art), "--out", str(tmp_path / "x")]):
        r = CliRunner().invoke(app, cmd)
        assert r.exit_code == 2, (cmd, r.output)
        assert f"manifest schema v{newer}" in r.output and "Traceback" not in r.output, (cmd, r.output)


def test_a_manifest_without_a_schema_version_is_refused(nat_artifact, tmp_path):
    art = _edited(nat_artifact, tmp_path / "unversioned", lambda m: m.pop("format"))
    with pytest.raises(ArtifactError, match=re.escape("no schema version (key `format`)")):
        open_artifact(art)


def test_unknown_and_missing_keys_are_clear_errors_not_key_errors(nat_artifact, tmp_path):
    def edit(m):
        m["countz"] = m.pop("counts")
        del m["template"]["sha256"]

    art = _edited(nat_artifact, tmp_path / "keys", edit)
    with pytest.raises(ArtifactError) as e:
        open_artifact(art)
    msg = str(e.value)
    assert "is not a valid dsc manifest (schema v1)" in msg
    assert "unknown key 'countz' (did you mean 'counts'?)" in msg
    assert "missing key 'counts'" in msg and "missing key 'template.sha256'" in msg
    r = CliRunner().invoke(app, ["inspect", str(art)])
    assert r.exit_code == 2 and "unknown key 'countz'" in r.output and "Traceback" not in r.output


def test_a_value_of_the_wrong_type_is_named(nat_artifact):
    m = json.loads((nat_artifact / MANIFEST).read_text())
    with pytest.raises(ArtifactError, match=re.escape("x/manifest.json is not a valid dsc manifest (schema v1): "
                                                      "'counts': input should be a valid dictionary")):
        parse_manifest({**m, "counts": "many"}, "x/manifest.json")
    with pytest.raises(ArtifactError, match="'counts.written.train': input should be a valid integer"):
        parse_manifest({**m, "counts": {**m["counts"], "written": {"train": "12"}}}, "x/manifest.json")
    with pytest.raises(ArtifactError, match="not a JSON object"):
        parse_manifest([1], "x/manifest.json")


def test_the_writer_checks_its_manifest_against_the_model(nat_artifact, tmp_path):
    from pydantic import ValidationError

    from dsc.compiler.stages.write.artifact import content_version, write_manifest

    fields = json.loads((nat_artifact / MANIFEST).read_text())
    del fields["version"]
    # optional keys stay absent (not null): adding one would change the bytes and the version
    fields.pop("plugins", None)
    fields["inference"].pop("dialect", None)
    written = write_manifest(tmp_path, fields)
    expected = {**fields, "version": content_version(fields)}
    assert (tmp_path / MANIFEST).read_text() == json.dumps(expected, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert (tmp_path / MANIFEST).read_bytes() == (nat_artifact / MANIFEST).read_bytes()
    assert written.version == json.loads((nat_artifact / MANIFEST).read_text())["version"]
    with pytest.raises(ValidationError):
        write_manifest(tmp_path, {**fields, "extra": 1})
