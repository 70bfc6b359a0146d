"""Scorers: hand-computed EM/F1 on tricky normalisation cases, and the recipes' task metrics."""
from __future__ import annotations

import pytest

from dsc.core.errors import SpecError
from dsc.runtime.evaluation import bootstrap_ci, score, summarize
from dsc.runtime.scorers import get_scorer, normalize_answer, scorer_names
from dsc.spec.registries import SCORERS, register_scorer

em = get_scorer("em")
f1 = get_scorer("f1")


@pytest.mark.parametrize("text, expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  An   apple\tpie ", "apple pie"),
    ("A.B.C.", "abc"),
    ("the", ""),
    ("Theater", "theater"),  # "the" only as a whole word
    ("1,000.5", "10005"),  # punctuation goes even inside numbers (SQuAD's rule)
])
def test_normalisation(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("prediction, answer, expected", [
    ("The Eiffel Tower", "eiffel tower", 1.0),  # article + case
    ("eiffel tower.", "Eiffel Tower", 1.0),  # punctuation
    ("  Paris \n", "paris", 1.0),  # whitespace
    ("an apple", "apple", 1.0),
    ("Anapple", "apple", 0.0),
    ("3.5", "35", 1.0),  # the decimal point is punctuation too
    ("1,000", "1000", 1.0),
    ("1000 people", "1000", 0.0),
    ("yes", True, 1.0),  # a bool gold spells yes/no
    ("", "", 1.0),
    ("Paris", ["Lyon", "paris"], 1.0),  # several acceptable answers: the best counts
])
def test_exact_match(prediction, answer, expected):
    assert em(prediction, answer) == expected


@pytest.mark.parametrize("prediction, answer, expected", [
    ("William Shakespeare", "Shakespeare", 2 * (1 / 2) * 1 / (1 / 2 + 1)),  # p=1/2, r=1 → 2/3
    # normalised "cat sat on mat" (4 tokens) vs "cat on mat" (3): 3 common → p=3/4, r=1 → 6/7
    ("the cat sat on the mat", "a cat on a mat", 6 / 7),
    ("1,000 people", "1000", 2 * 0.5 * 1 / 1.5),  # "1000 people" vs "1000"
    ("yes", "no", 0.0),
    ("yes it is", "yes", 0.0),  # FireAct/HotpotQA: yes/no/noanswer must match exactly
    ("no", "no", 1.0),
    ("Barack Obama", "obama barack", 1.0),  # bag of tokens
    ("obama obama", "obama", 2 * 0.5 * 1 / 1.5),  # duplicates count once per gold occurrence
    ("", "obama", 0.0),
])
def test_f1(prediction, answer, expected):
    assert f1(prediction, answer) == pytest.approx(expected)


@pytest.mark.parametrize("prediction, answer, expected", [
    ("Yes, because the population is larger.", True, 1.0),
    ("yes", "True", 1.0),
    ("no", False, 1.0),
    ("No.", "false", 1.0),
    ("  yes", True, 1.0),
    ("yes", False, 0.0),
    ("Nope", True, 0.0),
    ("Uncertain", False, 0.0),
    ("yes", "maybe", 0.0),  # an unusable gold never scores
])
def test_yesno(prediction, answer, expected):
    assert get_scorer("yesno")(prediction, answer) == expected


@pytest.mark.parametrize("prediction, answer, expected", [
    ("B. Paris", "B", 1.0),
    ("b", "B", 1.0),
    ("(C)", "c", 1.0),
    ("A", "B", 0.0),
    ("", "A", 0.0),
])
def test_choice(prediction, answer, expected):
    assert get_scorer("choice")(prediction, answer) == expected


@pytest.mark.parametrize("prediction, answer, expected", [
    ("The answer is 1,234.", "She pays 1000 + 234 = 1234.\n#### 1,234", 1.0),
    ("#### 18", "18", 1.0),
    ("18.0", "#### 18", 1.0),
    ("17", "#### 18", 0.0),
    ("-3", "#### -3", 1.0),
    ("no number here", "#### 5", 0.0),
    ("I computed 3 then 72", "#### 72", 1.0),  # the last number without ####
    ("0.5", 0.5, 1.0),
])
def test_gsm8k(prediction, answer, expected):
    assert get_scorer("gsm8k")(prediction, answer) == expected


def test_registry_did_you_mean_and_custom_scorer():
    with pytest.raises(SpecError, match="did you mean 'yesno'"):
        get_scorer("yes_no")

    @register_scorer("length_match")
    def _length(prediction, answer):
        return float(len(prediction) == len(str(answer)))

    try:
        assert "length_match" in scorer_names()
        assert score(["abc", "x"], ["xyz", "yy"], ["length_match", "em"]) == {
            "length_match": [1.0, 0.0], "em": [0.0, 0.0]}
    finally:
        SCORERS.defs.pop("length_match", None)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    a = bootstrap_ci(values, 500, seed=3)
    assert a == bootstrap_ci(values, 500, seed=3)
    assert a != bootstrap_ci(values, 500, seed=4)
    assert a[0] < 0.3 < a[1] and 0.15 < a[0] and a[1] < 0.45
    assert bootstrap_ci([1.0] * 5, 100, 0) == [1.0, 1.0]
    assert bootstrap_ci([], 100, 0) is None
    summary = summarize({"em": values}, 0, 0)
    assert summary == {"em": {"mean": 0.3, "ci95": None}}
