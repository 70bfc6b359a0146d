"""Labels: a row's success label and conditioning class, from a field of the record.

Two kinds:

- boolean (no `bins`): the field's value is normalised from the literals real data mixes —
  `True`, `"True"`, `"true"`, `1`, `"1"`, `1.0` are success; `False`, `"False"`, `"false"`, `0`,
  `"0"`, `0.0` are failure; anything else sends the row to quarantine. Classes: `success`,
  `failure`; `meta.success` is set, and `meta.score` (1.0/0.0) when the row has none.
- bins over a score: each bin names its class and bounds (`eq`, or any of `gt`/`ge` and
  `lt`/`le`); bins may not overlap; a score in no bin is a bad row. `meta.score` is the value,
  `meta.label` the class, `meta.success` is true for the classes listed in `success` (when given).

NAT's HotpotQA four classes (f1 == 0 / 0 < f1 < 0.4 / 0.4 <= f1 < 1 / f1 == 1):

    label:
      field: info.f1
      bins:
        - {class: totally_incorrect, eq: 0}
        - {class: mostly_incorrect, gt: 0, lt: 0.4}
        - {class: mostly_correct, ge: 0.4, lt: 1}
        - {class: correct, eq: 1}
      success: [correct]

`pattern` reads the value out of a text field first (group 1 of the regex), e.g. FireAct's
final observation `Observation: Episode finished, reward = True`:
`{field: messages.-1.content, pattern: 'reward = (\\S+)\\s*$'}`.

`label` may also be a list of such rules, each with a `where:` selector: a row gets the first
rule that matches it (e.g. a per-task label in a multi-task spec); a row no rule matches stays
unlabelled.
"""
from __future__ import annotations

import math
import re
from typing import Any

from dsc.compiler.stages.transforms.common import add_step, get_field
from dsc.record import MISSING, BadRow, Conversation
from dsc.spec.sections import FAILURE, SUCCESS, LabelRules, LabelSpec, label_rules

TRUE_LITERALS = frozenset({"true", "1", "1.0"})
FALSE_LITERALS = frozenset({"false", "0", "0.0"})


def apply_labels(conv: Conversation, label: LabelRules | None) -> Conversation:
    """Label with the first rule whose `where` matches (no rule matches: the row stays unlabelled)."""
    for rule in label_rules(label):
        if rule.where is None or rule.where.matches(conv):
            return apply_label(conv, rule)
    return conv


def parse_bool(value: Any) -> bool | None:
    """The mixed success literals of agent data → bool; None when the value is none of them."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return {1: True, 0: False}.get(value) if value in (0, 1) else None
    if isinstance(value, str):
        low = value.strip().lower()
        if low in TRUE_LITERALS:
            return True
        if low in FALSE_LITERALS:
            return False
    return None


def parse_score(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            x = float(value.strip())
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def apply_label(conv: Conversation, spec: LabelSpec) -> Conversation:
    """Set meta.label / meta.success / meta.score in place; BadRow when the value is unusable."""
    value = get_field(conv, spec.field)
    if value is MISSING or value is None:
        raise BadRow(f"label: field '{spec.field}' is missing")
    if spec.pattern is not None:
        if not isinstance(value, str):
            raise BadRow(f"label: field '{spec.field}' is not text, so `pattern` cannot read it")
        m = re.search(spec.pattern, value)
        if m is None:
            raise BadRow(f"label: pattern {spec.pattern!r} does not match field '{spec.field}': {value[-80:]!r}")
        value = m.group(1)
    meta = conv.meta
    if spec.bins is None:
        ok = parse_bool(value)
        if ok is None:
            raise BadRow(f"label: field '{spec.field}' is {value!r}, expected a success literal "
                         "(true/1 or false/0)")
        meta.success = ok
        meta.label = SUCCESS if ok else FAILURE
        if meta.score is None:
            meta.score = 1.0 if ok else 0.0
    else:
        x = parse_score(value)
        if x is None:
            raise BadRow(f"label: field '{spec.field}' is {value!r}, expected a number")
        cls = next((b.class_ for b in spec.bins if b.contains(x)), None)
        if cls is None:
            raise BadRow(f"label: score {x:g} of field '{spec.field}' falls in no bin "
                         f"({', '.join(b.describe() for b in spec.bins)})")
        meta.score = x
        meta.label = cls
        if spec.success is not None:
            meta.success = cls in spec.success
    add_step(conv, "label")
    return conv
