"""Tool-call dialects: what each writer writes, its parser reads back to the same calls (names,
argument JSON, parallel calls, empty content), on generated calls and on FireAct's and the bundled
Agent-FLAN data; the agent loop parses a generation with the dialect's own parser."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsc.dialects.base import get_dialect
from dsc.spec.registries import DIALECTS
from dsc.dialects.react import ReactDialect, format_action, parse_action
from dsc.record import BadRow, ToolCall
from dsc.dialects.tools import ToolDef, load_tools

REPO = Path(__file__).resolve().parents[2]
AGENT_FLAN = REPO / "specs" / "data" / "agent-flan"
FIREACT = REPO.parent / "shared" / "data" / "fireact"

# Tool names: a letter or "_", then letters, digits, "_", ".", "-" (web.search, get-weather, a_b.c-2).
names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.\-]{0,12}\Z")
# Free text with brackets, newlines and unicode, but none of the dialects' own markers.
MARKERS = ("Action", "<tool_", "</tool_", "✿", "{", "Observation", "<|", "<｜", "## Return of ")
# Dialects whose syntax cannot hold every name or value (pythonic: identifiers, not keywords; the XML
# ones: no `<>` or newline in a name, no closing tag in a value; the token ones: no own token in a value).
LIMITED = {"pythonic", "qwen3_coder", "glm45", "harmony", "deepseek_v31", "kimi_k2"}
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40).filter(
    lambda s: not any(m in s for m in MARKERS))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


@st.composite
def tool_and_args(draw):
    """A tool and arguments that fit its schema: one string parameter, none, or several."""
    name = draw(names)
    kind = draw(st.sampled_from(["one", "none", "many"]))
    if kind == "one":
        p = draw(st.sampled_from(["query", "input", "q"]))
        tool = ToolDef(name=name, parameters={"type": "object", "properties": {p: {"type": "string"}}})
        # the whole bracket text is the argument: brackets and newlines inside it come back whole
        return tool, {p: draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30))}
    if kind == "none":
        return ToolDef(name=name, parameters={"type": "object", "properties": {}}), {}
    keys = draw(st.lists(st.text(min_size=1, max_size=6), min_size=2, max_size=4, unique=True))
    tool = ToolDef(name=name, parameters={"type": "object", "properties": {k: {} for k in keys}})
    return tool, {k: draw(json_values) for k in keys}


def _calls(pairs):
    return [ToolCall(t.name, json.dumps(a, ensure_ascii=False)) for t, a in pairs]


def _same(parsed, calls):
    return [(c.name, json.loads(c.arguments)) for c in parsed] == [(c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize("name", sorted(DIALECTS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=text, pairs=st.lists(tool_and_args(), min_size=0, max_size=3, unique_by=lambda p: p[0].name))
def test_write_then_parse_is_the_identity(name, content, pairs):
    dialect = get_dialect(name)
    tools = {t.name: t for t, _ in pairs}
    calls = _calls(pairs)
    if not all(dialect.tool_names.fullmatch(c.name) for c in calls):  # (pythonic: Python identifiers)
        with pytest.raises(BadRow, match="cannot be written in dialect"):
            dialect.write_turn(content, calls, tools)
        return
    if len(calls) > 1 and not dialect.parallel:
        with pytest.raises(BadRow, match="one call per turn"):
            dialect.write_turn(content, calls, tools)
        calls = calls[:1]
    if calls and isinstance(dialect, ReactDialect) and content and not content.endswith("\n"):
        # ReAct puts the action on its own line: a text without a final newline comes back with one
        assert dialect.parse_turn(dialect.write_turn(content, calls, tools), tools).content == content + "\n"
        content += "\n"
    try:
        written = dialect.write_turn(content, calls, tools)
    except BadRow as e:  # a name or value the dialect's syntax cannot hold (`k=` in pythonic, `<function=` in XML)
        assert "cannot be written" in str(e) and name in LIMITED, e
        return
    for lenient in (False, True):  # the converter's reading and the agent loop's reading
        turn = dialect.parse_turn(written, tools, lenient=lenient)
        assert _same(turn.calls, calls), (written, turn)
        if calls or not lenient:
            assert turn.content == content, (written, turn)


@pytest.mark.parametrize("name", sorted(DIALECTS))
@settings(max_examples=40, deadline=None)
@given(results=st.lists(text, min_size=1, max_size=3))
def test_observations_round_trip(name, results):
    dialect = get_dialect(name)
    if not dialect.parallel or not dialect.text:  # (openai: one tool message per result)
        results = results[:1]
    calls = [ToolCall("web.search", "{}", id=f"functions.web.search:{i}") for i in range(len(results))]
    assert dialect.parse_observations(dialect.write_observations(results, calls)) == results


@settings(max_examples=200, deadline=None)
@given(pre=text, name=names, arg=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30),
       syntax=st.sampled_from(["bracket", "action_input"]))
def test_react_grammar_reads_what_it_writes(pre, name, arg, syntax):
    written = format_action(pre, name, arg, syntax)
    for lenient in (False, True):
        act = parse_action(written, syntax, lenient=lenient)
        if lenient and syntax == "action_input":  # a generation's trailing whitespace is dropped
            assert (act.pre, act.name, act.arg) == (pre, name, arg.rstrip()), written
            continue
        assert (act.pre, act.name, act.arg) == (pre, name, arg), written


def test_lenient_react_reading_of_generations():
    """The agent loop's reading (FireAct's parser): dotted names, `Action 2:`, a missing `]`."""
    def read(t):
        a = parse_action(t, "bracket", lenient=True)
        return a and (a.name, a.arg)

    assert read("Thought: x\nAction: web.search[a [b] c]") == ("web.search", "a [b] c")
    assert read("Thought: x\nAction 2: get-weather[Paris") == ("get-weather", "Paris")
    assert read("Action: finish[Badr Hari]\nThought: more text") == ("finish", "Badr Hari")
    # a turn that is exactly what the writer writes is read whole (its argument may span lines)
    assert read("Action: finish[Badr\nHari]") == ("finish", "Badr\nHari")
    assert read("finish[7]") == ("finish", "7")
    assert read("Thought: nothing to do") is None


# ---------------------------------------------------------------------------------------------
# Real data: FireAct's and the bundled Agent-FLAN trajectories
# ---------------------------------------------------------------------------------------------


def _real_turns(rows, syntax, tools):
    """(content, calls) of every assistant turn with an action, as the ReAct dialect reads them."""
    dialect = get_dialect("react" if syntax == "bracket" else "react_json")
    out = []
    for row in rows:
        for m in row:
            if m["role"] == "assistant":
                turn = dialect.parse_turn(m["content"], tools)
                if turn.calls:
                    # the ReAct writer gives back the text as it was
                    assert dialect.write_turn(turn.content, turn.calls, tools) == m["content"]
                    out.append(turn)
    return out


def _round_trip_all(turns, tools):
    assert turns
    for name in sorted(DIALECTS):
        dialect = get_dialect(name)
        for turn in turns:
            try:
                written = dialect.write_turn(turn.content, turn.calls, tools)
            except BadRow as e:  # (pythonic: an argument named `from` is no Python keyword argument)
                assert name in LIMITED and "cannot be written" in str(e), (name, e)
                continue
            for lenient in (False, True):
                back = dialect.parse_turn(written, tools, lenient=lenient)
                assert _same(back.calls, turn.calls), (name, written)
            assert dialect.parse_turn(written, tools).content == turn.content


def test_bundled_agent_flan_round_trips_through_every_dialect():
    tools = {t.name: t for t in load_tools("tools.json", AGENT_FLAN)}
    rows = [json.loads(x)["conversation"] for x in (AGENT_FLAN / "toolbench_react.jsonl").read_text().splitlines()]
    turns = _real_turns(rows, "action_input", tools)
    assert len(turns) >= 20 and {c.name for t in turns for c in t.calls} >= {"get_weather", "finish"}
    _round_trip_all(turns, tools)


def test_fireact_round_trips_through_every_dialect():
    path = FIREACT / "gpt_format__multitask.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    rows = [json.loads(x)["messages"] for x in path.read_text().splitlines()[:300]]
    turns = _real_turns(rows, "bracket", {})
    assert len(turns) > 100
    _round_trip_all(turns, {})


# ---------------------------------------------------------------------------------------------
# The agent loop parses with the dialect
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_agent_loop_reads_each_dialect(name):
    from dsc.runtime.agent import AgentSettings, run_agent, start_episodes
    from dsc.runtime.prompting import PromptBuilder
    from dsc.runtime.tools import FINISH, Tool

    from tiny import CHATML_WITH_GENERATION

    dialect = get_dialect(name)
    asked = []
    search = "web.search" if dialect.tool_names.fullmatch("web.search") else "web_search"
    tools = {search: Tool(search, "Search.", "query", lambda q: asked.append(q) or "Paris."),  # noqa: B023
             FINISH: Tool(FINISH, "Answer.", "answer", lambda a: "done")}
    defs = {n: ToolDef(name=n, parameters=t.schema()["function"]["parameters"]) for n, t in tools.items()}
    queries = ["capital [of] France", "Paris"] if dialect.parallel else ["capital [of] France"]
    first = dialect.write_turn("Thought: search.\n" if not dialect.reply_is_answer else "Let me search.",
                               [ToolCall(search, json.dumps({"query": q})) for q in queries], defs)
    answer = (dialect.write_turn("Thought: done.\n", [ToolCall(FINISH, json.dumps({"answer": "Paris"}))], defs)
              if not dialect.reply_is_answer else "Paris")

    class Model:
        def generate(self, prompts, *, stop, max_new_tokens):
            return [answer if asked else first for _ in prompts]

    builder = PromptBuilder.from_source(CHATML_WITH_GENERATION, [{"role": "user", "content": "{{ question }}"}])
    episodes = start_episodes([{"id": "1", "question": "Capital of France?", "answer": "Paris"}], builder)
    settings_ = AgentSettings(dialect=name, stop=dialect.stop, max_steps=3)
    run_agent(episodes, Model(), builder, tools, settings_)
    ep = episodes[0]
    assert asked == queries, [s.output for s in ep.steps]
    assert [s.action for s in ep.steps] == [search, FINISH] and ep.prediction == "Paris"
    if dialect.parallel:  # every call was run, and its result went back
        assert [c["argument"] for c in ep.steps[0].calls] == queries
        results = [m for m in ep.messages if m["role"] in ("tool", "user")][1:]
        if dialect.text:
            assert dialect.parse_observations(results[0]["content"]) == ["Paris.", "Paris."]
        else:
            assert [m["content"] for m in results] == ["Paris.", "Paris."]


# ---------------------------------------------------------------------------------------------
# One example spec per dialect: it builds, records its dialect, and its rows parse back
# ---------------------------------------------------------------------------------------------

DIALECT_SPECS = sorted((REPO / "specs").glob("dialect-*.yaml"))


def test_every_dialect_has_an_example_spec():
    assert {p.stem.removeprefix("dialect-").replace("-", "_") for p in DIALECT_SPECS} == set(DIALECTS)


@pytest.mark.parametrize("spec", DIALECT_SPECS, ids=lambda p: p.stem)
def test_dialect_spec_builds_and_parses_back(spec, tmp_path):
    from dsc.compiler.engine.driver import build
    from dsc.runtime.artifact import load_artifact

    build(spec, tmp_path / "art", workers=1, cache=False)
    art = load_artifact(tmp_path / "art")
    block = art.inference["dialect"]
    dialect = get_dialect(block["name"])
    assert block["stop"] == list(dialect.stop) and block["parser"].endswith(".parse_turn")
    tools = {t.name: t for t in load_tools("tools.json", AGENT_FLAN)}
    calls = 0
    for row in art.table("train").to_pylist():
        for m in row["messages"]:
            if m["role"] == "assistant":
                if not dialect.text:
                    calls += len(m["tool_calls"] or [])
                    continue
                turn = dialect.parse_turn(m["content"], tools)
                assert all(c.name in tools or c.name in ("search", "finish") for c in turn.calls)
                calls += len(turn.calls)
            elif m["role"] == "user" and dialect.text and dialect.parse_observations(m["content"]) is not None:
                assert dialect.parse_observations(m["content"])
    assert calls >= 10


def test_eval_prompts_stops_and_parses_as_the_artifact_was_built(tmp_path):
    """`dsc eval` on a Hermes-built artifact: the eval tools listed in the system turn in Hermes'
    words, Hermes' stop string, the model's `<tool_call>` parsed by Hermes' parser."""
    from dsc.compiler.engine.driver import build
    from dsc.runtime.artifact import load_artifact
    from dsc.spec.runtime import EvalTask
    from dsc.runtime.evaluation import run_task
    from dsc.runtime.prompting import PromptBuilder

    build(REPO / "specs" / "dialect-hermes.yaml", tmp_path / "art", workers=1, cache=False)
    art = load_artifact(tmp_path / "art")
    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "What is 6 times 7?", "answer": "42"}) + "\n")
    seen = []

    class Model:
        def generate(self, prompts, *, stop, max_new_tokens):
            seen.append((list(prompts), tuple(stop)))
            if "<tool_response>" in prompts[0]:
                return ["It is 42."]
            return ['Let me compute.\n<tool_call>\n{"name": "calculate", "arguments": {"expression": "6*7"}}\n'
                    '</tool_call>\n<tool_response>\nhallucinated']

    task = EvalTask(data="q.jsonl", mode="agent", max_steps=3, tools={"calculate": {}}, scorers=["em"])
    from dsc.runtime import tools as tool_registry
    from dsc.runtime.tools import Tool

    calculate = tool_registry.get_tool_factory("calculate")
    # a description with Jinja-looking text stays as written in the prompt
    braces = lambda settings, base: Tool("calculate", "Math, e.g. {{ 6*7 }}.", "expression",  # noqa: E731
                                         calculate(settings, base).run)
    tool_registry.register_tool("calculate", replace=True)(braces)
    builder = PromptBuilder.from_source(art.template_source, art.inference["messages"])
    try:
        [ep] = run_task("t", task, generator=Model(), builder=builder, base_dir=tmp_path, artifact=art)
    finally:
        tool_registry.register_tool("calculate", replace=True)(calculate)
    first_prompt, stop = seen[0][0][0], seen[0][1]
    assert stop == ("<tool_response>",)
    assert first_prompt.startswith("<|im_start|>system\n# Tools\n") and '"name": "calculate"' in first_prompt
    assert "Math, e.g. {{ 6*7 }}." in first_prompt
    assert [s.action for s in ep.steps] == ["calculate", "finish"] and ep.steps[0].observation == "42"
    assert "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>" in seen[1][0][0]
    assert ep.prediction == "It is 42."


