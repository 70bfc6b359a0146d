"""A seeded generator of broken specs, made from the example specs under specs/.

Each mutant is one deliberate mistake of a kind users make (a key typo at any depth, a value of
the wrong type, a required key left out, an unknown enum value, a negative count, Jinja that does
not parse, a file that does not exist, YAML that does not parse, a duplicate key, a tab, an alias
bomb). `tests/spec/test_reliability_spec.py` runs every mutant through `dsc build` and checks that it
ends with one located error line. The generator is deterministic: the same seed gives the same
corpus, so a failure can be reproduced by its mutant id.
"""
from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"
EXAMPLE_SPECS = tuple(sorted(SPECS_DIR.glob("*.yaml")))

# Keys that hold an enumerated value, and keys that name a file relative to the spec.
ENUM_KEYS = {"format", "template", "loss", "by", "step", "rule", "special_tokens", "role", "overflow", "position",
             "inference", "syntax"}
FILE_KEYS = {"path", "file", "tools", "pool"}
# Keys every spec / every source must have (the rest have defaults).
REQUIRED_TOP = ("dsc", "name", "sources")
REQUIRED_IN_SOURCE = ("path", "format")
# Mappings whose keys are names the spec author chooses (sources, mix buckets, tags, ...).
NAME_KEYED = {"sources", "mix", "tags", "set", "strings"}
# Numbers that may legitimately be negative (label-bin thresholds).
SIGNED_KEYS = {"eq", "gt", "ge", "lt", "le", "seed"}


@dataclass(frozen=True)
class Mutant:
    id: str  # "<spec stem>:<kind>:<n>"
    kind: str
    spec: str  # the example spec it was made from
    text: str  # the mutated spec text
    # For a missing required key: the 1-based line of the mapping that lacks it.
    lacking_mapping_line: int | None = None
    extra_files: tuple[tuple[str, str], ...] = ()  # (relative path, content) written beside the spec
    what: str = ""  # the path that was changed


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.width = 4096
    return y


