"""The agent loop end to end with a scripted model and the real BM25 search and calculator."""
from __future__ import annotations

import json
import re

import pytest

from dsc.chat.templating import load_template
from dsc.runtime.agent import (AgentSettings, cut_at_stop, parse_react, parse_tool_call, run_agent, run_direct,
                               start_episodes)
from dsc.spec.runtime import EvalTask
from dsc.runtime.evaluation import run_task, task_result
from dsc.spec.runtime import EvalConfig
from dsc.runtime.prompting import PromptBuilder
from dsc.runtime.tools import build_tools

from tiny import CHATML_WITH_GENERATION

STOP = "\nObservation:"


class ScriptedModel:
    """A fake generator: for each question a list of canned turns; the turn is chosen by how
    many observations the prompt already holds. Like a real model it runs on past the stop
    string (the loop must cut there). Records every batch of prompts."""

    def __init__(self, script: dict[str, list[str]]):
        self.script = script
        self.calls: list[list[str]] = []

    def generate(self, prompts, *, stop, max_new_tokens):
        self.calls.append(list(prompts))
        outs = []
        for p in prompts:
            question = next(q for q in self.script if q in p)
            turn = p.count("Observation:")
            turns = self.script[question]
            outs.append(turns[min(turn, len(turns) - 1)] + "\nObservation: (hallucinated)\nThought: more")
        return outs


SCRIPT = {
    "Who wrote Hamlet?": [
        "Thought: I should search for Hamlet.\nAction: search[Hamlet tragedy author]",
        "Thought: Shakespeare wrote it.\nAction: finish[William Shakespeare]",
    ],
    "What is 12 times 3 plus 1?": [
        "Thought: Let me calculate.\nAction: calculate[12 * 3 + 1]",
        "Thought: The result is 37.\nAction: finish[37]",
    ],
    "What is the capital of France?": [
        "I am not sure what to do.",  # no action: an invalid step, then a proper one
        "Thought: search it.\nAction: Search[capital of France]",
        "Action: finish[Paris]",
    ],
    "Loop forever?": ["Thought: again.\nAction: calculate[1 + 1]"],
}
ANSWERS = {"Who wrote Hamlet?": "Shakespeare", "What is 12 times 3 plus 1?": "37",
           "What is the capital of France?": "Paris", "Loop forever?": "2"}


@pytest.fixture
def corpus(tmp_path):
    rows = [{"title": "Hamlet", "text": "Hamlet is a tragedy written by William Shakespeare."},
            {"title": "Paris", "text": "Paris is the capital of France."},
            {"title": "Rome", "text": "Rome is the capital of Italy."}]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def builder():
    return PromptBuilder.from_source(CHATML_WITH_GENERATION, [{"role": "user", "content": "Question: {{ question }}"}])


def items():
    return [{"id": str(i), "question": q, "answer": ANSWERS[q]} for i, q in enumerate(SCRIPT)]


def test_react_loop_with_real_tools_turn_mode(corpus, tmp_path, builder):
    tools = build_tools({"search": {"corpus": str(corpus)}, "calculate": {}}, tmp_path)
    model = ScriptedModel(SCRIPT)
    episodes = start_episodes(items(), builder)
    run_agent(episodes, model, builder, tools, AgentSettings(max_steps=4, observation="turn"))
    by_q = {e.question: e for e in episodes}

    hamlet = by_q["Who wrote Hamlet?"]
    assert hamlet.finished and hamlet.prediction == "William Shakespeare"
    assert [s.action for s in hamlet.steps] == ["search", "finish"]
    assert hamlet.steps[0].observation == "Hamlet: Hamlet is a tragedy written by William Shakespeare."
    assert hamlet.steps[0].output.endswith("Action: search[Hamlet tragedy author]")  # cut at the stop string

    calc = by_q["What is 12 times 3 plus 1?"]
    assert calc.prediction == "37" and calc.steps[0].observation == "37"
    # the observation came back as a user turn rendered by the template, then the model's turn
    second_prompt = next(p for p in model.calls[1] if "12 times 3" in p)
    assert second_prompt == (
        "<|im_start|>user\nQuestion: What is 12 times 3 plus 1?<|im_end|>\n"
        "<|im_start|>assistant\nThought: Let me calculate.\nAction: calculate[12 * 3 + 1]<|im_end|>\n"
        "<|im_start|>user\nObservation: 37<|im_end|>\n<|im_start|>assistant\n")

    paris = by_q["What is the capital of France?"]
    assert [s.action for s in paris.steps] == [None, "search", "finish"]
    assert paris.steps[0].observation.startswith("Invalid action")
    assert paris.steps[1].observation.startswith("Paris: ")  # tool names are case-insensitive
    assert paris.prediction == "Paris"

    loop = by_q["Loop forever?"]
    assert not loop.finished and loop.prediction == "" and len(loop.steps) == 4  # max_steps model turns
    # finished episodes leave the batch: 4 items, then fewer each step
    assert [len(c) for c in model.calls] == [4, 4, 2, 1]