def test_an_unknown_dialect_is_a_located_spec_error(tmp_path):
    from typer.testing import CliRunner

    from dsc.cli.root import app
    from dsc.spec.runtime import EvalTask

    text = (REPO / "specs" / "dialect-hermes.yaml").read_text()
    assert "dialect: hermes}" in text
    spec = tmp_path / "bad.yaml"
    spec.write_text(text.replace("dialect: hermes}", "dialect: hermez}").replace(" data/", f" {REPO}/specs/data/"))
    r = CliRunner().invoke(app, ["validate", str(spec)])
    assert r.exit_code == 2
    assert f"{spec}:17:5: 'convert.1': convert step 'to_dialect': 'dialect': unknown dialect 'hermez' " \
           "(did you mean 'hermes'?)" in " ".join(r.output.split())
    with pytest.raises(ValueError, match="unknown dialect 'qwen-agent' \\(did you mean 'qwen_agent'"):
        EvalTask(data="x", mode="agent", tools={"calculate": {}}, dialect="qwen-agent")


# ---------------------------------------------------------------------------------------------
# The to_dialect convert step
# ---------------------------------------------------------------------------------------------


def _conv(messages, tools=None):
    from dsc.record import Conversation, Meta, Provenance

    return Conversation("s:1", "g", messages, Meta("s", Provenance("f", "h", 0)), tools=tools)


