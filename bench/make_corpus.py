"""Seeded generator of ReAct-style agent conversations in OpenAI `messages` JSONL.

Each row is `{"messages": [...]}`: a system prompt, a user question, 2-6
assistant/observation exchanges ("Thought: ...\\nAction: tool[...]" then
"Observation: ..."), and a final assistant turn that calls `finish[...]`;
about 600 tokens with the bench tokenizer.

With `--tool-schemas K` the system prompt also carries one of K distinct
tool-schema blocks (1-2k tokens of JSON function specs, as function-calling
system prompts do), reused across rows: the repeated-segment case.

Row i depends only on (seed, i, options), never on n: a corpus of 30 rows is the
prefix of a corpus of 1M rows with the same seed, and rows are written as they
are generated (1M rows never sit in memory).

    python bench/make_corpus.py --n 20000 --out corpus.jsonl [--tool-schemas 32]
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

# The lexicon is part of the benchmark's definition, not of a corpus: fixed, so the
# tokenizer's training text and every corpus draw words from the same distribution.
_LEXICON_SEED = 20261121
_LEXICON_SIZE = 24000

# Real function words take the top Zipf ranks, so the text has English-like rhythm;
# the long tail is pseudo-words, some of which a 16k vocabulary must split.
_FUNCTION_WORDS = (
    "the of and to a in is was that for it as with on by he at from his be this are which or "
    "an had not but were they first its their one has have been also who after two new more "
    "other some into her time when all would there can she than only most may over these "
    "such about years between during three under later made where both many then city "
    "used called being while part since known through well until before each film school "
    "national world north south however several early century group year state number "
    "around four second against following life found high late became five district league "
    "family based country county area river played work including music team won"
).split()
_ONSETS = ("", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "br", "ch", "cl", "cr", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io", "y")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng", "x")

_SYSTEM_PROMPTS = (
    "You are a research agent. Solve the question by interleaving Thought, Action and Observation "
    "steps. Thought reasons about the current situation. Action is one of: search[entity], which "
    "returns the first paragraph about the entity; lookup[keyword], which returns the next sentence "
    "containing the keyword; calculate[expression]; finish[answer], which returns the answer and ends.",
    "You answer multi-hop questions with tools. Think step by step. After each Thought, write one "
    "Action: search[query] to query the encyclopedia, lookup[term] to find a term on the current "
    "page, calculate[expression] for arithmetic, or finish[answer] once you are sure.",
    "You are a careful assistant that uses tools to find facts. Use the format Thought: ... then "
    "Action: tool[input]. Available tools: search, lookup, calculate, finish. Observations come back "
    "from the environment. Never invent an observation; finish with the shortest correct answer.",
    "Answer the user's question by reasoning and acting. Available actions: (1) search[entity] "
    "(2) lookup[keyword] (3) calculate[expression] (4) finish[answer]. Keep thoughts short and "
    "specific, check numbers with calculate, and give the final answer with finish.",
)
_TOOLS_PREAMBLE = (
    "You are a function-calling agent. You are provided with function signatures within <tools></tools> "
    "XML tags. Solve the task step by step: write a Thought, then call exactly one function as "
    "Action: function_name[{json arguments}]. Do not make assumptions about argument values; ask or "
    "look them up. When you are done, call finish[answer].\n<tools>\n"
)
_TOOLS_POSTSCRIPT = "\n</tools>\nUse only the functions above."


@lru_cache(maxsize=1)
def _lexicon() -> tuple[tuple[str, ...], tuple[float, ...], tuple[str, ...]]:
    """(words, Zipf cumulative weights, entity words)."""
    rng = random.Random(_LEXICON_SEED)
    seen = set(_FUNCTION_WORDS)
    words = list(dict.fromkeys(_FUNCTION_WORDS))
    while len(words) < _LEXICON_SIZE:
        n_syll = rng.choices((1, 2, 3, 4), weights=(5, 4, 1.5, 0.3))[0]
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n_syll))
        if len(w) > 1 and w not in seen:
            seen.add(w)
            words.append(w)
    cum = tuple(itertools.accumulate(1.0 / (rank + 2.7) ** 1.05 for rank in range(len(words))))
    # Named entities come from the mid/long tail, as names do.
    entities = tuple(w.capitalize() for w in words[400:8000])
    return tuple(words), cum, entities


class _Text:
    """Text pieces drawn from one row's RNG."""

    __slots__ = ("rng", "words", "cum", "entities")

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.words, self.cum, self.entities = _lexicon()

    def words_(self, k: int) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.cum, k=k))

    def entity(self) -> str:
        return " ".join(self.rng.choices(self.entities, k=self.rng.randint(1, 3)))

    def number(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return str(self.rng.randint(1700, 2025))
        if r < 0.7:
            return str(self.rng.randint(2, 999))
        if r < 0.9:
            return f"{self.rng.randint(1, 99_999):,}"
        return f"{self.rng.uniform(0, 100):.1f}"

    def sentence(self, lo: int, hi: int, end: str = ".") -> str:
        rng = self.rng
        parts = [self.words_(rng.randint(lo, hi))]
        if rng.random() < 0.5:
            parts.insert(rng.randint(0, 1), self.entity())
        if rng.random() < 0.35:
            parts.append(("in " if rng.random() < 0.5 else "") + self.number())
        s = " ".join(parts)
        if rng.random() < 0.3:
            i = s.find(" ", len(s) // 2)
            if i > 0:
                s = s[:i] + "," + s[i:]
        return s[0].upper() + s[1:] + end

    def paragraph(self, lo: int, hi: int) -> str:
        return " ".join(self.sentence(6, 22) for _ in range(self.rng.randint(lo, hi)))


# --- tool schemas -----------------------------------------------------------------------------

def _snake(t: _Text, k: int) -> str:
    return "_".join(t.rng.choices(t.words[150:6000], k=k))


def _toolset(seed: int, k: int) -> list[dict[str, Any]]:
    """The k-th distinct toolset: 5-8 function specs in the OpenAI `tools` shape."""
    t = _Text(random.Random(f"bench-toolset-{seed}-{k}"))
    rng = t.rng
    tools = []
    names: set[str] = set()
    for _ in range(rng.randint(5, 8)):
        name = rng.choice(("get", "search", "list", "create", "update", "find", "compute", "fetch")) + "_" + _snake(t, 2)
        if name in names:
            continue
        names.add(name)
        props: dict[str, Any] = {}
        for _ in range(rng.randint(2, 6)):
            pname = _snake(t, rng.randint(1, 2))
            kind = rng.choice(("string", "string", "integer", "number", "boolean", "array", "enum"))
            desc = t.sentence(5, 16)
            if kind == "enum":
                props[pname] = {"type": "string", "enum": [t.words_(1) for _ in range(rng.randint(2, 5))],
                                "description": desc}
            elif kind == "array":
                props[pname] = {"type": "array", "items": {"type": "string"}, "description": desc}
            else:
                props[pname] = {"type": kind, "description": desc}
                if kind != "string" and rng.random() < 0.3:
                    props[pname]["default"] = {"integer": 10, "number": 0.5, "boolean": False}[kind]
        required = [p for p in props if rng.random() < 0.6] or [next(iter(props))]
        tools.append({"type": "function", "function": {
            "name": name, "description": t.sentence(10, 28),
            "parameters": {"type": "object", "properties": props, "required": required}}})
    return tools


@lru_cache(maxsize=256)
def _toolset_prompt(seed: int, k: int) -> tuple[str, tuple[tuple[str, tuple[tuple[str, str], ...]], ...]]:
    """(system prompt text, ((function name, ((required arg, type), ...)), ...)) of toolset k."""
    tools = _toolset(seed, k)
    # One compact JSON object per line, as function-calling templates render `tool | tojson`.
    body = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    sigs = tuple(
        (f["function"]["name"],
         tuple((p, f["function"]["parameters"]["properties"][p].get("type", "string"))
               for p in f["function"]["parameters"]["required"]))
        for f in tools)
    return _TOOLS_PREAMBLE + body + _TOOLS_POSTSCRIPT, sigs


def _tool_args(t: _Text, args: tuple[tuple[str, str], ...]) -> str:
    values: dict[str, Any] = {}
    for name, kind in args:
        if kind == "integer":
            values[name] = t.rng.randint(1, 500)
        elif kind == "number":
            values[name] = round(t.rng.uniform(0, 1000), 2)
        elif kind == "boolean":
            values[name] = t.rng.random() < 0.5
        elif kind == "array":
            values[name] = [t.entity() for _ in range(t.rng.randint(1, 3))]
        else:
            values[name] = t.entity() if t.rng.random() < 0.6 else t.words_(t.rng.randint(1, 4))
    return json.dumps(values, ensure_ascii=False)


# --- conversations ----------------------------------------------------------------------------

def conversation(i: int, seed: int = 0, tool_schemas: int = 0, observation_role: str = "tool") -> list[dict[str, str]]:
    """Row i of the corpus: a pure function of its arguments."""
    t = _Text(random.Random(f"bench-row-{seed}-{i}"))
    rng = t.rng
    if tool_schemas:
        system, sigs = _toolset_prompt(seed, rng.randrange(tool_schemas))
    else:
        system, sigs = rng.choice(_SYSTEM_PROMPTS), ()
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Question: " + t.sentence(8, 24, end="?")},
    ]
    for _ in range(rng.randint(2, 6)):
        if sigs:
            name, args = rng.choice(sigs)
            action = f"{name}[{_tool_args(t, args)}]"
        else:
            r = rng.random()
            if r < 0.6:
                action = f"search[{t.entity()}]"
            elif r < 0.85:
                action = f"lookup[{t.words_(1)}]"
            else:
                action = f"calculate[{t.number()} {rng.choice('+-*/')} {t.number()}]"
        messages.append({"role": "assistant", "content": f"Thought: {t.sentence(10, 30)}\nAction: {action}"})
        messages.append({"role": observation_role, "content": "Observation: " + t.paragraph(1, 4)})
    answer = t.entity() if rng.random() < 0.6 else rng.choice(("yes", "no", t.number()))
    messages.append({"role": "assistant", "content": f"Thought: {t.sentence(8, 24)}\nAction: finish[{answer}]"})
    return messages


def iter_conversations(n: int, seed: int = 0, tool_schemas: int = 0, observation_role: str = "tool",
                       start: int = 0) -> Iterator[list[dict[str, str]]]:
    for i in range(start, start + n):
        yield conversation(i, seed, tool_schemas, observation_role)


def write_corpus(path: Path | str, n: int, seed: int = 0, tool_schemas: int = 0,
                 observation_role: str = "tool") -> Path:
    """Stream n rows to `path` (written to a temp name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", buffering=1 << 20) as f:
        for messages in iter_conversations(n, seed, tool_schemas, observation_role):
            f.write(json.dumps({"messages": messages}, ensure_ascii=False))
            f.write("\n")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, required=True, help="number of conversations")
    p.add_argument("--out", type=Path, required=True, help="output .jsonl path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tool-schemas", type=int, default=0, metavar="K",
                   help="carry one of K distinct tool-schema blocks in each system prompt (0: none)")
    p.add_argument("--observation-role", choices=("tool", "user"), default="tool")
    a = p.parse_args(argv)
    if a.n < 0 or a.tool_schemas < 0:
        p.error("--n and --tool-schemas must be >= 0")
    write_corpus(a.out, a.n, a.seed, a.tool_schemas, a.observation_role)


if __name__ == "__main__":
    main()
