"""The spec: YAML loaded with line/column positions, validated by strict pydantic models.

`Spec` composes the section models: those no stage registry shapes live in
`dsc.spec.sections` (label, capabilities, condition, decontaminate, assemble, loss,
tokenize, where, mix); the sources', filters', convert steps' and negative rules' models still
live with their stages, whose registries (formats, filters, convert steps, negative rules)
validate the names and options they allow. `SECTION_READERS` says which part of the build reads each
section. Any problem becomes one `SpecError` located at `file:line:col`, with what is allowed
and a did-you-mean where a close name exists (`dsc.core.errors`).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Union

from pydantic import Discriminator, Field, Tag, ValidationError, field_validator, model_serializer, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from dsc.core.errors import (
    SpecError,
    allowed_list,
    did_you_mean,
    model_at,
    more_problems,
    value_error_text,
    yaml_position,
)
from dsc.core.plugins import LoadedPlugin, import_plugin_list
from dsc.core.strict import Strict
from dsc.spec.runtime import EvalConfig, TrainConfig, validate_spec_block
from dsc.spec.sections import (
    AssembleSpec,
    CapabilitiesSpec,
    ConditionSpec,
    DecontamSpec,
    LabelSpec,
    LossPolicy,
    LossSpec,
    MixBucket,
    PreferenceSpec,
    SpecialTokenPolicy,
    TokenizeSpec,
    loss_weight_rules,
)
from dsc.spec.sources import SourceSpec
from dsc.spec.steps import ConvertStep, FilterEntry, NegativeRule

SPEC_FORMAT_VERSION = 1

# `loss:` is a mode string or a mapping; the mapping is validated as LossSpec alone, so its errors
# name its own keys. (The tags are the YAML kinds, which the error locator drops from paths.)
LossField = Annotated[
    Union[Annotated[LossPolicy, Tag("str")], Annotated[LossSpec, Tag("dict")]],
    Discriminator(lambda v: "dict" if isinstance(v, (dict, LossSpec)) else "str"),
]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class SplitSpec(Strict):
    """Fractions of groups sent to validation/test; the rest is train."""

    validation: float = Field(0.0, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)
    by: Literal["group", "id"] = "group"

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> "SplitSpec":
        if self.validation + self.test >= 1.0:
            raise ValueError("validation + test must leave something for train (sum < 1)")
        return self


class OutputSpec(Strict):
    shard_rows: int = Field(100_000, ge=1, description="rows per parquet shard")
    row_group_rows: int = Field(1_000, ge=1, description="rows per parquet row group")


def _parse_bad_rows(value: Any) -> int | float:
    """`max_bad_rows`: a count (int), a fraction (0 < x < 1) or a percentage string ("2%")."""
    if isinstance(value, bool):
        raise ValueError("must be a count, a fraction below 1 or a percentage like '2%'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a count must be >= 0")
        return value
    if isinstance(value, float):
        if not 0.0 <= value < 1.0:
            raise ValueError("a fraction must be in [0, 1); use an integer for a count")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if m and float(m.group(1)) < 100:
            return float(m.group(1)) / 100.0
    raise ValueError(f"must be a count, a fraction below 1 or a percentage like '2%', not {value!r}")


class Spec(Strict):
    dsc: Literal[1] = Field(description="spec format version")
    plugins: list[str] = Field(
        default_factory=list,
        description="Python modules imported before the rest of the spec is validated (files relative to the "
                    "spec, or dotted modules); what they register can be named in the spec")
    name: str = Field(pattern=NAME_PATTERN, description="artifact name; the default output is build/<name>")
    description: str | None = None
    license: str | None = Field(None, description="licence of the compiled dataset, for the dataset card")
    seed: int = 0
    sources: dict[str, SourceSpec] = Field(min_length=1)
    max_bad_rows: int | float | str = Field(
        "1%", validate_default=True, description="quarantined rows allowed before the build fails: count, fraction or 'N%'"
    )
    template: str = Field("chatml", description="built-in name, a .jinja file, or tokenizer:<dir>")
    loss: LossField = Field(LossPolicy.assistant, description=(
        "a mode (assistant, all, last, per-message) or {mode, weights: [{pattern | part, weight}]}"))
    special_tokens: SpecialTokenPolicy = SpecialTokenPolicy.warn
    tokenize: TokenizeSpec | None = None
    split: SplitSpec = SplitSpec()
    output: OutputSpec = OutputSpec()
    # Agent-data semantics (dsc.compiler.stages.transforms, dsc.compiler.stages.select.mix), in the order they run.
    label: LabelSpec | list[LabelSpec] | None = Field(
        None, description="success label / class from a field, or a list of rules with `where` (see docs/RECIPES.md)")
    filters: list[FilterEntry] = Field(default_factory=list, description="quality filters; failing rows are dropped")
    convert: list[ConvertStep] = Field(default_factory=list, description="format conversion steps")
    decontaminate: DecontamSpec | None = None
    assemble: AssembleSpec | None = Field(None, description="prompt turns prepended/appended to each row")
    condition: ConditionSpec | None = Field(None, description="success-conditioning strings by label class")
    negatives: list[NegativeRule] = Field(default_factory=list, description="rule-generated negatives")
    capabilities: CapabilitiesSpec | None = None
    dedup: bool = Field(True, description="drop exact duplicate conversations")
    mix: dict[str, MixBucket] | None = Field(None, description="counts / rates / ratios / proportions per bucket")
    preference: PreferenceSpec | None = Field(
        None, description="preference pairs (DPO) or rows (KTO) over the selected rows instead of SFT rows")
    # Runtime defaults; validated by dsc.runtime when training/evaluating.
    train: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None

    @field_validator("max_bad_rows")
    @classmethod
    def _bad_rows(cls, v: Any) -> int | float:
        return _parse_bad_rows(v)

    @field_validator("sources")
    @classmethod
    def _source_names(cls, v: dict[str, SourceSpec]) -> dict[str, SourceSpec]:
        for name in v:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"source name {name!r} must match {NAME_PATTERN}")
        return v

    @model_serializer(mode="wrap")
    def _without_empty_plugins(self, handler: Any) -> dict[str, Any]:
        # A spec without plugins (or preference) dumps as it did before `plugins:` (`preference:`)
        # existed: same artifact version.
        d = handler(self)
        if not d.get("plugins"):
            d.pop("plugins", None)
        if d.get("preference") is None:
            d.pop("preference", None)
        return d

    def emitted_sources(self) -> dict[str, SourceSpec]:
        """Sources whose rows become examples (lookup tables are joined, not emitted)."""
        return {k: v for k, v in self.sources.items() if v.lookup is None}


# Which part of a build reads each section of the spec: one entry per `Spec` field (importing
# this module fails when a field has none, so a new section cannot be left out). The build
# cache keys a source's stage-1 segment by the "rows" sections (`engine.cache.normalised_key`):
#   rows       shapes stage-1 rows (normalise, row transforms): keyed as it is
#   sources    the sources: keyed as the source itself and its lookup sources
#   rendering  read by render + tokenise; stage 1 reads it only when capability ratios are
#              measured in tokens (keyed then)
#   code       the plugins: keyed as the code of the callables stage 1 runs
#   later      selection, splits, output, documentation, runtime settings: stage 1 never reads it
SECTION_READERS: dict[str, Literal["rows", "sources", "rendering", "code", "later"]] = {
    "dsc": "rows", "seed": "rows", "label": "rows", "filters": "rows", "convert": "rows",
    "decontaminate": "rows", "assemble": "rows", "condition": "rows", "negatives": "rows",
    "capabilities": "rows",  # its `rates`/`proportions` are selection (engine.cache drops them)
    "preference": "rows",  # turns conditioning off in stage 1 (`sections.row_condition`); the pairs are later
    "sources": "sources",
    "template": "rendering", "loss": "rendering", "special_tokens": "rendering", "tokenize": "rendering",
    "plugins": "code",
    "name": "later", "description": "later", "license": "later", "max_bad_rows": "later", "split": "later",
    "output": "later", "dedup": "later", "mix": "later", "train": "later", "eval": "later",
}
if set(SECTION_READERS) != set(Spec.model_fields):
    raise TypeError(f"SECTION_READERS must name every Spec field: missing "
                    f"{sorted(set(Spec.model_fields) - set(SECTION_READERS))}, "
                    f"unknown {sorted(set(SECTION_READERS) - set(Spec.model_fields))}")


def is_weighted(spec: Spec) -> bool:
    """Whether a spec's artifact carries loss weights (`loss: {weights: [...]}` with rules)."""
    return bool(loss_weight_rules(spec.loss))


