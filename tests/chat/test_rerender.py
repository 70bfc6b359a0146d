"""An artifact row re-renders to its own `text` from its own columns, byte for byte.

A user (or an inference server) reads `messages` and `tools` from the parquet files, `json.loads`
the JSON strings as the README documents, and renders them with the artifact's
`chat_template.jinja` through transformers. That must give exactly the `text` dsc trained on —
for every row of every example spec, and for tool schemas and tool-call arguments whose keys are
in any order (templates render keys in their given order, so a store that re-sorts them breaks
this). The user side here is written from the README, not with dsc's own helpers."""
from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.utils.chat_template_utils import render_jinja_template

from dsc.compiler.engine.driver import build

REPO = Path(__file__).resolve().parents[2]
# SFT example specs (a preference artifact stores prompt/chosen/rejected: its texts are checked
# against TRL's own rendering in tests/compiler/engine/test_preference_build.py).
SPECS = sorted(p for p in (REPO / "specs").glob("*.yaml") if "\npreference:" not in p.read_text())


def openai_messages(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stored `messages` column as a user turns it into OpenAI/transformers messages: tool
    calls wrapped as `{type: function, id, function: {name, arguments}}` with `arguments`
    parsed from its JSON string; null fields left out."""
    out = []
    for m in stored:
        msg: dict[str, Any] = {"role": m["role"], "content": m["content"]}
        if m["tool_calls"]:
            msg["tool_calls"] = [
                {"type": "function", **({"id": c["id"]} if c["id"] is not None else {}),
                 "function": {"name": c["name"], "arguments": json.loads(c["arguments"])}}
                for c in m["tool_calls"]]
        for key in ("name", "tool_call_id"):
            if m[key] is not None:
                msg[key] = m[key]
        out.append(msg)
    return out


def rerender(row: dict[str, Any], template: str) -> str:
    """What transformers renders from the row's own columns (dsc renders training text with
    add_generation_prompt=False and no other template variables for the built-in templates)."""
    tools = json.loads(row["tools"]) if row["tools"] is not None else None
    rendered, _ = render_jinja_template([openai_messages(row["messages"])], tools=tools, chat_template=template,
                                        add_generation_prompt=False)
    return rendered[0]


def artifact_rows(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {f.name.split("-")[0]: pq.read_table(f).to_pylist() for f in sorted((out / "data").glob("*.parquet"))}


def mismatches(out: Path) -> tuple[int, list[str]]:
    """(rows checked, ids of rows whose re-rendering differs from their `text`)."""
    template = (out / "chat_template.jinja").read_text(encoding="utf-8")
    checked, bad = 0, []
    for rows in artifact_rows(out).values():
        for row in rows:
            checked += 1
            if rerender(row, template) != row["text"]:
                bad.append(row["id"])
    return checked, bad


# ---------------------------------------------------------------------------------------------
# Every row of every example spec (they read only the bundled data under specs/data)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def example_artifacts(tmp_path_factory) -> dict[str, Path]:
    outs = {}
    for spec in SPECS:
        outs[spec.stem] = tmp_path_factory.mktemp(spec.stem) / "out"
        build(spec, outs[spec.stem], workers=1)
    return outs


def test_every_example_spec_is_covered():
    assert {s.stem for s in SPECS} >= {"agent-flan", "fireact", "fireact-alpaca", "fireact-chat", "nat",
                                       "nat-hotpotqa"}


@pytest.mark.parametrize("name", [s.stem for s in SPECS])
def test_example_spec_rows_rerender_to_their_text(example_artifacts, name):
    checked, bad = mismatches(example_artifacts[name])
    assert checked > 0
    assert bad == [], f"{len(bad)} of {checked} rows of {name} do not re-render to their text, e.g. {bad[0]}"


def test_agent_flan_stores_tools_in_the_order_it_renders_them(example_artifacts):
    """The issue's row: the offered tools are stored (and rendered) as OpenAI specs write them,
    `type` before `function`, `name` before `description` before `parameters`."""
    rows = [r for rs in artifact_rows(example_artifacts["agent-flan"]).values() for r in rs
            if r["id"].startswith("toolbench:") and r["id"].endswith("@retrieval")]
    assert rows
    tool = json.loads(rows[0]["tools"])[0]
    assert list(tool) == ["type", "function"]
    assert list(tool["function"]) == ["name", "description", "parameters"]
    assert json.dumps(tool, ensure_ascii=False) in rows[0]["text"]


# ---------------------------------------------------------------------------------------------
# Generated tool schemas and tool-call arguments, keys in shuffled orders
# ---------------------------------------------------------------------------------------------

_NAME = st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True).filter(lambda n: n != "finish")
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12)


def shuffled(d: dict[str, Any], rnd: random.Random) -> dict[str, Any]:
    keys = list(d)
    rnd.shuffle(keys)
    return {k: d[k] for k in keys}


@st.composite
def tool_case(draw) -> dict[str, Any]:
    """Tools (one property nested) and a call of each, every dict's keys in a drawn order."""
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    names = draw(st.lists(_NAME, min_size=1, max_size=3, unique=True))
    tools, calls = [], []
    for name in names:
        props = draw(st.lists(_NAME, min_size=1, max_size=4, unique=True))
        inner = draw(st.lists(_NAME, min_size=1, max_size=3, unique=True))
        properties = {p: {"type": "string", "description": draw(_TEXT)} for p in props[1:]}
        properties[props[0]] = shuffled({"type": "object", "properties": {k: {"type": "string"} for k in inner},
                                         "required": inner}, rnd)
        properties = shuffled({k: shuffled(v, rnd) for k, v in properties.items()}, rnd)
        parameters = shuffled({"type": "object", "properties": properties, "required": props[:1]}, rnd)
        function = shuffled({"name": name, "description": draw(_TEXT), "parameters": parameters}, rnd)
        tools.append(shuffled({"type": "function", "function": function}, rnd))
        args = {p: draw(_TEXT) for p in props[1:]}
        args[props[0]] = shuffled({k: draw(_TEXT) for k in inner}, rnd)
        calls.append((name, shuffled(args, rnd)))
    return {"tools": tools, "calls": calls, "as_string": draw(st.booleans()),
            "template": draw(st.sampled_from(["qwen2.5", "mistral"]))}


