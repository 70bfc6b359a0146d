"""The spec's section models that no stage registry shapes: row selectors (`where:`), label,
capabilities, condition, decontaminate, assemble, the loss policy and its weight rules,
tokenisation settings, mix buckets and preference pairs.

They live here, not in their stages, so that `dsc.spec.model` validates a spec without
importing the stage code (numpy, pyarrow, tokenizers).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from enum import Enum
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_serializer, model_validator

from dsc.core.errors import did_you_mean
from dsc.core.sandbox import compile_text
from dsc.core.strict import Strict, StrictSettings
from dsc.record import Conversation

NAME_RE = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
PATH_RE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_-]+)*$"  # a dotted field path


# ---------------------------------------------------------------------------------------------
# Row selectors (`where:` in label rules, filters, convert steps, negatives, capabilities, mix)
# ---------------------------------------------------------------------------------------------

StrOrList = str | list[str]


def _as_set(v: StrOrList | None) -> frozenset[str] | None:
    if v is None:
        return None
    return frozenset([v] if isinstance(v, str) else v)


class Where(Strict):
    """Which rows a stage applies to: every key given must match (a list means any of).

    `rule` matches rows made by that negative rule; `rule: none` matches rows no rule made."""

    source: StrOrList | None = None
    task: StrOrList | None = None
    method: StrOrList | None = None
    capability: StrOrList | None = None
    label: StrOrList | None = None
    success: bool | None = None
    rule: StrOrList | None = None

    @field_validator("source", "task", "method", "capability", "label", "rule")
    @classmethod
    def _non_empty(cls, v: StrOrList | None) -> StrOrList | None:
        if isinstance(v, list) and not v:
            raise ValueError("an empty list matches nothing; leave the key out to match every row")
        return v

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}

    def matches(self, conv: Conversation) -> bool:
        m = conv.meta
        for key in ("source", "task", "method", "capability", "label"):
            allowed = _as_set(getattr(self, key))
            if allowed is not None and getattr(m, key) not in allowed:
                return False
        if self.success is not None and m.success is not self.success:
            return False
        rules = _as_set(self.rule)
        if rules is not None:
            made_by = rule_of(conv)
            if (made_by or "none") not in rules:
                return False
        return True


def matches(where: Where | None, conv: Conversation) -> bool:
    return where is None or where.matches(conv)


RULE_STEP = "rule:"


def rule_of(conv: Conversation) -> str | None:
    """The negative rule that made this row (from its provenance), if any."""
    for step in conv.meta.provenance.steps:
        if step.startswith(RULE_STEP):
            return step[len(RULE_STEP):]
    return None


# ---------------------------------------------------------------------------------------------
# `label:`
# ---------------------------------------------------------------------------------------------

SUCCESS, FAILURE = "success", "failure"


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


# ---------------------------------------------------------------------------------------------
# `capabilities:`
# ---------------------------------------------------------------------------------------------


class CapabilityRule(Strict):
    capability: str = Field(pattern=NAME_RE)
    where: Where | None = None
    tool_call: bool | list[str] | None = None
    pattern: str | None = None
    after: Literal["user", "tool", "system", "assistant", "start"] | None = None
    position: Literal["first", "last", "only"] | None = None

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class CapabilitiesSpec(Strict):
    rules: list[CapabilityRule] = Field(min_length=1)
    default: str | None = Field(None, pattern=NAME_RE)
    rates: dict[str, float] | None = None
    proportions: dict[str, float] | None = None
    measure: Literal["rows", "tokens", "chars"] = "rows"
    decompose: bool = False

    @model_validator(mode="after")
    def _ratios(self) -> "CapabilitiesSpec":
        if self.rates is not None and self.proportions is not None:
            raise ValueError("give `rates` or `proportions`, not both")
        for name, v in (self.rates or {}).items():
            if v < 0:
                raise ValueError(f"rate of '{name}' is negative")
        if self.proportions is not None:
            if any(v <= 0 for v in self.proportions.values()):
                raise ValueError("proportions must be positive (to drop a capability, use `rates` with 0)")
            total = sum(self.proportions.values())
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"proportions sum to {total:g}, not 1")
        return self

    def produced(self) -> list[str]:
        """The capabilities the rules (and default) can tag, in rule order."""
        out: list[str] = []
        for r in self.rules:
            if r.capability not in out:
                out.append(r.capability)
        if self.default is not None and self.default not in out:
            out.append(self.default)
        return out

    def requested(self) -> dict[str, float]:
        return dict(self.rates if self.rates is not None else self.proportions or {})


# ---------------------------------------------------------------------------------------------
# `condition:`, `decontaminate:`
# ---------------------------------------------------------------------------------------------


class ConditionSpec(Strict):
    turn: str = Field("first_user", description="first_user | last_user | system | an assembled turn's id")
    position: Literal["prefix", "suffix"] = "suffix"
    strings: dict[str, str] = Field(min_length=1, description="label class → conditioning string")
    inference: str = Field(description="the class whose string the prompt carries at inference time")
    unlabelled: Literal["error", "keep"] = Field(
        "error", description="a row with no label or a class without a string: bad row, or kept unconditioned")

    # `inference` naming a class without a string is checked with the label classes
    # (dsc.compiler.stages.transforms.pipeline.check_semantics), so a misspelt class is reported once.


class EvalSet(Strict):
    source: str = Field(description="a lookup source holding the evaluation questions")
    field: str = Field("question", description="field path of the question in its rows")


class DecontamSpec(Strict):
    against: list[EvalSet] = Field(min_length=1)
    question: str | None = Field(None, pattern=PATH_RE)
    ngram: int = Field(8, ge=1)
    threshold: float = Field(0.5, gt=0.0, le=1.0)


# ---------------------------------------------------------------------------------------------
# `assemble:`
# ---------------------------------------------------------------------------------------------


class Turn(Strict):
    role: Literal["system", "user", "assistant"]
    content: str | None = Field(None, description="Jinja text of the turn")
    file: str | None = Field(None, description="a file holding the Jinja text (relative to the spec)")
    field: str | int | None = Field(
        None, description="with a .json/.jsonl `file`: the field path of the text in it, e.g. `0.value` "
                                        "(a JSONL file is a list of its lines), as NAT's prompt files hold it")
    loss: bool | None = Field(False, description="supervise this turn (null: the spec's loss policy decides)")
    id: str | None = Field(None, pattern=NAME_RE, description="a name for `condition.turn` to refer to")
    inference: str | None = Field(
        None, description="the turn's text at inference time, with {{ question }} for the question "
                          "(default: the turn itself, with `assemble.question` standing for the question)")

    @model_validator(mode="after")
    def _one_text(self) -> "Turn":
        if (self.content is None) == (self.file is None):
            raise ValueError("a turn needs exactly one of `content` (inline text) or `file`")
        if self.field is not None and not (str(self.field) and (self.file or "").lower().endswith((".json", ".jsonl"))):
            raise ValueError("`field` reads a value of a .json or .jsonl `file`")
        if self.content is not None:
            compile_text(self.content)
        return self


class AssembleSpec(Strict):
    prepend: list[Turn] = Field(default_factory=list)
    append: list[Turn] = Field(default_factory=list)
    join: dict[str, str] = Field(default_factory=dict,
                                 description="lookup source → the record's field path holding its key")
    question: str | None = Field(None, pattern=PATH_RE,
                                 description="path (in the template context) of the question, e.g. "
                                             "lookup.questions.question")

    @field_validator("join")
    @classmethod
    def _paths(cls, v: dict[str, str]) -> dict[str, str]:
        for name, path in v.items():
            if not re.match(PATH_RE, path):
                raise ValueError(f"join path {path!r} of '{name}' is not a field path like 'id' or 'meta.extra.qid'")
        return v

    @model_validator(mode="after")
    def _ids(self) -> "AssembleSpec":
        if not self.prepend and not self.append:
            raise ValueError("`assemble` needs `prepend` or `append` turns")
        seen: set[str] = set()
        for t in [*self.prepend, *self.append]:
            if t.id is not None:
                if t.id in seen:
                    raise ValueError(f"two assembled turns have id '{t.id}'")
                seen.add(t.id)
        return self

    def turn_ids(self) -> dict[str, tuple[str, int]]:
        """id → ('prepend' | 'append', index)."""
        out = {t.id: ("prepend", i) for i, t in enumerate(self.prepend) if t.id}
        out.update({t.id: ("append", i) for i, t in enumerate(self.append) if t.id})
        return out


# ---------------------------------------------------------------------------------------------
# `loss:` and its weight rules; `special_tokens:`
# ---------------------------------------------------------------------------------------------

# The pieces of an assistant turn in every dialect (`analysis`: another name of `thought`), then
# the parts of a ReAct text only (dsc.chat.weights).
Part = Literal["thought", "analysis", "call_name", "arguments", "answer",
               "action", "action_input", "observation", "final_answer"]
PARTS: tuple[str, ...] = get_args(Part)
REACT_PARTS: tuple[str, ...] = ("action", "action_input", "observation", "final_answer")


class WeightRule(Strict):
    """One rule of `loss.weights`: `pattern` (a regex) or `part` (a piece of an assistant turn), and its weight."""

    pattern: str | None = Field(None, description="a regular expression over the rendered text (Python re)")
    part: Part | None = Field(None, description="a piece of an assistant turn in the spec's dialect "
                              "(thought or analysis, call_name, arguments, answer) or a part of a ReAct text "
                              "(" + ", ".join(REACT_PARTS) + ")")
    weight: float = Field(ge=0.0, allow_inf_nan=False,
                          description="the loss weight of the selected supervised characters (a finite number >= 0)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            if not v:
                raise ValueError("must be a non-empty regular expression")
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"is not a valid regular expression: {e}") from None
        return v

    @model_validator(mode="after")
    def _one_selector(self) -> "WeightRule":
        if (self.pattern is None) == (self.part is None):
            raise ValueError("a weight rule needs exactly one of 'pattern' (a regex) or 'part' "
                             f"({', '.join(PARTS)}), and 'weight'")
        return self


class LossPolicy(str, Enum):
    assistant = "assistant"  # every assistant turn, except ones whose Message.loss is False
    all = "all"  # the whole text (FireAct's train_on_inputs=True)
    last = "last"  # the last assistant turn only (nothing when that turn says loss=False)
    per_message = "per-message"  # each message's `loss` flag; None → assistant True, others False


class LossSpec(Strict):
    """`loss:` as a mapping: the mask (`mode`, as the string form) and per-span `weights` on top."""

    mode: LossPolicy = Field(LossPolicy.assistant, description="which text is supervised (as `loss: <mode>`)")
    weights: list[WeightRule] = Field(default_factory=list, description=(
        "per-span loss weights over the supervised text, applied in order (a later rule wins): "
        "{pattern: <regex> | part: thought|action|action_input|observation|final_answer, weight: w}"))


def loss_mode(loss: "LossPolicy | LossSpec | str") -> LossPolicy:
    return loss.mode if isinstance(loss, LossSpec) else LossPolicy(loss)


def loss_weight_rules(loss: "LossPolicy | LossSpec | str | None") -> list[WeightRule]:
    """The spec's weight rules; empty for the string form (an unweighted artifact)."""
    return list(loss.weights) if isinstance(loss, LossSpec) else []