def sections_read_by(reader: str) -> frozenset[str]:
    """The spec sections `SECTION_READERS` gives to `reader`."""
    return frozenset(name for name, r in SECTION_READERS.items() if r == reader)


# ---------------------------------------------------------------------------------------------
# Loading with positions
# ---------------------------------------------------------------------------------------------


class LoadedSpec:
    """A validated spec with where it came from, so later checks can point at a key."""

    def __init__(self, spec: Spec, path: Path, tree: Any, text: str, plugins: list[LoadedPlugin] | None = None):
        self.spec = spec
        self.path = path
        self.base_dir = path.parent
        self.tree = tree
        self.text = text
        self.plugins = plugins or []  # the `plugins:` modules, imported

    def position(self, loc: tuple[Any, ...]) -> tuple[int | None, int | None]:
        return yaml_position(self.tree, loc, top_if_missing=True)

    def error(self, message: str, loc: tuple[Any, ...]) -> SpecError:
        line, col = self.position(loc)
        return SpecError(message, str(self.path), line, col)

    @contextmanager
    def at(self, *loc: Any) -> Iterator[None]:
        """Attach this key's location to a SpecError raised without one (e.g. a missing file)."""
        try:
            yield
        except SpecError as e:
            if e.line is None:
                raise self.error(e.message, loc) from None
            raise
        except (ValueError, OSError) as e:
            raise self.error(str(e), loc) from None


