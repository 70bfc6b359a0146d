"""Selection: dedup, mix buckets (count / rate / ratio / proportion / per-group caps, seeded
up/down-sampling), capability ratios in rows and in a weight measure."""
import pytest
from pydantic import ValidationError

from dsc.compiler.stages.select.mix import apply_capability_ratios, select
from dsc.spec.sections import MixBucket, mix_problems
from dsc.record import Conversation, Message, Meta, Provenance
from dsc.spec.sections import CapabilitiesSpec


def row(source, i, group=None, label=None, capability=None, text=None, method=None):
    c = Conversation(f"{source}:{i:03d}", group or f"{source}-g{i}",
                     [Message("user", f"q {source} {i}"), Message("assistant", text or f"a {source} {i}")],
                     Meta(source, Provenance("f", "h", i), method=method, capability=capability))
    c.meta.label = label
    c.meta.success = None if label is None else label == "success"
    return c


def mix(**buckets):
    return {k: MixBucket.model_validate(v) for k, v in buckets.items()}


def ids(rows):
    return sorted(c.id for c in rows)


def test_count_and_ratio_with_group_cap():
    pos = [row("pos", i) for i in range(30)]
    neg = [row("neg", i, group=f"q{i // 5}") for i in range(60)]  # 5 per question, 12 questions
    sel = select(pos + neg, seed=42, dedup_rows=False,
                 mix=mix(pos={"count": 10}, neg={"ratio": 2.0, "of": "pos", "per_group_max": 3}), capabilities=None)
    got_pos = [c for c in sel.rows if c.meta.source == "pos"]
    got_neg = [c for c in sel.rows if c.meta.source == "neg"]
    assert len(got_pos) == 10 and len(got_neg) == 20
    per_group = {}
    for c in got_neg:
        per_group[c.group] = per_group.get(c.group, 0) + 1
    assert max(per_group.values()) <= 3
    rep = sel.report["mix"]
    assert rep["neg"] == {"available": 60, "over_group_cap": 24, "how": "ratio", "requested": 2.0, "target": 20,
                          "of_selected": 10, "selected": 20, "copies": 0, "realised": 2.0}
    assert rep["pos"]["selected"] == 10 and rep["_unmatched_kept"] == 0


def test_selection_is_seeded_order_independent_and_unaffected_by_other_sources():
    pos = [row("pos", i) for i in range(30)]
    other = [row("other", i) for i in range(40)]
    m = mix(pos={"count": 10}, other={"rate": 0.5})
    a = select(pos + other, seed=1, dedup_rows=False, mix=m, capabilities=None)
    b = select(list(reversed(pos + other)), seed=1, dedup_rows=False, mix=m, capabilities=None)
    assert ids(a.rows) == ids(b.rows)
    alone = select(pos, seed=1, dedup_rows=False, mix=mix(pos={"count": 10}), capabilities=None)
    assert [c for c in ids(a.rows) if c.startswith("pos")] == ids(alone.rows)
    more = select(pos + other + [row("new", i) for i in range(50)], seed=1, dedup_rows=False,
                  mix=mix(pos={"count": 10}, other={"rate": 0.5}, new={"count": 5}), capabilities=None)
    assert [c for c in ids(more.rows) if not c.startswith("new")] == ids(a.rows)
    c = select(pos + other, seed=2, dedup_rows=False, mix=m, capabilities=None)
    assert ids(c.rows) != ids(a.rows)


def test_upsampling_makes_distinct_stable_copies():
    rows = [row("s", i) for i in range(4)]
    sel = select(rows, seed=0, dedup_rows=False, mix=mix(s={"rate": 2.5}), capabilities=None)
    got = ids(sel.rows)
    assert len(got) == 10 and len(set(got)) == 10
    assert sum(1 for i in got if i.endswith("#2")) == 4 and sum(1 for i in got if i.endswith("#3")) == 2
    copy = next(c for c in sel.rows if c.id.endswith("#2"))
    orig = next(c for c in sel.rows if c.id == copy.id[:-2])
    assert copy.group == orig.group and copy.messages[1].content == orig.messages[1].content
    assert copy.meta.provenance.steps[-1] == "copy:2"
    assert sel.report["mix"]["s"]["copies"] == 6
    assert ids(select(rows, seed=0, dedup_rows=False, mix=mix(s={"count": 10}), capabilities=None).rows) == got


def test_proportions_share_a_pool_as_large_as_the_scarcest_allows():
    rows = [row("a", i, method="react") for i in range(50)] + [row("b", i, method="cot") for i in range(12)]
    sel = select(rows, seed=3, dedup_rows=False,
                 mix=mix(react={"where": {"method": "react"}, "proportion": 0.7},
                         cot={"where": {"method": "cot"}, "proportion": 0.3}), capabilities=None)
    got = [c.meta.method for c in sel.rows]
    assert got.count("cot") == 12 and got.count("react") == 28  # pool 40 = 12 / 0.3
    assert sel.report["mix"]["cot"]["realised"] == 0.3 and sel.report["mix"]["react"]["realised"] == 0.7


