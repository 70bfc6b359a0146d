"""`react`: a question plus one ReAct text trajectory, split into turns.

The trajectory (`output` by default, FireAct's alpaca files) is a string of steps, each at
the start of a line: `Thought: …`, `Action: …`, `Observation: …` (a step number as in
`Thought 1:` is accepted). It becomes

    user      = the question (`instruction`, plus `input` as in `alpaca`)
    assistant = "Thought: …\\nAction: …"       (consecutive Thought/Action steps form one turn)
    user      = "Observation: …"               (role `tool` with `fields: {observation_role: tool}`)
    …

Each turn is the exact text of its steps, so joining the turns with "\\n" gives back the
trajectory (line endings normalised to "\\n", trailing newlines dropped). A step runs until
the next line that starts a step: multi-line thoughts and observations stay whole, and
Reflexion's inserted `Thought: Now that I haven't solved the task … Thought: …` (one line)
stays in its assistant turn. CoT rows cast to ReAct (`Thought: …\\nAction: finish[…]\\n
Observation: Episode finished, reward = 1`) give a single assistant turn and its observation.
A final `Observation: Episode finished, reward = X` is kept as the last turn (FireAct's own
chat files keep it) and X is also stored as `meta.extra.episode_reward` (True/False → bool,
numbers → numbers), so labels can use it: some FireAct Reflexion rows end `reward = False`.

Text before the first step (`preamble`): FireAct's MMLU rows have the answer options
("A. …\\nB. …") leaked into the start of the output. With `preamble: question` (the default)
that text is appended to the question on a new line, which is exactly how FireAct's chat-format
files show those questions; `preamble: error` quarantines such rows instead. The question turn
is stripped of surrounding whitespace, as in FireAct's multitask chat file (its hotpotqa chat
file keeps trailing spaces: FireAct is not consistent there).

Bad rows: no step at all, a trajectory that starts with an Observation, two Observations in a
row, or an Observation that follows a Thought with no Action.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from dsc.compiler.stages.read.formats.alpaca import prompt_turns
from dsc.compiler.stages.read.formats.common import Normalised, require_str, without
from dsc.dialects.react import STEP  # the one ReAct grammar (steps, actions, observations)
from dsc.record import BadRow, Message
from dsc.spec.registries import register_format

EPISODE_END = re.compile(r"^Observation(?: \d+)?: Episode finished, reward = (.+?)\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class ReactTurn:
    kind: Literal["assistant", "observation"]
    text: str
    line: int  # 1-based line of the trajectory where the turn starts


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def split_react(trajectory: str) -> tuple[str, list[ReactTurn]]:
    """(preamble, turns) of a ReAct text; BadRow when its steps are out of order.

    `"\\n".join(t.text for t in turns)` equals the trajectory from its first step on, with
    "\\r\\n" → "\\n" and trailing newlines removed."""
    text = trajectory.replace("\r\n", "\n").rstrip("\n")
    marks = list(STEP.finditer(text))
    if not marks:
        raise BadRow("no line starts with 'Thought:', 'Action:' or 'Observation:' in the trajectory")
    preamble = text[: marks[0].start()]
    preamble = preamble[:-1] if preamble.endswith("\n") else preamble
    turns: list[ReactTurn] = []
    open_start: int | None = None  # start of the assistant turn being collected
    open_end = 0
    has_action = False
    for i, m in enumerate(marks):
        # A step ends just before the newline that precedes the next step.
        end = marks[i + 1].start() - 1 if i + 1 < len(marks) else len(text)
        step = m.group(1)
        if step != "Observation":
            if open_start is None:
                open_start, has_action = m.start(), False
            open_end = end
            has_action = has_action or step == "Action"
            continue
        line = _line(text, m.start())
        if open_start is None:
            if not turns:
                raise BadRow(f"trajectory line {line}: starts with an Observation before any Thought or Action")
            raise BadRow(f"trajectory line {line}: two Observations in a row")
        if not has_action:
            raise BadRow(f"trajectory line {line}: an Observation follows a Thought with no Action")
        turns.append(ReactTurn("assistant", text[open_start:open_end], _line(text, open_start)))
        turns.append(ReactTurn("observation", text[m.start():end], line))
        open_start = None
    if open_start is not None:
        turns.append(ReactTurn("assistant", text[open_start:open_end], _line(text, open_start)))
    return (preamble if preamble.strip() else ""), turns


def _reward(raw: str) -> bool | int | float | str:
    low = raw.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(low)
        except ValueError:
            pass
    return raw.strip()


@register_format(
    "react",
    fields={"question": "instruction", "input": "input", "trajectory": "output", "system": "system",
            "input_separator": "\n\n", "observation_role": "user", "preamble": "question"},
    choices={"observation_role": ("user", "tool"), "preamble": ("question", "error")},
)
def react(row: dict[str, Any], fields: dict[str, str]) -> Normalised:
    """A question + one ReAct text (Thought/Action/Observation) split into turns (FireAct alpaca_format)."""
    system, question = prompt_turns(row, fields["question"], fields["input"], fields["system"],
                                    fields["input_separator"])
    preamble, turns = split_react(require_str(row, fields["trajectory"]))
    if preamble:
        if fields["preamble"] == "error":
            raise BadRow(f"text before the first step of '{fields['trajectory']}': {preamble[:80]!r}")
        question = f"{question}\n{preamble}"
    obs_role = fields["observation_role"]
    messages = system + [Message("user", question.strip())]
    messages += [Message("assistant" if t.kind == "assistant" else obs_role, t.text) for t in turns]
    extra = without(row, [fields[k] for k in ("question", "input", "trajectory", "system")])
    end = EPISODE_END.match(turns[-1].text) if turns[-1].kind == "observation" else None
    if end is not None and "episode_reward" not in extra:
        extra["episode_reward"] = _reward(end.group(1))
    return Normalised(messages, None, extra)
