"""`alpaca`: `{"instruction", "input", "output", "system"?, "history"?}` → one exchange.

user = `instruction`, plus `input_separator` + `input` when `input` is non-empty; assistant =
`output` verbatim. The default separator "\\n\\n" mirrors the Stanford-Alpaca prompt that
FireAct's full fine-tune and alpaca-lora use (`### Instruction:\\n{instruction}\\n\\n### Input:
\\n{input}`): a blank line between the two, without the `###` headers, which belong to a
template, not to the content. (FireAct's own alpaca files always have `input: ""`, so for them
user = instruction exactly.) LLaMA-Factory joins with a single "\\n": set
`fields: {input_separator: "\\n"}` to match it. An optional `system` becomes a system turn and an
optional `history` of `[user, assistant]` pairs (LLaMA-Factory) comes before the exchange.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dsc.compiler.stages.read.formats.common import Normalised, kind, optional_str, require_str, without
from dsc.record import MISSING, BadRow, Message, get_path
from dsc.spec.registries import register_format


def prompt_turns(row: Mapping[str, Any], instruction: str, input_: str, system: str,
                 separator: str) -> tuple[list[Message], str]:
    """The system turn (if any) and the user text built from instruction + input.
    Shared by `alpaca` and `react` so the two join instruction and input identically."""
    text = require_str(row, instruction, allow_empty=True)
    extra_input = optional_str(row, input_)
    if extra_input is not None and extra_input.strip():
        text = f"{text}{separator}{extra_input}" if text.strip() else extra_input
    if not text.strip():
        raise BadRow(f"field '{instruction}' is empty" + (f" and so is '{input_}'" if input_ else ""))
    sys_text = optional_str(row, system)
    return ([Message("system", sys_text)] if sys_text is not None else []), text


def _history(row: Mapping[str, Any], path: str) -> list[Message]:
    value = get_path(row, path)
    if value is MISSING or value is None:
        return []
    if not isinstance(value, list):
        raise BadRow(f"field '{path}' is {kind(value)}, expected a list of [user, assistant] pairs")
    out: list[Message] = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise BadRow(f"field '{path}', item {i}: expected a [user, assistant] pair of strings, got {kind(pair)}")
        out += [Message("user", pair[0]), Message("assistant", pair[1])]
    return out


@register_format(
    "alpaca",
    fields={"instruction": "instruction", "input": "input", "output": "output", "system": "system",
            "history": "history", "input_separator": "\n\n"},
)
def alpaca(row: dict[str, Any], fields: dict[str, str]) -> Normalised:
    """Alpaca instruction/input/output: user = instruction (+ "\\n\\n" + input), assistant = output."""
    system, user = prompt_turns(row, fields["instruction"], fields["input"], fields["system"],
                                fields["input_separator"])
    output = require_str(row, fields["output"])
    messages = system + _history(row, fields["history"]) + [Message("user", user), Message("assistant", output)]
    consumed = [fields[k] for k in ("instruction", "input", "output", "system", "history")]
    return Normalised(messages, None, without(row, consumed))