def default_out_dir(loaded: LoadedSpec) -> Path:
    """Where a spec's artifact goes when no output is given: build/<name> beside the spec."""
    return loaded.base_dir / "build" / loaded.spec.name


# YAML aliases share one node: a few lines can stand for billions of values ("billion laughs")
# or for a value that contains itself. Plain values are built under these limits instead.
MAX_SPEC_VALUES = 100_000  # scalars, mappings and lists after alias expansion
MAX_SPEC_DEPTH = 64


def _to_plain(tree: Any, path: Path) -> Any:
    """The YAML tree as plain dicts/lists, refusing alias bombs and self-containing values."""
    budget = [MAX_SPEC_VALUES]
    open_nodes: set[int] = set()

    def located(message: str, node: Any, parent: Any) -> SpecError:
        where = node if hasattr(node, "lc") else parent
        line, col = (where.lc.line + 1, where.lc.col + 1) if hasattr(where, "lc") else (1, 1)
        return SpecError(message, str(path), line, col)

    def plain(node: Any, parent: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise located(f"the spec expands to more than {MAX_SPEC_VALUES:,} values (YAML aliases repeating "
                          "a large value?); write the values out or use fewer aliases", node, parent)
        if not isinstance(node, (CommentedMap, CommentedSeq)):
            return node
        if id(node) in open_nodes:
            raise located("a YAML alias refers to a value that contains it (a value cannot contain itself)",
                          node, parent)
        if depth > MAX_SPEC_DEPTH:
            raise located(f"the spec nests deeper than {MAX_SPEC_DEPTH} levels", node, parent)
        open_nodes.add(id(node))
        try:
            if isinstance(node, CommentedMap):
                return {str(k): plain(v, node, depth + 1) for k, v in node.items()}
            return [plain(v, node, depth + 1) for v in node]
        finally:
            open_nodes.discard(id(node))

    return plain(tree, tree, 0)


def _strip_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic inserts union member names ('int', 'function-after[...]') into loc; drop them."""
    return tuple(p for p in loc if not (isinstance(p, str) and (p in {"int", "float", "str", "bool", "list", "dict"}
                                                              or "[" in p)))


def _describe(err: dict[str, Any], tree: Any) -> tuple[str, tuple[Any, ...]]:
    loc = _strip_union_tags(tuple(err["loc"]))
    kind = err["type"]
    dotted = ".".join(str(p) for p in loc)
    if kind == "extra_forbidden":
        key = str(loc[-1])
        parent = model_at(Spec, loc[:-1]) if len(loc) > 1 else Spec
        allowed = list(parent.model_fields) if parent else []
        where = ".".join(str(p) for p in loc[:-1])
        return (f"unknown key '{key}'" + (f" in '{where}'" if where else "") + did_you_mean(key, allowed)
                + (f"; allowed: {allowed_list(allowed)}" if allowed else "")), loc
    if kind == "missing":
        return f"missing required key '{dotted}'", loc[:-1]
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        options = re.findall(r"'([^']*)'", expected)
        value = err.get("input")
        hint = did_you_mean(str(value), options) if isinstance(value, str) else ""
        return f"'{dotted}': {value!r} is not allowed{hint}; allowed: {expected}", loc
    msg = value_error_text(err["msg"])
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
    return (f"'{dotted}': {msg}{shown}" if dotted else msg), loc


def _yaml_error_position(e: MarkedYAMLError, text: str) -> tuple[int, int]:
    """Where a YAML error is, 1-based, always inside the text: a problem found at the end of the
    file (an unterminated quote or bracket) is reported where its context (the quote) began."""
    n_lines = max(1, len(text.splitlines()))
    mark = e.problem_mark
    if (mark is None or mark.line >= n_lines) and e.context_mark is not None:
        mark = e.context_mark
    if mark is None:
        return 1, 1
    if mark.line >= n_lines:  # past the last line: its end
        last = text.splitlines()[-1] if text.splitlines() else ""
        return n_lines, len(last) + 1
    return mark.line + 1, mark.column + 1


def parse_spec(text: str, path: Path) -> LoadedSpec:
    """Parse and validate spec text; raises one located SpecError."""
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as e:
        problem = e.problem or e.context or "invalid YAML"
        line, col = _yaml_error_position(e, text)
        raise SpecError(f"invalid YAML: {problem}", str(path), line, col) from None
    except Exception as e:  # ruamel raises a few unmarked errors (duplicate keys, bad encodings)
        raise SpecError(f"invalid YAML: {e}", str(path), 1, 1) from None
    if not isinstance(tree, CommentedMap):
        raise SpecError("a spec must be a YAML mapping (key: value lines)", str(path), 1, 1)
    version = tree.get("dsc")
    if version is not None and version != SPEC_FORMAT_VERSION:
        line, col = yaml_position(tree, ("dsc",), top_if_missing=True)
        raise SpecError(f"unsupported spec format 'dsc: {version}'; this dsc reads 'dsc: {SPEC_FORMAT_VERSION}'",
                        str(path), line, col)
    plugins = import_plugins(tree, path)
    try:
        spec = Spec.model_validate(_to_plain(tree, path))
    except ValidationError as e:
        errors = e.errors(include_url=False)
        described = []
        for err in errors:
            message, loc = _describe(err, tree)
            line, col = yaml_position(tree, loc, top_if_missing=True)
            # An unknown key usually explains a missing one (a typo): report it first.
            priority = 0 if err["type"] == "extra_forbidden" else 1
            described.append((priority, line is None, line or 0, col or 0, message, line, col))
        described.sort(key=lambda d: d[:4])
        *_, message, line, col = described[0]
        message += more_problems(len(described) - 1)
        raise SpecError(message, str(path), line, col) from None
    return LoadedSpec(spec, path, tree, text, plugins)


def import_plugins(tree: CommentedMap, path: Path) -> list[LoadedPlugin]:
    """Import the spec's `plugins:` (before the rest is validated, so the names they register are
    valid in it); a missing module or one that raises is a located SpecError."""
    refs = tree.get("plugins")
    if refs is None:
        return []
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        line, col = yaml_position(tree, ("plugins",), top_if_missing=True)
        raise SpecError("'plugins' must be a list of Python files (relative to the spec) or dotted module names",
                        str(path), line, col)
    def located(i: int, ref: str, why: str) -> SpecError:
        line, col = yaml_position(tree, ("plugins", i), top_if_missing=True)
        return SpecError(f"plugins[{i}]: cannot import {ref!r}: {why}", str(path), line, col)

    return import_plugin_list(refs, path.parent, located)


def read_spec(path: str | Path) -> LoadedSpec:
    """Read, parse and validate a spec file: every section's model and the `train:`/`eval:`
    settings. (`dsc.compiler.engine.validation.load_spec` also checks files, templates and the
    sections against each other.)"""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"cannot read spec: {e}", str(p)) from None
    loaded = parse_spec(text, p)
    check_runtime_blocks(loaded)
    return loaded


def check_runtime_blocks(loaded: LoadedSpec) -> None:
    """The `train:` / `eval:` blocks are the runtime's settings; check them now so a typo fails
    at `dsc validate`, not an hour into training. (dsc.spec.runtime imports no torch.)"""

    for name in ("train", "eval"):
        if name in loaded.tree:
            validate_spec_block(name, loaded.tree[name], str(loaded.path))


def json_schema() -> dict[str, Any]:
    """The spec's JSON Schema (`dsc schema`), with the `train:` and `eval:` blocks typed by the
    runtime's settings models (the spec keeps them as plain mappings, validated by those models)."""
    schema = Spec.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for key, model in (("train", TrainConfig), ("eval", EvalConfig)):
        sub = model.model_json_schema()
        for name, d in sub.pop("$defs", {}).items():
            if defs.setdefault(name, d) != d:
                raise AssertionError(f"two schemas named {name} in the spec's JSON Schema")
        described = schema["properties"][key].get("description")
        schema["properties"][key] = {"anyOf": [sub, {"type": "null"}], "default": None,
                                     **({"description": described} if described else {})}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "dsc spec"
    return schema
