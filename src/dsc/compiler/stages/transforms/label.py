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

from pydantic import Field, field_validator, model_validator

from dsc.compiler.record import BadRow, Conversation

from .common import MISSING, NAME_RE, Strict, Where, add_step, get_field

SUCCESS, FAILURE = "success", "failure"
TRUE_LITERALS = frozenset({"true", "1", "1.0"})
FALSE_LITERALS = frozenset({"false", "0", "0.0"})


class Bin(Strict):
    class_: str = Field(alias="class", pattern=NAME_RE, description="the class of scores in this bin")
    eq: float | None = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    model_config = Strict.model_config | {"populate_by_name": True, "serialize_by_alias": True}

    @model_validator(mode="after")
    def _bounds(self) -> "Bin":
        if self.eq is not None:
            if any(v is not None for v in (self.gt, self.ge, self.lt, self.le)):
                raise ValueError("a bin has either `eq` or bounds (`gt`/`ge`, `lt`/`le`), not both")
        else:
            if self.gt is not None and self.ge is not None:
                raise ValueError("give one lower bound: `gt` or `ge`")
            if self.lt is not None and self.le is not None:
                raise ValueError("give one upper bound: `lt` or `le`")
            if all(v is None for v in (self.gt, self.ge, self.lt, self.le)):
                raise ValueError("a bin needs `eq` or at least one bound (`gt`, `ge`, `lt`, `le`)")
            lo, lo_open = self.lower()
            hi, hi_open = self.upper()
            if lo > hi or (lo == hi and (lo_open or hi_open)):
                raise ValueError("this bin's bounds admit no value")
        return self

    def lower(self) -> tuple[float, bool]:
        """(bound, open) — open: the bound itself is excluded."""
        if self.eq is not None:
            return self.eq, False
        if self.gt is not None:
            return self.gt, True
        if self.ge is not None:
            return self.ge, False
        return -math.inf, True

    def upper(self) -> tuple[float, bool]:
        if self.eq is not None:
            return self.eq, False
        if self.lt is not None:
            return self.lt, True
        if self.le is not None:
            return self.le, False
        return math.inf, True

    def contains(self, x: float) -> bool:
        lo, lo_open = self.lower()
        hi, hi_open = self.upper()
        return (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)

    def describe(self) -> str:
        if self.eq is not None:
            return f"== {self.eq:g}"
        lo, lo_open = self.lower()
        hi, hi_open = self.upper()
        left = "" if lo == -math.inf else f"{lo:g} {'<' if lo_open else '<='} "
        right = "" if hi == math.inf else f" {'<' if hi_open else '<='} {hi:g}"
        return f"{left}x{right}"


def _overlap(a: Bin, b: Bin) -> bool:
    # The intersection starts at the larger lower bound (an open bound is the tighter one at a
    # tie) and ends at the smaller upper bound (likewise).
    start, start_open = max(a.lower(), b.lower(), key=lambda t: (t[0], t[1]))
    end, end_open = min(a.upper(), b.upper(), key=lambda t: (t[0], not t[1]))
    return start < end or (start == end and not start_open and not end_open)


class LabelSpec(Strict):
    where: Where | None = Field(None, description="the rows this rule labels (a list of rules: the first that matches)")
    field: str = Field(min_length=1, description="field path of the label value, e.g. info.reward or meta.score")
    pattern: str | None = Field(None, description="regex over the field's text; group 1 is the value")
    bins: list[Bin] | None = Field(None, min_length=1, description="classes by bins over a numeric score")
    success: list[str] | None = Field(None, description="bin classes that count as success (meta.success)")

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                rx = re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
            if rx.groups < 1:
                raise ValueError("the pattern needs a group: group 1 is the label value")
        return v

    @model_validator(mode="after")
    def _classes(self) -> "LabelSpec":
        if self.bins is None:
            if self.success is not None:
                raise ValueError("`success` lists bin classes; a boolean label (no `bins`) needs none")
            return self
        for i, a in enumerate(self.bins):
            for b in self.bins[i + 1:]:
                if _overlap(a, b):
                    raise ValueError(f"bins overlap: '{a.class_}' ({a.describe()}) and '{b.class_}' ({b.describe()})")
        names = self.classes()
        for s in self.success or []:
            if s not in names:
                raise ValueError(f"`success` names class '{s}' that no bin produces (bins: {', '.join(names)})")
        return self

    def classes(self) -> list[str]:
        """The classes this label can produce, in order."""
        if self.bins is None:
            return [SUCCESS, FAILURE]
        out: list[str] = []
        for b in self.bins:
            if b.class_ not in out:
                out.append(b.class_)
        return out


LabelRules = LabelSpec | list[LabelSpec]


def label_rules(label: LabelRules | None) -> list[LabelSpec]:
    if label is None:
        return []
    return list(label) if isinstance(label, list) else [label]


def label_classes(label: LabelRules | None) -> list[str]:
    """Every class some rule can give, in rule order."""
    out: list[str] = []
    for rule in label_rules(label):
        out += [c for c in rule.classes() if c not in out]
    return out


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