def test_react_loop_inline_mode_continues_the_raw_text(corpus, tmp_path, builder):
    tools = build_tools({"search": {"corpus": str(corpus)}}, tmp_path)
    model = ScriptedModel({"Who wrote Hamlet?": SCRIPT["Who wrote Hamlet?"]})
    episodes = start_episodes([{"id": "h", "question": "Who wrote Hamlet?", "answer": "x"}], builder)
    run_agent(episodes, model, builder, tools, AgentSettings(observation="inline"))
    assert episodes[0].prediction == "William Shakespeare"
    assert model.calls[1][0] == episodes[0].prompt + (
        "Thought: I should search for Hamlet.\nAction: search[Hamlet tragedy author]\n"
        "Observation: Hamlet: Hamlet is a tragedy written by William Shakespeare.\n")


def test_tool_call_loop(tmp_path):
    template = load_template("qwen2.5", tmp_path)
    builder = PromptBuilder(template, [{"role": "user", "content": "{{ question }}"}])
    tools = build_tools({"calculate": {}}, tmp_path)

    class ToolModel:
        def __init__(self):
            self.prompts = []

        def generate(self, prompts, *, stop, max_new_tokens):
            self.prompts += prompts
            return ['<tool_call>\n{"name": "calculate", "arguments": {"expression": "6 * 7"}}\n</tool_call>'
                    if "<tool_response>" not in p else "The answer is 42." for p in prompts]

    model = ToolModel()
    schemas = [t.schema() for t in tools.values()]
    episodes = start_episodes([{"id": "1", "question": "What is 6 times 7?", "answer": "42"}], builder, schemas)
    run_agent(episodes, model, builder, tools, AgentSettings(actions="tool_calls", stop=()))
    ep = episodes[0]
    assert [s.action for s in ep.steps] == ["calculate", "finish"]
    assert ep.steps[0].observation == "42" and ep.prediction == "The answer is 42."
    assert '"name": "calculate"' in model.prompts[0]  # the tools were offered in the system prompt
    assert "<tool_response>\n42\n</tool_response>" in model.prompts[1]  # the result came back as a tool turn


def test_parsers():
    assert parse_react("Thought: x\nAction: search[a [b] c]").argument == "a [b] c"
    assert parse_react("Action: finish[Yes").argument == "Yes"  # cut short: tolerated
    a = parse_react("Thought: I know.\n\nAction: finish[Badr Hari]\nmore text")
    assert (a.name, a.argument) == ("finish", "Badr Hari")
    assert parse_react("finish[7]").argument == "7"
    assert parse_react("Thought: nothing to do") is None
    tools = build_tools({"calculate": {}}, ".")
    call = parse_tool_call('{"name": "calculate", "arguments": "{\\"expression\\": \\"1+1\\"}"}', tools)
    assert (call.name, call.argument) == ("calculate", "1+1")
    assert parse_tool_call("no call here", tools) is None
    assert cut_at_stop("a\nObservation: b", ["\nObservation:"]) == "a"
    assert cut_at_stop("abc", []) == "abc"


