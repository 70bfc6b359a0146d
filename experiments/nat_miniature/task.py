"""The miniature task: multi-step arithmetic word problems solved with the runtime's `calculate` tool.

Everything is generated from a seed. A question is a short story — a starting amount, two or three
operations phrased in words (buys / loses / ... / splits into n equal groups), and one distractor
number that plays no part — and asks for the final amount. The expert policy solves it with one
`calculate[...]` call per operation and `finish[...]`. A *noisy* policy (the stand-in for an LLM
sampled at a temperature, as NAT samples GPT-3.5) makes the mistakes real agents make: it copies
the wrong operand (the distractor), applies the wrong operator, skips a tool call and does the sum
in its head, finishes before the last step, or writes a malformed action.

Every sampled trajectory is *executed*: its observations come from the runtime's own tool
(`dsc.runtime.tools.calculate`, and the agent loop's own "Invalid action" message through its
parser `dsc.runtime.agent.parse_react`), and it is labelled by the runtime's exact-match scorer
on its `finish[...]` argument — not by what the policy meant to do. A noisy sample that happens to
reach the right answer is a positive; a clean-looking one that does not is a negative.

Records are written in NAT's shape (`format: nat`): trajectories without the question, which the
spec's `assemble` joins from the questions file by `id`.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsc.runtime.agent import parse_react
from dsc.runtime.scorers import get_scorer
from dsc.runtime.tools import FINISH, calculate

NAMES = [("Ann", "She"), ("Ben", "He"), ("Cara", "She"), ("Dev", "He"), ("Eva", "She"), ("Finn", "He"),
         ("Gia", "She"), ("Hugo", "He"), ("Ivy", "She"), ("Jon", "He"), ("Kim", "She"), ("Leo", "He")]
ITEMS = ["apples", "marbles", "stickers", "coins", "books", "pencils", "cards", "shells", "stamps", "beads"]

# operator -> (phrases in the story, the operator it is confused with by the noisy policy)
OPERATIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "+": (("buys {n} more", "finds {n} more", "gets {n} more from a friend", "wins {n} more"), "-"),
    "-": (("gives away {n}", "loses {n}", "sells {n}", "drops {n}"), "+"),
    "*": (("ends up with {n} times as many", "makes the pile {n} times bigger"), "+"),
    "/": (("splits them into {n} equal groups and keeps one", "shares them equally among {n} and keeps one share"), "-"),
}
DISTRACTORS = ("{P} is {d} years old.", "The shop is {d} steps away.", "{P} has {d} friends.",
               "It is {d} degrees outside.")

INSTRUCTION = ("Solve the word problem step by step. Actions: calculate[expression] returns the result; "
               "finish[answer] gives the final answer.")

MISTAKES = ("wrong_operand", "wrong_operator", "skipped_tool", "early_finish", "malformed_action")
MAX_STEPS = 6  # the agent loop's limit at eval; a sampled trajectory longer than this fails
_EM = get_scorer("em")


@dataclass
class Problem:
    id: str
    question: str
    start: int
    ops: list[tuple[str, int]]  # (operator, operand), applied in order
    phrases: list[str]  # the words of each operation, as in the story
    distractor: int
    answer: str = ""
    values: list[int] = field(default_factory=list)  # the running amount after each operation


def _apply(value: int, op: str, n: int) -> int:
    return {"+": value + n, "-": value - n, "*": value * n, "/": value // n}[op]


def make_problem(rng: random.Random, n_ops: tuple[int, ...] = (2,)) -> Problem:
    """A story with `n_ops` operations on one-digit operands whose every intermediate amount is a
    whole number >= 1 (one-digit operands are frequent tokens: a tiny model learns to copy them)."""
    while True:
        name, pron = rng.choice(NAMES)
        item = rng.choice(ITEMS)
        value = start = rng.randint(10, 40)
        ops, phrases, values = [], [], []
        for _ in range(rng.choice(n_ops)):
            op = rng.choice("+-*/")
            divisors = [d for d in range(2, 6) if value % d == 0 and value // d >= 2]
            if op == "*" and value > 40 or op == "/" and not divisors or op == "-" and value < 4:
                op = "+"
            if op == "+":
                n = rng.randint(2, 9)
            elif op == "-":
                n = rng.randint(2, min(9, value - 1))
            elif op == "*":
                n = rng.randint(2, 3)
            else:
                n = rng.choice(divisors)
            value = _apply(value, op, n)
            ops.append((op, n))
            phrases.append(rng.choice(OPERATIONS[op][0]).format(n=n))
            values.append(value)
        distractor = rng.randint(2, 9)
        if distractor in {start, *(n for _, n in ops)}:
            continue
        sentences = [f"{name} has {start} {item}."] + [f"{pron if i else 'Then ' + pron.lower()} {p}."
                                                       for i, p in enumerate(phrases)]
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(DISTRACTORS).format(P=pron, d=distractor))
        question = " ".join(sentences) + f" How many {item} does {name} have now?"
        pid = hashlib.sha1(question.encode()).hexdigest()[:16]
        return Problem(pid, question, start, ops, phrases, distractor, str(values[-1]), values)


# ---------------------------------------------------------------------------------------------
# Policies: a trajectory is a list of model turns, executed against the real tool
# ---------------------------------------------------------------------------------------------


def _step(thought: str, action: str) -> str:
    return f"Thought: {thought}\nAction: {action}"


def sample_trajectory(problem: Problem, rng: random.Random, error_rate: float,
                      weights: dict[str, float]) -> tuple[list[str], list[str]]:
    """The model turns of one attempt (at per-step error probability `error_rate`) and the
    mistakes it made. error_rate 0 is the expert policy."""
    turns: list[str] = []
    mistakes: list[str] = []
    value = str(problem.start)
    kinds, probs = list(weights), list(weights.values())
    last = len(problem.ops) - 1
    for i, ((op, n), phrase) in enumerate(zip(problem.ops, problem.phrases)):
        mistake = rng.choices(kinds, probs)[0] if rng.random() < error_rate else None
        if mistake == "early_finish" and i == 0:
            mistake = "skipped_tool"  # finishing before any step is a skipped tool call
        if mistake == "early_finish":
            turns.append(_step(f"The answer is {value}.", f"finish[{value}]"))
            mistakes.append(mistake)
            return turns, mistakes
        use_op, use_n = op, n
        if mistake == "wrong_operand":
            use_n = problem.distractor
        elif mistake == "wrong_operator":
            use_op = OPERATIONS[op][1]
        thought = f"{phrase.split(' ')[0]} {n}" if mistake is None else f"{phrase.split(' ')[0]} {use_n}"
        expression = f"{value} {use_op} {use_n}"
        if mistake == "skipped_tool":  # the sum done in the head, sometimes right
            exact = calculate(f"{value} {op} {n}")
            guess = str(int(exact) + rng.choice((-2, -1, 0, 1, 1, 2, 10))) if exact.lstrip("-").isdigit() else exact
            turns.append(_step(f"{expression} is {guess}.", "none"))
            value = guess
            mistakes.append(mistake)
            continue
        if mistake == "malformed_action":
            turns.append(_step(thought, f"calculate {expression}"))  # no brackets: the loop refuses it
            mistakes.append(mistake)
        elif mistake is not None:
            mistakes.append(mistake)
        turns.append(_step(thought, f"calculate[{expression}]"))
        value = calculate(expression)  # the observation, copied on as the next step's operand
    turns.append(_step(f"The answer is {value}.", f"finish[{value}]"))
    return turns, mistakes


def execute(turns: list[str]) -> tuple[list[dict[str, Any]], str | None]:
    """NAT-format conversation turns with real observations, and the finish argument (None if
    the attempt never finished within MAX_STEPS)."""
    messages: list[dict[str, Any]] = []
    for turn in turns[:MAX_STEPS]:
        messages.append({"role": "assistant", "content": turn, "loss": True})
        action = parse_react(turn)
        if action is not None and action.name == FINISH:
            return messages, action.argument
        if action is None:
            observation = "Invalid action. Use one of: calculate[...], finish[...]."
        elif action.name == "calculate":
            observation = calculate(action.argument)
        else:
            observation = f"Unknown tool '{action.name}'. Available: calculate, finish."
        messages.append({"role": "user", "content": f"Observation: {observation}", "loss": False})
    return messages, None


@dataclass(frozen=True)
class DataSizes:
    train_questions: int = 600
    samples_per_question: int = 4
    test_questions: int = 300
    error_rates: tuple[float, ...] = (0.1, 0.25, 0.4, 0.6)  # NAT samples at several temperatures
    # Design 5: the noisy policy's failures are *decisions* (wrong operator, skipped tool call,
    # finishing early, malformed action), not copying slips: "wrong_operand" (the distractor
    # copied) is left out, so no negative teaches the confusion the model already makes, and the
    # correct prefix of each negative is more evidence of the copying skill. The other four keep
    # design 4's relative weights (0.25 : 0.15 : 0.2 : 0.1). See DESIGNS.md.
    weights: tuple[tuple[str, float], ...] = (("wrong_operator", 0.25), ("skipped_tool", 0.15),
                                              ("early_finish", 0.2), ("malformed_action", 0.1))


def generate(out: Path, seed: int, sizes: DataSizes = DataSizes()) -> dict[str, Any]:
    """Write questions.jsonl, trajectories.json (every sampled attempt, labelled by the scorer)
    and test.jsonl (held-out questions) under `out`; return counts."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()

    def fresh() -> Problem:
        while True:
            p = make_problem(rng)
            if p.question not in seen:
                seen.add(p.question)
                return p

    train = [fresh() for _ in range(sizes.train_questions)]
    test = [fresh() for _ in range(sizes.test_questions)]
    weights = dict(sizes.weights)
    records, by_mistake = [], {}
    for p in train:
        for k in range(sizes.samples_per_question):
            rate = sizes.error_rates[k % len(sizes.error_rates)]
            turns, mistakes = sample_trajectory(p, rng, rate, weights)
            messages, prediction = execute(turns)
            success = prediction is not None and _EM(prediction, p.answer) == 1.0
            records.append({"conversations": messages, "id": p.id, "source": str(rate),
                            "info": {"reward": success, "pred": prediction, "gt": p.answer,
                                     "mistakes": mistakes}})
            for m in mistakes or ["none"]:
                key = f"{m}:{'success' if success else 'failure'}"
                by_mistake[key] = by_mistake.get(key, 0) + 1
    _write_jsonl(out / "questions.jsonl", [{"id": p.id, "question": p.question, "answer": p.answer} for p in train])
    _write_jsonl(out / "test.jsonl", [{"id": p.id, "question": p.question, "answer": p.answer} for p in test])
    (out / "trajectories.json").write_text(json.dumps(records, indent=0) + "\n", encoding="utf-8")
    (out / "instruction.txt").write_text(INSTRUCTION, encoding="utf-8")
    n_pos = sum(r["info"]["reward"] for r in records)
    return {"train_questions": len(train), "test_questions": len(test), "attempts": len(records),
            "successes": n_pos, "failures": len(records) - n_pos,
            "questions_with_a_success": len({r["id"] for r in records if r["info"]["reward"]}),
            "mistakes_by_label": dict(sorted(by_mistake.items()))}


def corpus_lines(out: Path) -> list[str]:
    """Text to train the tiny tokenizer on: the instruction, questions and trajectories."""
    lines = [INSTRUCTION]
    for name in ("questions.jsonl",):  # never the test set
        lines += [json.loads(x)["question"] for x in (out / name).read_text(encoding="utf-8").splitlines()]
    for r in json.loads((out / "trajectories.json").read_text(encoding="utf-8")):
        lines += [m["content"] for m in r["conversations"]]
    return lines


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