class SpecialTokenPolicy(str, Enum):
    warn = "warn"  # keep the text, report which tokens were found
    error = "error"  # reject the row (BadRow)
    escape = "escape"  # break each occurrence with ESCAPE_CHAR (see escape_special_tokens)


# ---------------------------------------------------------------------------------------------
# `tokenize:`
# ---------------------------------------------------------------------------------------------


class TokenizeSpec(StrictSettings):
    tokenizer: str = Field(description="a local tokenizer directory (with tokenizer.json) or a Hugging Face hub id")
    max_length: int | None = Field(None, gt=0, description="longest row in tokens; None: no limit")
    overflow: Literal["drop", "truncate", "error"] = Field(
        "drop", description="a row longer than max_length: drop it, truncate it, or fail with an error")


# ---------------------------------------------------------------------------------------------
# `mix:`
# ---------------------------------------------------------------------------------------------

MIX_HOW = ("count", "rate", "ratio", "proportion")


class MixBucket(Strict):
    where: Where | None = Field(None, description="which rows (default: the source of the bucket's name)")
    count: int | None = Field(None, ge=0)
    rate: float | None = Field(None, ge=0.0)
    ratio: float | None = Field(None, ge=0.0)
    of: str | None = None
    proportion: float | None = Field(None, gt=0.0, le=1.0)
    per_group_max: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_way(self) -> "MixBucket":
        given = [k for k in MIX_HOW if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of `count`, `rate`, `ratio` or `proportion`, not {' and '.join(given)}")
        if (self.ratio is None) != (self.of is None):
            raise ValueError("`ratio` needs `of: <bucket>` (and `of` needs `ratio`)")
        return self

    def how(self) -> str | None:
        return next((k for k in MIX_HOW if getattr(self, k) is not None), None)


def mix_problems(mix: dict[str, MixBucket], sources: Iterable[str]) -> list[tuple[str, tuple[Any, ...]]]:
    """Cross-bucket problems as (message, location under `mix`)."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    sources = list(sources)
    for name, b in mix.items():
        if b.where is None and name not in sources:
            out.append((f"mix bucket '{name}' has no `where:` and is not a source name{did_you_mean(name, sources)}"
                        f" (sources: {', '.join(sources)})", (name,)))
        if b.of is not None and b.of not in mix:
            out.append((f"`of: {b.of}` is not a mix bucket{did_you_mean(b.of, list(mix))}", (name, "of")))
    for name in mix:  # ratio chains must end
        seen, cur = [name], mix[name].of
        while cur is not None and cur in mix:
            if cur in seen:
                out.append((f"mix buckets refer to each other in a loop: {' → '.join(seen + [cur])}", (name, "of")))
                break
            seen.append(cur)
            cur = mix[cur].of
    props = {n: b.proportion for n, b in mix.items() if b.proportion is not None}
    if props and abs(sum(props.values()) - 1.0) > 1e-6:
        first = next(iter(props))
        out.append((f"proportions sum to {sum(props.values()):g}, not 1 ({', '.join(props)})", (first, "proportion")))
    return out


# ---------------------------------------------------------------------------------------------
# `preference:`
# ---------------------------------------------------------------------------------------------


class PreferenceSpec(Strict):
    """Preference data (DPO pairs, KTO rows) over the rows the rest of the spec makes.

    A pair is a `chosen` row and a `rejected` row of one group (the question); which pairs are
    taken is a seeded hash rank of the two ids, so it does not depend on input order and adding
    rows never reshuffles the pairs already taken (only a `per_group_max` cap can let a new pair
    in ahead of an old one)."""

    kind: Literal["dpo", "kto"] = Field(description="dpo: prompt/chosen/rejected rows; kto: prompt/completion/label rows")
    chosen: Where = Field(description="which rows may be the preferred side (e.g. {label: success})")
    rejected: Where = Field(description="which rows may be the dispreferred side (e.g. {label: failure})")
    granularity: Literal["trajectory", "step"] = Field(
        "trajectory", description="trajectory: whole conversations after the shared prompt; step: both cut at the "
                                  "first assistant turn where they differ (the shared prefix is the prompt)")
    per_group_max: int | None = Field(None, ge=1, description="most pairs per group (None: every pair)")
    min_gap: float | None = Field(None, gt=0.0, allow_inf_nan=False,
                                  description="smallest meta.score difference chosen - rejected a pair may have")
    condition: bool = Field(False, description="keep the spec's success-conditioning strings in pair rows "
                                               "(off: both sides of a pair need the same prompt)")

    @model_validator(mode="after")
    def _sides_differ(self) -> "PreferenceSpec":
        if self.chosen.model_dump() == self.rejected.model_dump():
            raise ValueError("`chosen` and `rejected` select the same rows: no pair is possible "
                             "(e.g. chosen: {label: success}, rejected: {label: failure})")
        return self


def row_condition(condition: ConditionSpec | None, preference: PreferenceSpec | None) -> ConditionSpec | None:
    """The conditioning the row pipeline applies: none for a preference spec unless it asks for
    it, since a pair's two sides must share one prompt (conditioning strings differ by class)."""
    if preference is not None and not preference.condition:
        return None
    return condition