def test_run_task_direct_and_agent_from_config(corpus, tmp_path, builder):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"qid": f"q{i}", "q": q, "a": a}) + "\n" for i, (q, a) in
                            enumerate(ANSWERS.items())))
    agent = EvalTask(data=data.name, id_field="qid", question_field="q", answer_field="a", mode="agent",
                     max_steps=3, tools={"search": {"corpus": corpus.name}, "calculate": {}}, scorers=["em", "f1"])
    episodes = run_task("qa", agent, generator=ScriptedModel(SCRIPT), builder=builder, base_dir=tmp_path)
    result = task_result("qa", agent, episodes, EvalConfig(tasks={"qa": agent}, bootstrap=100),
                         tmp_path / "out" / "qa.jsonl")
    # Shakespeare: EM 0, F1 2/3; 37 and Paris exact; the endless loop never answers
    assert result["n"] == 4 and result["finished"] == 3
    assert result["metrics"]["em"]["mean"] == pytest.approx(0.5)
    assert result["metrics"]["f1"]["mean"] == pytest.approx((2 / 3 + 1 + 1 + 0) / 4, abs=1e-6)
    lines = [json.loads(x) for x in (tmp_path / "out" / "qa.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == ["q0", "q1", "q2", "q3"]
    assert lines[0]["trajectory"][0]["observation"].startswith("Hamlet:") and lines[0]["scores"]["f1"] > 0.6
    assert lines[0]["prompt"].startswith("<|im_start|>user\nQuestion: Who wrote Hamlet?")

    direct = EvalTask(data=data.name, question_field="q", answer_field="a", extract=r"finish\[(.*?)\]",
                      scorers=["em"])
    episodes = run_task("qa", direct, generator=ScriptedModel({q: t[-1:] for q, t in SCRIPT.items()}),
                        builder=builder, base_dir=tmp_path)
    assert [e.prediction for e in episodes] == ["William Shakespeare", "37", "Paris", ""]
    assert all(len(e.steps) == 1 for e in episodes)


def test_direct_prediction_defaults():
    class Echo:
        def generate(self, prompts, *, stop, max_new_tokens):
            return ["Thought: easy.\nAction: finish[42]", "  plain answer  \nObservation: x"]

    builder = PromptBuilder.from_source(CHATML_WITH_GENERATION, [{"role": "user", "content": "{{ question }}"}])
    episodes = start_episodes([{"id": "a", "question": "q1", "answer": ""}, {"id": "b", "question": "q2",
                                                                            "answer": ""}], builder)
    run_direct(episodes, Echo(), stop=["\nObservation:"], max_new_tokens=8)
    assert [e.prediction for e in episodes] == ["42", "plain answer"]  # finish[x] is understood directly
    run_direct(episodes[:1], Echo(), stop=[], max_new_tokens=8, extract=re.compile(r"Thought: (\w+)"))
    assert episodes[0].prediction == "easy"


def test_step_prefix_seeds_every_model_turn(builder, tmp_path):
    """FireAct's loop appends "Thought:" to the prompt and the model continues from there."""
    class Continue:
        def __init__(self):
            self.prompts = []

        def generate(self, prompts, *, stop, max_new_tokens):
            self.prompts += prompts
            return [" easy.\nAction: calculate[1 + 1]" if p.count("Observation:") == 0 else " done.\nAction: finish[2]"
                    for p in prompts]

    model = Continue()
    episodes = start_episodes([{"id": "1", "question": "1+1?", "answer": "2"}], builder)
    run_agent(episodes, model, builder, build_tools({"calculate": {}}, tmp_path),
              AgentSettings(observation="inline", step_prefix="Thought:"))
    assert all(p.endswith("Thought:") for p in model.prompts)
    assert model.prompts[1] == episodes[0].prompt + "Thought: easy.\nAction: calculate[1 + 1]\nObservation: 2\nThought:"
    assert episodes[0].steps[1].output == "Thought: done.\nAction: finish[2]" and episodes[0].prediction == "2"


class RecordingProgress:
    def __init__(self):
        self.calls = []

    def start(self, stage, total=None):
        self.calls.append(("start", stage, total))

    def advance(self, n=1):
        self.calls.append(("advance", n))

    def done(self):
        self.calls.append(("done",))


def test_run_task_reports_items_done_and_changes_nothing(corpus, tmp_path, builder):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"qid": f"q{i}", "q": q, "a": a}) + "\n" for i, (q, a) in
                            enumerate(ANSWERS.items())))
    agent = EvalTask(data=data.name, id_field="qid", question_field="q", answer_field="a", mode="agent",
                     max_steps=3, tools={"search": {"corpus": corpus.name}, "calculate": {}})
    quiet = run_task("qa", agent, generator=ScriptedModel(SCRIPT), builder=builder, base_dir=tmp_path)
    progress = RecordingProgress()
    shown = run_task("qa", agent, generator=ScriptedModel(SCRIPT), builder=builder, base_dir=tmp_path,
                     progress=progress, stage="m: qa")
    assert shown == quiet
    # step 2: Hamlet and the sum finish; step 3: Paris; the endless loop is over when steps run out
    assert progress.calls == [("start", "m: qa", 4), ("advance", 2), ("advance", 1), ("advance", 1), ("done",)]

    class Batched(ScriptedModel):
        """A generator with the `on_batch` hook: told each batch of two it completes."""
        on_batch = None

        def generate(self, prompts, *, stop, max_new_tokens):
            outs = []
            for start in range(0, len(prompts), 2):
                outs += super().generate(prompts[start:start + 2], stop=stop, max_new_tokens=max_new_tokens)
                if self.on_batch is not None:
                    self.on_batch(len(prompts[start:start + 2]))
            return outs

    direct = EvalTask(data=data.name, question_field="q", answer_field="a", extract=r"finish\[(.*?)\]")
    last_turns = {q: t[-1:] for q, t in SCRIPT.items()}
    quiet = run_task("qa", direct, generator=ScriptedModel(last_turns), builder=builder, base_dir=tmp_path)
    for model, advances in ((ScriptedModel(last_turns), [("advance", 4)]),
                            (Batched(last_turns), [("advance", 2), ("advance", 2)])):
        progress = RecordingProgress()
        assert run_task("qa", direct, generator=model, builder=builder, base_dir=tmp_path, progress=progress) == quiet
        assert progress.calls == [("start", "qa", 4), *advances, ("done",)]
    assert model.on_batch is None  # the hook is unset afterwards