def ordered(value: Any) -> str:
    """A value's JSON spelling with its keys in their order (so that order is compared)."""
    return json.dumps(value, ensure_ascii=False)


def _openai_row(case: dict[str, Any]) -> dict[str, Any]:
    calls = [{"id": f"c{i}", "type": "function",
              "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False) if case["as_string"]
                           else args}} for i, (name, args) in enumerate(case["calls"])]
    results = [{"role": "tool", "tool_call_id": f"c{i}", "name": name, "content": "ok"}
               for i, (name, _) in enumerate(case["calls"])]
    return {"messages": [{"role": "user", "content": "do it"}, {"role": "assistant", "content": "", "tool_calls": calls},
                         *results, {"role": "assistant", "content": "done"}],
            "tools": case["tools"]}


def _react_row(case: dict[str, Any]) -> dict[str, Any]:
    """The same calls as ReAct text, arguments as JSON written in the case's key order."""
    messages = [{"role": "user", "content": "do it"}]
    for name, args in case["calls"]:
        messages += [{"role": "assistant",
                      "content": f"Thought: use {name}\nAction: {name}\nAction Input: "
                                 + json.dumps(args, ensure_ascii=False)},
                     {"role": "user", "content": "Observation: ok"}]
    messages.append({"role": "assistant", "content": "Thought: done\nAction: finish\nAction Input: {\"answer\": \"done\"}"})
    return {"messages": messages}


SPEC = """\
dsc: 1
name: shuffled
seed: 1
sources:
  calls: {{path: calls.jsonl, format: openai}}
  react: {{path: react.jsonl, format: openai}}
convert:
  - {{step: react_to_chat, where: {{source: react}}, syntax: action_input, tools: tools.json, final: finish}}
template: {template}
loss: assistant
split: {{validation: 0.0}}
"""


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=tool_case())
def test_shuffled_tool_schemas_and_arguments_rerender_to_their_text(case):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "calls.jsonl").write_text(json.dumps(_openai_row(case), ensure_ascii=False) + "\n", encoding="utf-8")
        (root / "react.jsonl").write_text(json.dumps(_react_row(case), ensure_ascii=False) + "\n", encoding="utf-8")
        finish = {"name": "finish", "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}}}
        (root / "tools.json").write_text(json.dumps(case["tools"] + [finish], ensure_ascii=False), encoding="utf-8")
        (root / "spec.yaml").write_text(SPEC.format(template=case["template"]), encoding="utf-8")
        build(root / "spec.yaml", root / "out", workers=1)
        quarantine = (root / "out" / "quarantine.jsonl").read_text(encoding="utf-8")
        assert quarantine == "", quarantine
        rows = artifact_rows(root / "out")["train"]
        assert sorted(r["meta"]["source"] for r in rows) == ["calls", "react"]
        for row in rows:
            # stored as written: each call's arguments and the tools keep the data's key order
            stored_calls = [(c["name"], json.loads(c["arguments"])) for m in row["messages"] for c in m["tool_calls"] or []]
            assert [(n, ordered(a)) for n, a in stored_calls] == [(n, ordered(a)) for n, a in case["calls"]]
            offered = [ordered(t["function"]["parameters"]) for t in json.loads(row["tools"])]
            assert offered == [ordered(t["function"]["parameters"]) for t in case["tools"]]
            if row["meta"]["source"] == "calls":  # given in the row: stored whole as given
                assert row["tools"] == json.dumps(case["tools"], ensure_ascii=False, separators=(",", ":"))
        checked, bad = mismatches(root / "out")
        assert (checked, bad) == (2, [])
