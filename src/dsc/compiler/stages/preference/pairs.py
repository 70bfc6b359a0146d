"""Preference pairs over a spec's rows: which `chosen` × `rejected` pairs of one group are
taken, and where each pair is cut into a shared prompt and its two completions.

A pure stage function (`build_pairs`): rows and the `preference:` section in, pairs out, no
engine. What is taken depends on nothing but the rows and the seed: candidates are ranked by a
seeded hash of the two ids (sorted, so the rank does not depend on which side is which), never
by input order, so adding rows never reorders the pairs already there.

Cutting (`cut_pair`):

- `trajectory`: the prompt is everything before the first supervised assistant turn (an
  assembled acknowledgement with `loss: false` stays in the prompt); both sides must have the
  same prompt and tools, and the completions are the rest of each conversation.
- `step`: the prompt is the longest common prefix, tool results included; the completions are
  the one assistant turn of each side where they first differ. A pair whose first difference is
  not an assistant turn in both (a tool result, a user turn, one side ending) cannot be cut so:
  it is reported (`Unpairable`, quarantined by the build), so tool outputs are never scored.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from dsc.compiler.stages.transforms.common import rank_key
from dsc.record import Conversation, Message
from dsc.spec.sections import PreferenceSpec

RANK_PURPOSE = "preference"

# Why a candidate pair was not taken (counted in the manifest, not quarantined: nothing is wrong
# with the rows).
TIE = "tie"  # equal scores, or the same completion on both sides
INVERTED = "chosen scored below rejected"
BELOW_MIN_GAP = "score gap below min_gap"
NO_SCORE = "no score (min_gap needs meta.score on both sides)"
OVER_CAP = "over per_group_max"


@dataclass(frozen=True)
class Pair:
    """A chosen and a rejected row of one group, cut into a shared prompt and two completions."""

    group: str
    chosen: Conversation
    rejected: Conversation
    cut: int  # message index where the completions start (the prompt's length)
    chosen_turns: list[Message]
    rejected_turns: list[Message]
    score_gap: float | None

    @property
    def id(self) -> str:
        return f"{self.chosen.id}>{self.rejected.id}"

    @property
    def prompt(self) -> list[Message]:
        return self.chosen.messages[:self.cut]


@dataclass(frozen=True)
class Unpairable:
    """A candidate pair that cannot be cut as the granularity asks (the build quarantines it)."""

    chosen: Conversation
    rejected: Conversation
    reason: str


@dataclass
class PairSelection:
    pairs: list[Pair]  # in group order, each group's in rank order
    unpairable: list[Unpairable]
    candidates: int  # chosen × rejected pairs within groups (a row never pairs with itself)
    dropped: Counter[str] = field(default_factory=Counter)  # reason → candidate pairs not taken


class Tie(Exception):
    """The two sides complete the prompt identically: nothing to prefer."""


def _same(a: Message, b: Message) -> bool:
    # What the model sees of a message; loss flags and capability tags are the build's own.
    return (a.role, a.content, a.name, a.tool_call_id, [t.to_dict(canonical=True) for t in a.tool_calls or []]) == \
           (b.role, b.content, b.name, b.tool_call_id, [t.to_dict(canonical=True) for t in b.tool_calls or []])


def _prompt_length(conv: Conversation) -> int | None:
    """Messages before the first supervised assistant turn (None: there is none)."""
    return next((i for i, m in enumerate(conv.messages) if m.role == "assistant" and m.loss is not False), None)


def cut_pair(chosen: Conversation, rejected: Conversation, granularity: str) -> tuple[int, list[Message], list[Message]]:
    """(prompt length, chosen completion, rejected completion); ValueError says why the pair
    cannot be cut, `Tie` that the completions are the same."""
    if (chosen.tools or None) != (rejected.tools or None):
        raise ValueError("the two sides offer different tools")
    a, b = chosen.messages, rejected.messages
    if granularity == "trajectory":
        k, k2 = _prompt_length(chosen), _prompt_length(rejected)
        if k is None or k2 is None:
            raise ValueError(f"the {'chosen' if k is None else 'rejected'} side has no supervised assistant turn")
        if k != k2 or not all(_same(x, y) for x, y in zip(a[:k], b[:k])):
            first = next((i for i, (x, y) in enumerate(zip(a[:k], b[:k])) if not _same(x, y)), min(k, k2))
            raise ValueError(f"the two sides' prompts differ (at message {first}); a trajectory pair needs one "
                             "prompt (conditioning strings? see preference.condition)")
        if len(a) == len(b) and all(_same(x, y) for x, y in zip(a[k:], b[k:])):
            raise Tie()
        return k, a[k:], b[k:]
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if not _same(x, y)), min(len(a), len(b)))
    if i == len(a) and i == len(b):
        raise Tie()
    if i == len(a) or i == len(b):
        side = "chosen" if i == len(a) else "rejected"
        raise ValueError(f"the {side} side ends where the other goes on (message {i}): no assistant turn differs")
    if a[i].role != "assistant" or b[i].role != "assistant":
        role = a[i].role if a[i].role != "assistant" else b[i].role
        raise ValueError(f"the first difference is at message {i}, a {role} turn, not an assistant turn in both "
                         "(a step pair never scores tool results or user turns)")
    return i, [a[i]], [b[i]]


def _gap(chosen: Conversation, rejected: Conversation) -> float | None:
    a, b = chosen.meta.score, rejected.meta.score
    return None if a is None or b is None else float(a) - float(b)


def _skip_reason(gap: float | None, spec: PreferenceSpec) -> str | None:
    if gap is None:
        return NO_SCORE if spec.min_gap is not None else None
    if gap == 0:
        return TIE
    if gap < 0:
        return INVERTED
    if spec.min_gap is not None and gap < spec.min_gap:
        return BELOW_MIN_GAP
    return None


def pair_rank(seed: int, chosen_id: str, rejected_id: str) -> tuple[str, str]:
    """The sort key of a candidate: a seeded hash of the two ids in sorted order (the same
    whichever side each is on), then the chosen id (a row on both sides of two candidates)."""
    return rank_key(seed, RANK_PURPOSE, "\x1f".join(sorted((chosen_id, rejected_id)))), chosen_id


def build_pairs(rows: Iterable[Conversation], spec: PreferenceSpec, seed: int) -> PairSelection:
    """The pairs of every group, each group's taken in rank order up to `per_group_max`."""
    sides: dict[str, tuple[list[Conversation], list[Conversation]]] = defaultdict(lambda: ([], []))
    for conv in rows:
        if spec.chosen.matches(conv):
            sides[conv.group][0].append(conv)
        if spec.rejected.matches(conv):
            sides[conv.group][1].append(conv)
    out = PairSelection([], [], 0)
    for group in sorted(sides):
        chosen, rejected = sides[group]
        candidates = [(c, r) for c in chosen for r in rejected if c.id != r.id]
        out.candidates += len(candidates)
        candidates.sort(key=lambda p: pair_rank(seed, p[0].id, p[1].id))
        taken = 0
        for n, (c, r) in enumerate(candidates):
            if spec.per_group_max is not None and taken >= spec.per_group_max:
                out.dropped[OVER_CAP] += len(candidates) - n
                break
            gap = _gap(c, r)
            why = _skip_reason(gap, spec)
            if why is not None:
                out.dropped[why] += 1
                continue
            try:
                cut, c_turns, r_turns = cut_pair(c, r, spec.granularity)
            except Tie:
                out.dropped[TIE] += 1
                continue
            except ValueError as e:
                out.unpairable.append(Unpairable(c, r, str(e)))
                continue
            out.pairs.append(Pair(group, c, r, cut, c_turns, r_turns, gap))
            taken += 1
    return out


@dataclass(frozen=True)
class KtoRow:
    """One side of a pair as an unpaired KTO example: its prompt, completion and label."""

    conv: Conversation
    cut: int
    completion: list[Message]
    desirable: bool

    @property
    def id(self) -> str:
        return f"{self.conv.id}@{self.cut}"

    @property
    def prompt(self) -> list[Message]:
        return self.conv.messages[:self.cut]


def kto_rows(pairs: Iterable[Pair]) -> list[KtoRow]:
    """Both sides of every pair, each (row, cut) once: a trajectory in three pairs is one KTO
    example, not three (its first pair decides nothing else: the prompt and completion are the
    row's own)."""
    out: dict[tuple[str, int, bool], KtoRow] = {}
    for p in pairs:
        for conv, turns, good in ((p.chosen, p.chosen_turns, True), (p.rejected, p.rejected_turns, False)):
            out.setdefault((conv.id, p.cut, good), KtoRow(conv, p.cut, turns, good))
    return list(out.values())