def _dump(tree: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(tree, buf)
    return buf.getvalue()


def _walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, node) of the tree, the root first."""
    yield path, node
    if isinstance(node, CommentedMap):
        for k, v in node.items():
            yield from _walk(v, (*path, k))
    elif isinstance(node, CommentedSeq):
        for i, v in enumerate(node):
            yield from _walk(v, (*path, i))


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _typo(key: str, rng: random.Random) -> str:
    """A plausible misspelling: a doubled, dropped or swapped letter."""
    i = rng.randrange(len(key))
    choice = rng.randrange(3) if len(key) > 2 else 0
    if choice == 0:
        return key[:i] + key[i] + key[i:]
    if choice == 1:
        return key[:i] + key[i + 1:]
    j = min(i + 1, len(key) - 1)
    swapped = key[:i] + key[j] + key[i] + key[j + 1:] if j != i else key + "s"
    return swapped if swapped != key else key + "x"


def _rename_key(mapping: CommentedMap, old: Any, new: Any) -> None:
    pos = list(mapping).index(old)
    value = mapping.pop(old)
    mapping.insert(pos, new, value)


def _mutate_tree(text: str, fn) -> str:
    tree = _yaml().load(text)
    fn(tree)
    return _dump(tree)


def mutants_of(spec: Path, seed: int = 0) -> list[Mutant]:
    text = spec.read_text(encoding="utf-8")
    rng = random.Random(f"{seed}:{spec.name}")
    stem = spec.stem
    tree = _yaml().load(text)
    nodes = list(_walk(tree))
    out: list[Mutant] = []

    def add(kind: str, mutated: str, what: Any = "", **kw: Any) -> None:
        out.append(Mutant(f"{stem}:{kind}:{sum(m.kind == kind for m in out)}", kind, spec.name, mutated,
                          what=".".join(map(str, what)) if isinstance(what, tuple) else str(what), **kw))

    maps = [(p, n) for p, n in nodes if isinstance(n, CommentedMap)]
    scalars = [(p, n) for p, n in nodes if p and not isinstance(n, (CommentedMap, CommentedSeq))]

    # Key typos at every level: every key of every mapping.
    for path, node in maps:
        if path and path[-1] in NAME_KEYED:
            continue  # these keys are names the spec chooses: a "typo" is just another name
        for key in list(node):
            if not isinstance(key, str):
                continue

            def typo(t: Any, path=path, key=key) -> None:
                m = _get(t, path)
                new = _typo(key, rng)
                while new in m:
                    new += "x"
                _rename_key(m, key, new)

            add("key_typo", _mutate_tree(text, typo), (*path, key))

    # Wrong types: a seeded half of the scalars (the corpus stays fast) becomes a mapping or a list.
    for path, _ in rng.sample(scalars, (len(scalars) + 1) // 2):
        def wrong(t: Any, path=path) -> None:
            parent = _get(t, path[:-1])
            parent[path[-1]] = CommentedMap({"oops": 1}) if rng.random() < 0.5 else CommentedSeq([CommentedMap({"a": 1})])

        add("wrong_type", _mutate_tree(text, wrong), path)

    # Missing required keys: the mapping that lacks one is where the error must point.
    def lacking_line(mutated: str, path: tuple[Any, ...]) -> int:
        t = _yaml().load(mutated)
        if not path:
            return t.lc.line + 1
        return _get(t, path[:-1]).lc.key(path[-1])[0] + 1

    required = [((), key) for key in REQUIRED_TOP]
    required += [(path, key) for path, node in maps if len(path) == 2 and path[0] == "sources"
                 for key in REQUIRED_IN_SOURCE if key in node]
    for path, key in required:
        def drop(t: Any, path=path, key=key) -> None:
            del _get(t, path)[key]

        mutated = _mutate_tree(text, drop)
        add("missing_key", mutated, (*path, key), lacking_mapping_line=lacking_line(mutated, path))

    # Unknown enum values.
    for path, value in scalars:
        if isinstance(path[-1], str) and path[-1] in ENUM_KEYS and isinstance(value, str):
            def bad_enum(t: Any, path=path, value=value) -> None:
                _get(t, path[:-1])[path[-1]] = value[:-1] + "zz"

            add("unknown_enum", _mutate_tree(text, bad_enum), path)

    # Negative counts: every integer (and float) becomes negative.
    for path, value in scalars:
        if (isinstance(value, (int, float)) and not isinstance(value, bool) and path != ("dsc",)
                and path[-1] not in SIGNED_KEYS):
            def negative(t: Any, path=path, value=value) -> None:
                _get(t, path[:-1])[path[-1]] = -abs(value) - 3

            add("negative", _mutate_tree(text, negative), path)

    # Bad Jinja: every inline template text, and the chat template as a broken file.
    for path, value in scalars:
        if isinstance(value, str) and "{{" in value:
            def bad_jinja(t: Any, path=path, value=value) -> None:
                _get(t, path[:-1])[path[-1]] = value.replace("}}", "", 1) + " {% if %}"

            add("bad_jinja", _mutate_tree(text, bad_jinja), path)

    def broken_template(t: Any) -> None:
        t["template"] = "broken.jinja"

    add("bad_jinja", _mutate_tree(text, broken_template),
        extra_files=(("broken.jinja", "{% for m in messages %}{{ m.content }\n"),))

    # Missing files: every file reference, and the chat template.
    for path, value in scalars:
        if isinstance(path[-1], str) and path[-1] in FILE_KEYS and isinstance(value, str):
            def missing(t: Any, path=path) -> None:
                _get(t, path[:-1])[path[-1]] = "data/no-such-dir/missing.jsonl"

            add("missing_file", _mutate_tree(text, missing), path)

    def missing_template(t: Any) -> None:
        t["template"] = "templates/missing.jinja"

    add("missing_file", _mutate_tree(text, missing_template))

    # YAML syntax errors, duplicate keys and tabs, at seeded lines of the text.
    lines = text.splitlines()
    content = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    for broken in ("oops: [unclosed", "  : no key", "bad: 'unterminated", "- stray item", "key: {a: 1"):
        i = rng.choice(content)
        add("yaml_syntax", "\n".join(lines[:i] + [broken] + lines[i:]) + "\n")
    top = [i for i in content if not lines[i].startswith((" ", "-"))]
    nested = [i for i in content if lines[i].startswith("  ") and ":" in lines[i]
              and not lines[i].lstrip().startswith("- ")]
    for pool in (top, nested):
        for i in rng.sample(pool, min(3, len(pool))):
            add("duplicate_key", "\n".join(lines[:i + 1] + [lines[i]] + lines[i + 1:]) + "\n")
    for i in rng.sample(nested, min(3, len(nested))):
        stripped = lines[i].lstrip(" ")
        add("tab", "\n".join(lines[:i] + ["\t" + stripped] + lines[i + 1:]) + "\n")

    # Alias bombs: exponential (billion laughs) and self-referential.
    bomb = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for k in range(1, 10):
        bomb.append(f"lol{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * 9) + "]")
    base = _mutate_tree(text, lambda t: t.pop("train", None))
    add("alias_bomb", base + "train:\n" + "\n".join("  " + b for b in bomb) + "\n")
    add("alias_bomb", base + "train: &t {again: *t}\n")
    return out


def corpus(seed: int = 0) -> list[Mutant]:
    return [m for spec in EXAMPLE_SPECS for m in mutants_of(spec, seed)]
