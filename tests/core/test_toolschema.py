"""Tool-call arguments are checked against the tool's JSON Schema with the `jsonschema` library:
real OpenAI-style tool specs (anyOf, oneOf, $ref/$defs, nested enum, a declared draft) accept the
calls they allow and quarantine the ones they do not, with the library's message and the JSON
path of the error; a bad schema is a located spec error."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dsc.cli.root import app
from dsc.core import toolschema
from dsc.compiler.engine.driver import build
from dsc.core.errors import SpecError
from dsc.record import BadRow
from dsc.dialects.tools import ToolDef, parse_arguments, tool_from_spec

# OpenAI's function-calling guide example, verbatim in shape.
WEATHER = {"type": "function", "function": {
    "name": "get_current_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"], "additionalProperties": False}}}

# A calendar tool as larger specs write them: shared definitions, alternatives, nested enums.
EVENT = {"type": "function", "function": {
    "name": "create_event", "description": "Create a calendar event",
    "parameters": {
        "type": "object",
        "$defs": {
            "person": {"type": "object", "properties": {
                "email": {"type": "string"}, "role": {"enum": ["required", "optional", "chair"]}},
                "required": ["email"], "additionalProperties": False},
            "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}},
        "properties": {
            "title": {"type": "string", "minLength": 1},
            "start": {"anyOf": [{"$ref": "#/$defs/date"},
                                {"type": "object", "properties": {"date": {"$ref": "#/$defs/date"},
                                                                  "time": {"type": "string"}},
                                 "required": ["date", "time"]}]},
            "attendees": {"type": "array", "items": {"$ref": "#/$defs/person"}},
            "repeat": {"oneOf": [{"type": "null"},
                                 {"type": "object", "properties": {"every": {"enum": ["day", "week", "month"]},
                                                                   "count": {"type": "integer", "minimum": 1}},
                                  "required": ["every"], "additionalProperties": False}]}},
        "required": ["title", "start"]}}}

# A schema that declares its draft (draft-07 `definitions`, `dependencies`).
LEGACY = {"name": "lookup", "parameters": {
    "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
    "definitions": {"kind": {"enum": ["isbn", "doi"]}},
    "properties": {"kind": {"$ref": "#/definitions/kind"}, "id": {"type": "string"}},
    "dependencies": {"kind": ["id"]}}}


def tool(spec: dict) -> ToolDef:
    return tool_from_spec(spec, "tools[0]")


def check(spec: dict, args: dict) -> dict:
    return parse_arguments(tool(spec), json.dumps(args), "action_input", "message 2")


@pytest.mark.parametrize("spec, args", [
    (WEATHER, {"location": "Paris, FR"}),
    (WEATHER, {"location": "Boston, MA", "unit": "fahrenheit"}),
    (EVENT, {"title": "Standup", "start": "2026-12-03"}),
    (EVENT, {"title": "Review", "start": {"date": "2026-12-04", "time": "10:00"},
             "attendees": [{"email": "a@x.org", "role": "chair"}, {"email": "b@x.org"}],
             "repeat": {"every": "week", "count": 4}}),
    (EVENT, {"title": "Once", "start": "2026-01-01", "repeat": None}),
    (LEGACY, {"kind": "doi", "id": "10.1/x"}),
    (LEGACY, {}),
])
def test_calls_the_schema_allows_pass(spec, args):
    assert check(spec, args) == args


@pytest.mark.parametrize("spec, args, message", [
    (WEATHER, {"location": "Paris", "unit": "kelvin"},
     "arguments.unit: 'kelvin' is not one of ['celsius', 'fahrenheit']"),
    (WEATHER, {"unit": "celsius"}, "arguments: 'location' is a required property"),
    (WEATHER, {"location": "Paris", "days": 3},
     "arguments: Additional properties are not allowed ('days' was unexpected)"),
    # $ref into $defs, inside array items: the path names the item
    (EVENT, {"title": "x", "start": "2026-01-01", "attendees": [{"email": "a@x.org"}, {"email": "b", "role": "boss"}]},
     "arguments.attendees[1].role: 'boss' is not one of ['required', 'optional', 'chair']"),
    (EVENT, {"title": "x", "start": "2026-01-01", "attendees": [{"name": "Ann"}]},
     "arguments.attendees[0]: 'email' is a required property"),
    # anyOf: neither a date string nor a {date, time} object
    (EVENT, {"title": "x", "start": "tomorrow"}, r"arguments.start: 'tomorrow' does not match '^\\d{4}-\\d{2}-\\d{2}$'"),
    (EVENT, {"title": "x", "start": {"date": "2026-01-01"}}, "arguments.start: 'time' is a required property"),
    # oneOf: the nested enum of the matching branch
    (EVENT, {"title": "x", "start": "2026-01-01", "repeat": {"every": "year"}},
     "arguments.repeat.every: 'year' is not one of ['day', 'week', 'month']"),
    (EVENT, {"title": "", "start": "2026-01-01"}, "arguments.title: '' should be non-empty"),
    # the declared draft-07 keywords are honoured
    (LEGACY, {"kind": "issn", "id": "x"}, "arguments.kind: 'issn' is not one of ['isbn', 'doi']"),
    (LEGACY, {"kind": "doi"}, "arguments: 'id' is a dependency of 'kind'"),
])
def test_calls_that_violate_the_schema_name_the_path_and_the_librarys_message(spec, args, message):
    with pytest.raises(BadRow) as e:
        check(spec, args)
    name = (spec.get("function") or spec)["name"]
    assert e.value.reason.startswith(f"message 2: arguments of '{name}' do not match its schema: ")
    assert message in e.value.reason, e.value.reason


def test_one_validator_per_schema_whatever_its_key_order():
    params = EVENT["function"]["parameters"]
    reordered = dict(reversed(list(params.items())))
    assert toolschema.validator(params) is toolschema.validator(reordered)
    assert toolschema.validator(params) is not toolschema.validator(WEATHER["function"]["parameters"])
    assert type(toolschema.validator(LEGACY["parameters"])).__name__ == "Draft7Validator"
    assert type(toolschema.validator(params)).__name__ == "Draft202012Validator"


@pytest.mark.parametrize("parameters, message", [
    ({"type": "object", "properties": {"n": {"type": "integr"}}},
     "`parameters` is not a valid JSON Schema (Draft202012): schema.properties.n.type: 'integr' is not valid"),
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": "0"}}},
     "schema.properties.n.minimum: '0' is not of type 'number'"),
    ({"type": "object", "properties": {"p": {"$ref": "#/$defs/missing"}}},
     "$ref '#/$defs/missing' points to nothing in the schema"),
    ({"type": "object", "properties": {"p": {"$ref": "https://example.com/person.json"}}},
     "$ref 'https://example.com/person.json' refers to another document"),
])
def test_an_invalid_schema_is_a_clear_error(parameters, message):
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        tool({"name": "t", "parameters": parameters})
    assert str(e.value).startswith("tools[0]: tool 't': `parameters` ")


SPEC = """\
dsc: 1
name: schemas
sources:
  agent: {path: rows.jsonl, format: openai}