def test_label_buckets_and_unmatched_rows_are_kept():
    rows = [row("s", i, label="success" if i % 3 else "failure") for i in range(30)] + [row("x", 0)]
    sel = select(rows, seed=1, dedup_rows=False, mix=mix(neg={"where": {"label": "failure"}, "count": 4}),
                 capabilities=None)
    assert sum(c.meta.label == "failure" for c in sel.rows) == 4
    assert sum(c.meta.label == "success" for c in sel.rows) == 20 and "x:000" in ids(sel.rows)
    assert sel.report["mix"]["_unmatched_kept"] == 21


def test_dedup_keeps_the_smallest_id_whatever_the_order():
    a, b = row("b", 1, text="same"), row("a", 1, text="same")
    b.messages[0].content = a.messages[0].content = "same question"
    c = row("c", 2)
    for order in ([a, b, c], [c, b, a]):
        sel = select(order, seed=0, dedup_rows=True, mix=None, capabilities=None)
        assert ids(sel.rows) == ["a:001", "c:002"] and sel.report["dedup_removed"] == {"b": 1}
    a.messages[1].content = "same  "  # whitespace runs do not make a difference
    b.messages[1].content = " same"
    assert len(select([a, b], seed=0, dedup_rows=True, mix=None, capabilities=None).rows) == 1
    b.messages[1].loss = False  # a different supervision is a different example
    assert len(select([a, b], seed=0, dedup_rows=True, mix=None, capabilities=None).rows) == 2


def caps(**kw):
    return CapabilitiesSpec.model_validate({"rules": [{"capability": c} for c in ("reasoning", "retrieval",
                                                                                   "understanding")], **kw})


@pytest.mark.parametrize("n_reason,n_retr,n_und", [(10, 24, 17), (7, 13, 3), (1, 2, 40)])
def test_capability_rates_in_rows_within_one_row(n_reason, n_retr, n_und):
    rows = ([row("r", i, capability="reasoning") for i in range(n_reason)]
            + [row("t", i, capability="retrieval") for i in range(n_retr)]
            + [row("u", i, capability="understanding") for i in range(n_und)] + [row("plain", 0)])
    rates = {"reasoning": 1.0, "retrieval": 0.5, "understanding": 0.75}
    out, rep = apply_capability_ratios(rows, caps(rates=rates), seed=5, weight=lambda c: 1.0)
    for cap, rate in rates.items():
        r = rep["per_capability"][cap]
        assert abs(r["selected"] - rate * r["available"]) <= 0.5 + 1e-9
        assert r["requested"] == rate
    assert "plain:000" in ids(out) and rep["untagged_kept"] == 1


def test_capability_proportions_in_a_weight_measure_within_one_row():
    rows = []
    for cap, n in (("reasoning", 30), ("retrieval", 30), ("understanding", 30)):
        rows += [row(cap[:3], i, capability=cap, text="x" * (5 + (i * 7) % 23)) for i in range(n)]
    weight = lambda c: float(len(c.messages[1].content))  # noqa: E731
    props = {"reasoning": 0.5, "retrieval": 0.3, "understanding": 0.2}
    out, rep = apply_capability_ratios(rows, caps(proportions=props, measure="chars"), seed=1, weight=weight)
    total = sum(weight(c) for c in out)
    for cap, p in props.items():
        got = sum(weight(c) for c in out if c.meta.capability == cap)
        max_row = rep["per_capability"][cap]["max_row"]
        assert abs(got - p * total) <= max_row  # within one row
        assert rep["per_capability"][cap]["realised"] == pytest.approx(got / total, abs=1e-6)


def test_capability_rate_above_one_upsamples():
    rows = [row("r", i, capability="reasoning") for i in range(4)]
    out, rep = apply_capability_ratios(rows, caps(rates={"reasoning": 2.0}), seed=0, weight=lambda c: 1.0)
    assert len(out) == 8 and len(set(ids(out))) == 8 and rep["per_capability"]["reasoning"]["realised"] == 2.0


def test_bucket_validation_and_cross_bucket_problems():
    with pytest.raises(ValidationError, match="not count and rate"):
        MixBucket.model_validate({"count": 1, "rate": 0.5})
    with pytest.raises(ValidationError, match="needs `of"):
        MixBucket.model_validate({"ratio": 2.0})
    probs = mix_problems(mix(pos={"count": 1}, neg={"ratio": 2, "of": "posi"}, loop1={"ratio": 1, "of": "loop2"},
                             loop2={"ratio": 1, "of": "loop1"}, odd={"rate": 1},
                             p1={"where": {"task": "a"}, "proportion": 0.5}), ["pos", "neg", "loop1", "loop2"])
    msgs = " | ".join(m for m, _ in probs)
    assert "`of: posi` is not a mix bucket (did you mean 'pos'?)" in msgs
    assert "loop" in msgs and "'odd' has no `where:`" in msgs and "proportions sum to 0.5" in msgs
