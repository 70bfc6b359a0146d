"""Spec loading: strict keys, located one-line errors, exit code 2 from the CLI."""
from pathlib import Path
import json

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.core.errors import SpecError
from dsc.spec.model import json_schema
from dsc.compiler.engine.validation import load_spec

GOOD = """\
dsc: 1
name: t
seed: 1
sources:
  chat:
    path: data.jsonl
    format: openai
template: chatml
loss: assistant
split: {validation: 0.1}
"""


def write(tmp: Path, text: str, data: bool = True) -> Path:
    if data:
        (tmp / "data.jsonl").write_text(json.dumps({"messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    p = tmp / "spec.yaml"
    p.write_text(text)
    return p


def error_of(path: Path) -> SpecError:
    with pytest.raises(SpecError) as e:
        load_spec(path)
    return e.value


def test_good_spec_loads(tmp_path):
    loaded = load_spec(write(tmp_path, GOOD))
    assert loaded.spec.name == "t"
    assert loaded.spec.split.validation == 0.1


def test_unknown_top_level_key_is_located_with_did_you_mean(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("sources:", "sorces:")))
    assert (err.line, err.col) == (4, 1)
    assert "unknown key 'sorces'" in err.message and "did you mean 'sources'" in err.message
    assert str(err).startswith(f"{tmp_path / 'spec.yaml'}:4:1: ")


def test_unknown_nested_key(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("    format: openai", "    format: openai\n    limt: 3")))
    assert err.line == 8 and "unknown key 'limt'" in err.message and "did you mean 'limit'" in err.message


def test_wrong_type_is_located(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("seed: 1", "seed: many")))
    assert err.line == 3 and "seed" in err.message


def test_bad_enum_value_lists_allowed(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("loss: assistant", "loss: asistant")))
    assert err.line == 9 and "did you mean 'assistant'" in err.message and "per-message" in err.message


def test_missing_required_key(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("name: t\n", "")))
    assert "missing required key 'name'" in err.message


def test_missing_input_file_is_located(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("data.jsonl", "nope.jsonl")))
    assert err.line == 6 and "nope.jsonl" in err.message


def test_unknown_template_and_broken_jinja(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("template: chatml", "template: chatm")))
    assert err.line == 8 and "chatml" in err.message
    (tmp_path / "broken.jinja").write_text("{% for m in messages %}{{ m.content }}\n{% endfo %}")
    err = error_of(write(tmp_path, GOOD.replace("template: chatml", "template: broken.jinja")))
    # located in the template file itself, at the Jinja error's own line
    assert err.file.endswith("broken.jinja") and err.line == 2 and "endfor" in err.message


def test_bad_yaml_is_located(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("seed: 1", "seed: [1")))
    assert err.line is not None and "invalid YAML" in err.message


def test_wrong_format_version(tmp_path):
    err = error_of(write(tmp_path, GOOD.replace("dsc: 1", "dsc: 2")))
    assert err.line == 1 and "dsc: 2" in err.message


def test_max_bad_rows_forms(tmp_path):
    for value, expected in (("5", 5), ("0.5", 0.5), ("'2%'", 0.02)):
        loaded = load_spec(write(tmp_path, GOOD + f"max_bad_rows: {value}\n"))
        assert loaded.spec.max_bad_rows == expected
    err = error_of(write(tmp_path, GOOD + "max_bad_rows: lots\n"))
    assert err.line == 11


@pytest.mark.parametrize("edit", [
    lambda s: s.replace("sources:", "sorces:"),
    lambda s: s.replace("seed: 1", "seed: many"),
    lambda s: s.replace("data.jsonl", "nope.jsonl"),
    lambda s: s.replace("template: chatml", "template: nope.jinja"),
])
def test_cli_validate_bad_spec_exits_2_with_one_message(tmp_path, edit):
    path = write(tmp_path, edit(GOOD))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert "Traceback" not in out
    assert len(out.splitlines()) == 1 and "spec.yaml:" in out


def test_cli_validate_and_schema(tmp_path):
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0 and "ok" in result.output
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "sources" in schema["properties"] and schema["additionalProperties"] is False
    assert json_schema()["title"] == "dsc spec"


def test_cli_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("dsc ")