convert:
  - step: react_to_tool_calls
    syntax: action_input
    tools: tools.json
template: qwen2.5
loss: assistant
split: {validation: 0.0}
"""


def _row(tool_name: str, args: dict) -> str:
    return json.dumps({"messages": [
        {"role": "user", "content": "please"},
        {"role": "assistant", "content": f"Thought: ok\nAction: {tool_name}\nAction Input: {json.dumps(args)}"},
        {"role": "user", "content": "Observation: done"},
        {"role": "assistant", "content": "Done."}]})


def test_a_build_quarantines_calls_that_violate_the_schema(tmp_path: Path):
    (tmp_path / "tools.json").write_text(json.dumps([WEATHER, EVENT]))
    rows = [_row("get_current_weather", {"location": "Paris", "unit": "celsius"}),
            _row("get_current_weather", {"location": "Paris", "unit": "kelvin"}),
            _row("create_event", {"title": "x", "start": "2026-01-01", "repeat": {"every": "week", "count": 0}})]
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "spec.yaml").write_text(SPEC + "max_bad_rows: 2\n")
    result = build(tmp_path / "spec.yaml", tmp_path / "out")
    assert result.manifest["counts"]["written"] == {"train": 1}
    reasons = {json.loads(line)["row"]: json.loads(line)["reason"]
               for line in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()}
    assert sorted(reasons) == [2, 3]  # the lines of the file
    assert "arguments.unit: 'kelvin' is not one of ['celsius', 'fahrenheit']" in reasons[2]
    assert "arguments.repeat.count: 0 is less than the minimum of 1" in reasons[3]


def test_a_bad_tool_schema_is_a_located_spec_error(tmp_path: Path):
    bad = {"name": "t", "parameters": {"type": "object", "properties": {"n": {"type": "integr"}}}}
    (tmp_path / "tools.json").write_text(json.dumps([bad]))
    (tmp_path / "rows.jsonl").write_text(_row("t", {"n": 1}) + "\n")
    (tmp_path / "spec.yaml").write_text(SPEC)
    with pytest.raises(SpecError, match="not a valid JSON Schema"):
        build(tmp_path / "spec.yaml", tmp_path / "out")
    result = CliRunner().invoke(app, ["build", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert re.search(r"spec\.yaml:8:\d+: .*tools\.json\[0\]: tool 't': `parameters` is not a valid JSON Schema",
                     result.output), result.output
    assert "Traceback" not in result.output
