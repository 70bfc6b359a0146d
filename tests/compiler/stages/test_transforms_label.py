"""Labels: mixed success literals, bins with exact edges, text patterns, per-row rules."""
import pytest
from pydantic import ValidationError

from dsc.record import BadRow, Conversation, Message, Meta, Provenance
from dsc.compiler.stages.transforms.label import apply_label, apply_labels
from dsc.spec.sections import LabelSpec, label_classes

NAT_FOUR = {"field": "info.f1", "bins": [
    {"class": "totally_incorrect", "eq": 0},
    {"class": "mostly_incorrect", "gt": 0, "lt": 0.4},
    {"class": "mostly_correct", "ge": 0.4, "lt": 1},
    {"class": "correct", "eq": 1},
], "success": ["correct"]}


def conv(extra=None, messages=None, source="s", method=None):
    return Conversation("id", "g", messages or [Message("user", "q"), Message("assistant", "a")],
                        Meta(source, Provenance("f", "h", 0), method=method, extra=extra or {}))


@pytest.mark.parametrize("value,ok", [
    (True, True), ("True", True), ("true", True), (1, True), ("1", True), (1.0, True),
    (False, False), ("False", False), ("false", False), (0, False), ("0", False), (0.0, False),
])
def test_mixed_success_literals(value, ok):
    c = apply_label(conv({"info": {"reward": value}}), LabelSpec(field="info.reward"))
    assert c.meta.success is ok
    assert c.meta.label == ("success" if ok else "failure")
    assert c.meta.score == (1.0 if ok else 0.0)
    assert c.meta.provenance.steps[-1] == "label"


@pytest.mark.parametrize("value", ["yes", 2, 0.5, None, [], "Uncertain"])
def test_other_values_are_bad_rows(value):
    with pytest.raises(BadRow, match="label"):
        apply_label(conv({"info": {"reward": value}}), LabelSpec(field="info.reward"))


def test_missing_field_is_a_bad_row():
    with pytest.raises(BadRow, match="'info.reward' is missing"):
        apply_label(conv({"info": {}}), LabelSpec(field="info.reward"))


@pytest.mark.parametrize("f1,cls", [
    (0, "totally_incorrect"), (0.0, "totally_incorrect"), (1e-9, "mostly_incorrect"), (0.3999, "mostly_incorrect"),
    (0.4, "mostly_correct"), (0.9999, "mostly_correct"), (1, "correct"), (1.0, "correct"), ("0.4", "mostly_correct"),
])
def test_nat_four_class_bins_exact_edges(f1, cls):
    c = apply_label(conv({"info": {"f1": f1}}), LabelSpec.model_validate(NAT_FOUR))
    assert c.meta.label == cls
    assert c.meta.success is (cls == "correct")
    assert c.meta.score == float(f1)


def test_score_outside_every_bin_is_a_bad_row():
    with pytest.raises(BadRow, match="falls in no bin"):
        apply_label(conv({"info": {"f1": 1.5}}), LabelSpec.model_validate(NAT_FOUR))
    with pytest.raises(BadRow, match="expected a number"):
        apply_label(conv({"info": {"f1": True}}), LabelSpec.model_validate(NAT_FOUR))


@pytest.mark.parametrize("bins,msg", [
    ([{"class": "a", "ge": 0, "le": 0.4}, {"class": "b", "ge": 0.4}], "overlap"),
    ([{"class": "a", "eq": 1}, {"class": "b", "gt": 0.5, "le": 1}], "overlap"),
    ([{"class": "a", "eq": 1, "gt": 0}], "either `eq` or bounds"),
    ([{"class": "a", "gt": 1, "lt": 1}], "admit no value"),
    ([{"class": "a"}], "needs `eq`"),
])
def test_bad_bins(bins, msg):
    with pytest.raises(ValidationError, match=msg):
        LabelSpec.model_validate({"field": "x", "bins": bins})


def test_adjacent_open_and_closed_edges_do_not_overlap():
    """Bins that meet at an edge are accepted, and the edge value belongs to the closed side only."""
    def labels(bins, values):
        spec = LabelSpec.model_validate({"field": "x", "bins": bins})
        return [apply_label(conv({"x": v}), spec).meta.label for v in values]

    assert labels([{"class": "a", "ge": 0, "lt": 0.4}, {"class": "b", "ge": 0.4}],
                  [0, 0.39999, 0.4, 7]) == ["a", "a", "b", "b"]
    assert labels([{"class": "b", "gt": 0.2}, {"class": "a", "le": 0.2}],
                  [-3, 0.2, 0.20001]) == ["a", "a", "b"]


def test_success_must_name_a_bin_class():
    with pytest.raises(ValidationError, match="no bin produces"):
        LabelSpec.model_validate({**NAT_FOUR, "success": ["right"]})


def test_pattern_reads_fireact_reward_from_the_last_observation():
    spec = LabelSpec(field="messages.-1.content", pattern=r"reward = (\S+)\s*$")
    for text, ok in [("Observation: Episode finished, reward = True", True),
                     ("Observation: Episode finished, reward = 1", True),
                     ("Observation: Episode finished, reward = False", False),
                     ("Observation: Episode finished, reward = 0", False)]:
        c = apply_label(conv(messages=[Message("user", "q"), Message("assistant", "a"), Message("user", text)]), spec)
        assert c.meta.success is ok
    with pytest.raises(BadRow, match="does not match"):
        apply_label(conv(), spec)


def test_meta_and_record_paths():
    c = conv({"reward": "1"})
    c.meta.score = 0.0
    assert apply_label(c, LabelSpec(field="meta.score")).meta.success is False
    assert apply_label(conv({"reward": "1"}), LabelSpec(field="meta.reward")).meta.success is True


def test_rule_list_first_match_and_classes():
    rules = [LabelSpec.model_validate({"where": {"method": "cot"}, "field": "reward"}),
             LabelSpec.model_validate({**NAT_FOUR, "where": {"source": "hotpot"}})]
    assert label_classes(rules) == ["success", "failure", "totally_incorrect", "mostly_incorrect",
                                    "mostly_correct", "correct"]
    assert apply_labels(conv({"reward": 0}, method="cot"), rules).meta.label == "failure"
    assert apply_labels(conv({"info": {"f1": 0.5}}, source="hotpot"), rules).meta.label == "mostly_correct"
    assert apply_labels(conv({}, source="other"), rules).meta.label is None
