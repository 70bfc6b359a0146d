"""Scorers from the recipes; a registry where users add their own.

A scorer maps (prediction, gold answer) to a score in [0, 1]. The gold answer is whatever the
eval file holds (a string, a bool for StrategyQA, a number, or a list of acceptable answers —
the best match counts).

- `em`, `f1`: HotpotQA / Bamboogle, SQuAD normalisation (lowercase, drop punctuation, drop the
  articles a/an/the, collapse whitespace), exactly FireAct's `tasks/hotpotqa.py` — including its F1
  rule that a yes/no/noanswer on either side scores 0 unless both normalise to the same string.
- `yesno`: StrategyQA — correct iff the prediction starts with "yes" and the answer is true, or
  with "no" and the answer is false (FireAct `tasks/strategyqa.py`).
- `choice`: MMLU — correct iff the prediction starts with the gold letter (FireAct `tasks/mmlu.py`).
- `gsm8k`: the number after `####` in the gold answer equals the prediction's number (the number
  after its own `####` if present, else its last number), compared numerically.
"""
from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Callable
from typing import Any

from dsc.core.errors import SpecError
from dsc.spec.registries import SCORERS, register_scorer

Scorer = Callable[[str, Any], float]



# dsc scorer → the metric name in lm-eval's results (and in `dsc eval`'s `results` block).
METRIC_NAMES = {"em": "exact_match", "f1": "f1", "yesno": "yesno", "choice": "choice", "gsm8k": "gsm8k"}
FILTER = "none"  # the harness's name for "no filter": keys read "exact_match,none"


def metric_name(scorer: str) -> str:
    return METRIC_NAMES.get(scorer, scorer)


def get_scorer(name: str) -> Scorer:
    try:
        return SCORERS.get(name).fn
    except ValueError as e:  # unknown (did-you-mean), or an entry-point plugin that fails
        raise SpecError(str(e)) from None


def scorer_names() -> list[str]:
    return SCORERS.names()


def _each_answer(answer: Any) -> list[Any]:
    return list(answer) if isinstance(answer, (list, tuple)) else [answer]


def _best(fn: Callable[[str, Any], float]) -> Scorer:
    """Apply a single-answer scorer to every acceptable answer and keep the best."""

    @functools.wraps(fn)  # names and locates the scorer by the function it wraps
    def scorer(prediction: str, answer: Any) -> float:
        golds = _each_answer(answer)
        return max((fn(prediction or "", g) for g in golds), default=0.0)

    return scorer


# --- SQuAD-normalised EM / F1 ----------------------------------------------------------------

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lower, drop punctuation, drop articles, collapse whitespace."""
    s = str(s).lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _gold_text(gold: Any) -> str:
    if isinstance(gold, bool):  # a bool gold (StrategyQA) spells as yes/no for EM/F1
        return "yes" if gold else "no"
    return str(gold)


def exact_match(prediction: str, gold: Any) -> float:
    return float(normalize_answer(prediction) == normalize_answer(_gold_text(gold)))


def f1(prediction: str, gold: Any) -> float:
    pred = normalize_answer(prediction)
    truth = normalize_answer(_gold_text(gold))
    if pred in ("yes", "no", "noanswer") and pred != truth:
        return 0.0
    if truth in ("yes", "no", "noanswer") and pred != truth:
        return 0.0
    pred_tokens, truth_tokens = pred.split(), truth.split()
    common = Counter(pred_tokens) & Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


register_scorer("em")(_best(exact_match))
register_scorer("f1")(_best(f1))


# --- StrategyQA yes/no --------------------------------------------------------------------------

_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def _as_bool(gold: Any) -> bool | None:
    if isinstance(gold, bool):
        return gold
    text = str(gold).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


def yes_no(prediction: str, gold: Any) -> float:
    truth = _as_bool(gold)
    if truth is None:
        return 0.0
    pred = prediction.strip().lower()
    return float((pred.startswith("yes") and truth) or (pred.startswith("no") and not truth))


register_scorer("yesno")(_best(yes_no))


# --- MMLU letter -----------------------------------------------------------------------------------


def choice(prediction: str, gold: Any) -> float:
    letter = str(gold).strip().lower()
    if not letter:
        return 0.0
    pred = prediction.strip().lower().lstrip("(")
    return float(pred.startswith(letter))


register_scorer("choice")(_best(choice))


# --- GSM8K numeric -----------------------------------------------------------------------------------

_HASHES = re.compile(r"####\s*(-?[0-9][0-9.,]*)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


def extract_number(text: Any, *, prefer_hashes: bool = True) -> float | None:
    """The number after `####` when present, else the last number in the text."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return float(text)
    text = str(text)
    if prefer_hashes:
        m = _HASHES.search(text)
        if m:
            return _number(m.group(1))
    numbers = _NUMBER.findall(text)
    return _number(numbers[-1]) if numbers else None


def gsm8k(prediction: str, gold: Any) -> float:
    truth = extract_number(gold)
    pred = extract_number(prediction)
    if truth is None or pred is None:
        return 0.0
    return float(abs(truth - pred) <= 1e-6 * max(1.0, abs(truth)))


register_scorer("gsm8k")(_best(gsm8k))
