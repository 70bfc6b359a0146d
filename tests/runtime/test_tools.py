"""Agent tools: the safe calculator, BM25 search over a local corpus, the registry."""
from __future__ import annotations

import json

import pytest

from dsc.core.errors import SpecError
from dsc.runtime.tools import BM25Search, build_tools, calculate, Tool, tool_names
from dsc.spec.registries import register_tool


@pytest.mark.parametrize("expression, expected", [
    ("3 + 4", "7"),
    ("12 * 3", "36"),
    ("7 / 2", "3.5"),
    ("8 / 2", "4"),  # an integral float prints as an integer
    ("2 ** 10", "1024"),
    ("3^2", "9"),  # caret as power, as people write it
    ("(1 + 2) * -3", "-9"),
    ("17 // 5 + 17 % 5", "5"),
    ("1,000 + 1", "1001"),
    ("0.1 + 0.2", "0.3"),
    ("10 / 3", "3.333333333"),
    ("4 × 5 ÷ 2 =", "10"),
])
def test_calculate(expression, expected):
    assert calculate(expression) == expected


@pytest.mark.parametrize("expression, error", [
    ("1 / 0", "division by zero"),
    ("__import__('os').system('echo hi')", "unsupported"),
    ("abs(-1)", "unsupported"),
    ("x + 1", "unsupported"),
    ("'a' * 3", "unsupported"),
    ("2 ** 100000", "exponent is too large"),
    ("10 ** 200", "too large"),
    ("1e308 * 10", "too large"),
    ("(-8) ** 0.5", "not a finite real"),
    ("3 +", "cannot parse"),
    ("", "empty"),
    ("1+" * 400 + "1", "too long"),
])
def test_calculate_refuses_safely(expression, error):
    out = calculate(expression)
    assert out.startswith("Error:") and error in out


@pytest.fixture
def corpus(tmp_path):
    rows = [
        {"title": "Hamlet", "text": "Hamlet is a tragedy written by William Shakespeare around 1600."},
        {"title": "Paris", "text": "Paris is the capital and largest city of France."},
        {"text": "The Danube flows through Vienna, Budapest and Belgrade."},
        {"title": "Berlin", "text": "Berlin is the capital of Germany."},
    ]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    return path


def test_bm25_search_finds_the_right_passage(corpus, tmp_path):
    tools = build_tools({"search": {"corpus": corpus.name}}, tmp_path)
    assert set(tools) == {"search", "finish"}  # finish is always offered
    assert tools["search"]("who wrote Hamlet") == ("Hamlet: Hamlet is a tragedy written by William Shakespeare "
                                                   "around 1600.")
    assert tools["search"]("capital of France").startswith("Paris:")
    assert tools["search"]("Danube Vienna") == "The Danube flows through Vienna, Budapest and Belgrade."
    assert tools["search"]("zebra quantum").startswith("No results found")
    assert tools["search"]("the of").startswith("No results found")  # stopwords only


def test_bm25_top_k_and_truncation(corpus, tmp_path):
    search = build_tools({"search": {"corpus": str(corpus), "k": 2, "max_chars": 12}}, tmp_path)["search"]
    out = search("capital")
    assert out.startswith("#1: ") and " #2: " in out
    parts = [p.split(": ", 1)[1] for p in out.split(" #")]
    assert sorted(parts) == ["Berlin: Berl", "Paris: Paris"]  # title + text, cut at max_chars
    engine = BM25Search([("t", "alpha beta"), (None, "gamma delta")], k=5)
    assert engine.k == 2  # never more than the corpus holds
    assert [h[1] for h in engine.search("gamma")] == ["gamma delta"]


def test_tool_settings_and_names_are_checked(corpus, tmp_path):
    with pytest.raises(SpecError, match="did you mean 'search'"):
        build_tools({"serach": {"corpus": str(corpus)}}, tmp_path)
    with pytest.raises(SpecError, match="unknown setting 'top_k'"):
        build_tools({"search": {"corpus": str(corpus), "top_k": 3}}, tmp_path)
    with pytest.raises(SpecError, match="corpus file not found"):
        build_tools({"search": {"corpus": "missing.jsonl"}}, tmp_path)
    with pytest.raises(SpecError, match="tools.search.corpus"):
        build_tools({"search": {}}, tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "no text field"}\n')
    with pytest.raises(SpecError, match="bad.jsonl:1"):
        build_tools({"search": {"corpus": str(bad)}}, tmp_path)
    with pytest.raises(SpecError, match="unknown setting"):
        build_tools({"calculate": {"precision": 3}}, tmp_path)


def test_users_register_their_own_tools(tmp_path):
    @register_tool("echo")
    def _echo(settings, base_dir):
        return Tool("echo", "Repeat the input.", "text", lambda arg: f"{settings.get('prefix', '')}{arg}")

    assert "echo" in tool_names()
    tools = build_tools({"echo": {"prefix": "> "}}, tmp_path)
    assert tools["echo"]("hi") == "> hi"
    assert tools["echo"].schema()["function"]["parameters"]["required"] == ["text"]
