"""Exact dedup and decontamination against evaluation questions.

    dedup: true                 # drop exact duplicates (same roles, same text up to whitespace, same calls)
    decontaminate:
      against:                  # lookup sources holding evaluation questions (not emitted)
        - {source: hotpotqa_dev, field: question}
      question: lookup.questions.question    # the row's question (default: assemble.question, else
                                             # the first user message)
      ngram: 8                  # word n-grams
      threshold: 0.5            # share of the row question's n-grams found in one eval question

A row is contaminated when its normalised question (lower case, punctuation and extra spaces
removed) equals an evaluation question, or when at least `threshold` of its word n-grams occur
in a single evaluation question; a question shorter than n words is contaminated when it occurs
whole, as a run of words, inside an evaluation question. Such rows are dropped and counted in the
manifest.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from dsc.core.canonical import canonical_arguments, content_hash
from dsc.record import Conversation

_NON_WORD = re.compile(r"[^\w]+")


def normalise(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def ngrams(text: str, n: int) -> set[str]:
    words = normalise(text).split()
    if not words:
        return set()
    if len(words) < n:
        return {" ".join(words)}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


@dataclass
class Decontaminator:
    n: int
    threshold: float
    exact: set[str] = field(default_factory=set)
    index: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # n-gram → items
    words: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # word → items
    texts: list[str] = field(default_factory=list)  # normalised items, padded with spaces

    def add(self, question: str) -> None:
        norm = normalise(question)
        item = len(self.texts)
        self.exact.add(norm)
        self.texts.append(f" {norm} ")
        for g in ngrams(question, self.n):
            self.index[g].append(item)
        for w in set(norm.split()):
            self.words[w].add(item)

    def _contained(self, norm: str) -> bool:
        """A short question occurring whole inside an evaluation question."""
        words = sorted(set(norm.split()), key=lambda w: len(self.words.get(w, ())))
        if not words:
            return False
        candidates = set(self.words.get(words[0], ()))
        for w in words[1:]:
            candidates &= self.words.get(w, set())
            if not candidates:
                return False
        return any(f" {norm} " in self.texts[i] for i in candidates)

    def check(self, question: str) -> str | None:
        """Why the question is contaminated (`exact` / `ngram`), or None."""
        norm = normalise(question)
        if norm in self.exact:
            return "exact"
        if len(norm.split()) < self.n:
            return "ngram" if self._contained(norm) else None
        grams = ngrams(question, self.n)
        if not grams:
            return None
        hits: dict[int, int] = defaultdict(int)
        for g in grams:
            for item in set(self.index.get(g, ())):
                hits[item] += 1
        if hits and max(hits.values()) / len(grams) >= self.threshold:
            return "ngram"
        return None


def dedup_key(conv: Conversation) -> str:
    """The conversation's content with whitespace runs collapsed, tool calls and what is
    supervised (ids and call ids ignored): rows that train the same thing."""
    return content_hash([[m.role, " ".join(m.content.split()), m.loss,
                          [[c.name, canonical_arguments(c.arguments)] for c in m.tool_calls or []]] for m in conv.messages]
                        + [conv.tools or []])