def _to_dialect(c, **options):
    from dsc.compiler.stages.transforms.convert import apply_steps, prepare_steps
    from dsc.spec.steps import ConvertStep

    steps = [ConvertStep.model_validate({"step": "to_dialect", **options})]
    return apply_steps(c, steps, prepare_steps(steps, Path(".")))


SEARCH = {"type": "function", "function": {"name": "web.search", "description": "Search the web.",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}


def _parallel_row():
    from dsc.record import Message

    calls = [ToolCall("web.search", '{"q":"a"}', id="c1"), ToolCall("web.search", '{"q":"b"}', id="c2")]
    return _conv([Message("system", "You help."), Message("user", "Q?"),
                  Message("assistant", "Checking.", tool_calls=calls),
                  Message("tool", "A", name="web.search", tool_call_id="c1"),
                  Message("tool", "B", name="web.search", tool_call_id="c2"),
                  Message("assistant", "Done.")], tools=[SEARCH])


def test_to_dialect_writes_calls_results_and_the_tool_listing():
    hermes = get_dialect("hermes")
    c = _to_dialect(_parallel_row(), dialect="hermes")
    m = c.messages
    assert m[0].content == "You help.\n\n" + hermes.tools_prompt([SEARCH]) and c.tools is None
    assert m[2].content == ('Checking.\n<tool_call>\n{"name": "web.search", "arguments": {"q": "a"}}\n</tool_call>\n'
                            '<tool_call>\n{"name": "web.search", "arguments": {"q": "b"}}\n</tool_call>')
    assert (m[3].role, m[3].content) == ("user", "<tool_response>\nA\n</tool_response>\n<tool_response>\nB\n"
                                                 "</tool_response>")
    assert [x.role for x in m] == ["system", "user", "assistant", "user", "assistant"]
    assert c.meta.provenance.steps[-1] == "convert:to_dialect:hermes"

    kept = _to_dialect(_parallel_row(), dialect="qwen_agent", tools_in_system=False, observation_role="tool")
    assert kept.messages[0].content == "You help." and kept.tools == [SEARCH]
    assert kept.messages[3].role == "tool" and kept.messages[3].content == "✿RESULT✿: A\n✿RESULT✿: B"

    canonical = _to_dialect(_parallel_row(), dialect="openai")
    assert canonical.messages == _parallel_row().messages and canonical.tools == [SEARCH]


def test_to_dialect_quarantines_parallel_calls_in_react():
    with pytest.raises(BadRow, match="message 2: 2 tool calls in one turn; dialect 'react' has one call per turn"):
        _to_dialect(_parallel_row(), dialect="react")


def test_agent_flan_dialect_gives_back_the_source_text(tmp_path):
    """toolbench rows → OpenAI tool calls (react_to_tool_calls) → agent_flan: the source's text."""
    from dsc.compiler.engine.driver import build
    from dsc.runtime.artifact import load_artifact

    build(REPO / "specs" / "dialect-agent-flan.yaml", tmp_path / "art", workers=1, cache=False)
    built = {r["id"]: [m["content"] for m in r["messages"]] for r in load_artifact(tmp_path / "art").table("train").to_pylist()}
    source = [json.loads(x) for x in (AGENT_FLAN / "toolbench_react.jsonl").read_text().splitlines()]
    assert len(built) == len(source)
    for row in source:
        assert [m["content"] for m in row["conversation"]] in built.values(), row["id"]


def test_agent_flan_tool_listing_is_the_data_s_own():
    tools = json.loads((AGENT_FLAN / "tools.json").read_text())
    row = json.loads((AGENT_FLAN / "toolbench_react.jsonl").read_text().splitlines()[0])
    system = row["conversation"][0]["content"]
    assert system == "You are AgentLM, a helpful assistant that can use tools.\n\n" + \
        get_dialect("agent_flan").tools_prompt(tools)
