"""The spec's section models that no stage registry shapes: the loss policy and its weight rules,
tokenisation settings, row selectors (`where:`) and mix buckets.

They live here, not in their stages, so that `dsc.compiler.spec.model` validates a spec without
importing the stage code (numpy, pyarrow, tokenizers); the stages import them from here and
keep their old names (`stages.render.render.LossSpec`, `stages.tokenize.tokenize.TokenizeSpec`,
`stages.select.mix.MixBucket`, `stages.transforms.common.Where`, ...).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import Field, field_validator, model_serializer, model_validator

from dsc.compiler.core.errors import did_you_mean
from dsc.compiler.core.strict import Strict, StrictSettings
from dsc.compiler.record import Conversation

if TYPE_CHECKING:
    from dsc.compiler.spec.model import Spec


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
# `loss:` and its weight rules; `special_tokens:`
# ---------------------------------------------------------------------------------------------

Part = Literal["thought", "action", "action_input", "observation", "final_answer"]
PARTS: tuple[str, ...] = get_args(Part)


class WeightRule(Strict):
    """One rule of `loss.weights`: `pattern` (a regex) or `part` (a ReAct part), and its weight."""

    pattern: str | None = Field(None, description="a regular expression over the rendered text (Python re)")
    part: Part | None = Field(None, description="a part of a ReAct text: " + ", ".join(PARTS))
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


def is_weighted(spec: Spec) -> bool:
    """Whether a spec's artifact carries loss weights (`loss: {weights: [...]}` with rules)."""
    return bool(loss_weight_rules(spec.loss))


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
