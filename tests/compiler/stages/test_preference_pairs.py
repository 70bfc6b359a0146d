"""The pure pairing stage: which chosen x rejected pairs of a group are taken, and where each
pair is cut (trajectory: after the shared prompt; step: at the first differing assistant turn)."""
from __future__ import annotations

import random

import pytest

from dsc.compiler.stages.preference.pairs import (
    BELOW_MIN_GAP,
    INVERTED,
    OVER_CAP,
    TIE,
    build_pairs,
    cut_pair,
    kto_rows,
)
from dsc.record import Conversation, Message, Meta, Provenance, ToolCall
from dsc.spec.sections import PreferenceSpec


def conv(cid: str, group: str, label: str, turns: list[Message], score: float | None = None) -> Conversation:
    meta = Meta(source="s", provenance=Provenance("f.jsonl", "0" * 64, 0), label=label, success=label == "success",
                score=score if score is not None else (1.0 if label == "success" else 0.0))
    prompt = [Message("system", "be brief", loss=False), Message("user", f"question {group}", loss=False)]
    return Conversation(cid, group, prompt + turns, meta)


def agent(answer: str, observation: str = "obs") -> list[Message]:
    return [Message("assistant", "", tool_calls=[ToolCall("search", '{"q":"x"}', "c1")]),
            Message("tool", observation, tool_call_id="c1"),
            Message("assistant", f"answer {answer}")]


def spec(**kw) -> PreferenceSpec:
    return PreferenceSpec.model_validate({"kind": "dpo", "chosen": {"label": "success"},
                                          "rejected": {"label": "failure"}, **kw})


def rows(n_groups: int = 4, per_side: int = 3) -> list[Conversation]:
    out = []
    for g in range(n_groups):
        for i in range(per_side):
            out.append(conv(f"g{g}-ok{i}", f"g{g}", "success", agent(f"right {i}")))
            out.append(conv(f"g{g}-bad{i}", f"g{g}", "failure", agent(f"wrong {i}")))
    return out


def ids(sel) -> list[tuple[str, str]]:
    return [(p.chosen.id, p.rejected.id) for p in sel.pairs]


def test_pairs_stay_within_groups_and_ignore_input_order():
    data = rows()
    sel = build_pairs(data, spec(), seed=1)
    assert len(sel.pairs) == 4 * 3 * 3 and sel.candidates == 36
    assert all(p.chosen.group == p.rejected.group == p.group for p in sel.pairs)
    shuffled = data[:]
    random.Random(0).shuffle(shuffled)
    assert ids(build_pairs(shuffled, spec(), seed=1)) == ids(sel)


def test_per_group_max_takes_a_seeded_rank_stable_when_rows_are_added():
    data = rows(per_side=3)
    a = build_pairs(data, spec(per_group_max=2), seed=7)
    assert len(a.pairs) == 8 and a.dropped[OVER_CAP] == 4 * (9 - 2)
    assert ids(build_pairs(data, spec(per_group_max=2), seed=8)) != ids(a)  # the seed decides
    # Another group's rows do not move this one's pairs.
    more = data + [conv("h-ok", "h", "success", agent("r")), conv("h-bad", "h", "failure", agent("w"))]
    b = build_pairs(more, spec(per_group_max=2), seed=7)
    assert set(ids(a)) <= set(ids(b))


def test_scores_decide_ties_gaps_and_inverted_pairs():
    data = [conv("a", "g", "success", agent("1"), score=0.9), conv("b", "g", "failure", agent("2"), score=0.9),
            conv("c", "g", "failure", agent("3"), score=0.5), conv("d", "g", "failure", agent("4"), score=0.85),
            conv("e", "g", "failure", agent("5"), score=0.95)]
    sel = build_pairs(data, spec(min_gap=0.1), seed=0)
    assert ids(sel) == [("a", "c")]
    assert sel.dropped == {TIE: 1, BELOW_MIN_GAP: 1, INVERTED: 1}
    pair = sel.pairs[0]
    assert pair.score_gap == pytest.approx(0.4)


def test_same_completion_is_a_tie():
    data = [conv("a", "g", "success", agent("same")), conv("b", "g", "failure", agent("same"))]
    data[1].meta.score = 0.0
    sel = build_pairs(data, spec(), seed=0)
    assert not sel.pairs and sel.dropped == {TIE: 1}


def test_trajectory_cut_keeps_the_shared_prompt():
    a, b = conv("a", "g", "success", agent("r")), conv("b", "g", "failure", agent("w"))
    cut, ca, cb = cut_pair(a, b, "trajectory")
    assert cut == 2 and ca == a.messages[2:] and cb == b.messages[2:]


def test_trajectory_cut_skips_unsupervised_assistant_turns_in_the_prompt():
    ack = [Message("assistant", "ok, start", loss=False), Message("user", "go", loss=False)]
    a, b = conv("a", "g", "success", ack + agent("r")), conv("b", "g", "failure", ack + agent("w"))
    cut, _, _ = cut_pair(a, b, "trajectory")
    assert cut == 4


def test_trajectory_cut_refuses_different_prompts():
    a, b = conv("a", "g", "success", agent("r")), conv("b", "g", "failure", agent("w"))
    b.messages[1] = Message("user", "question g **incorrectly**", loss=False)
    with pytest.raises(ValueError, match="prompts differ"):
        cut_pair(a, b, "trajectory")


def test_step_cut_is_the_first_differing_assistant_turn_after_shared_tool_results():
    a, b = conv("a", "g", "success", agent("r")), conv("b", "g", "failure", agent("w"))
    cut, ca, cb = cut_pair(a, b, "step")
    assert cut == 4  # system, user, assistant call, tool result: all prompt
    assert [m.content for m in ca] == ["answer r"] and [m.content for m in cb] == ["answer w"]
    assert a.messages[3].role == "tool"


def test_step_cut_never_scores_a_tool_result():
    a, b = conv("a", "g", "success", agent("r", "obs 1")), conv("b", "g", "failure", agent("w", "obs 2"))
    with pytest.raises(ValueError, match="a tool turn, not an assistant turn"):
        cut_pair(a, b, "step")
    sel = build_pairs([a, b], spec(granularity="step"), seed=0)
    assert not sel.pairs and len(sel.unpairable) == 1 and "tool turn" in sel.unpairable[0].reason


def test_step_cut_refuses_a_side_that_ends_early():
    a, b = conv("a", "g", "success", agent("r")), conv("b", "g", "failure", agent("r")[:2])
    with pytest.raises(ValueError, match="ends where the other goes on"):
        cut_pair(a, b, "step")


def test_kto_rows_are_each_side_once():
    sel = build_pairs(rows(n_groups=1, per_side=2), spec(), seed=0)
    kto = kto_rows(sel.pairs)
    assert len(sel.pairs) == 4 and len(kto) == 4
    assert sorted(r.desirable for r in kto) == [False, False, True, True]


def test_same_sides_are_refused():
    with pytest.raises(ValueError, match="select the same rows"):
        PreferenceSpec.model_validate({"kind": "dpo", "chosen": {"label": "x"}, "rejected": {"label": "x"}})
