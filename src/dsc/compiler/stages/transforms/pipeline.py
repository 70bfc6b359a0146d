"""The per-row transform stage (run in build workers) and the checks that tie the sections of a
spec together.

Per row, in this order (each step a pure function of the row, the spec and the seed):

    label → filters → convert → decontaminate → assemble → condition → negatives → capabilities

- filters and decontamination drop the row (counted per reason in the manifest);
- negatives add rows made from the (assembled, conditioned) row;
- capabilities tag every row's assistant turns and, with `decompose`, split rows.

Conditioning is applied here, right after assembly, because that is where the assembled turns'
positions are known; mixing never looks at message text, so selecting after conditioning is the
same as conditioning after selecting.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsc.compiler.core.errors import did_you_mean
from dsc.compiler.record import Conversation

from .assemble import (
    QUESTION_PLACEHOLDER,
    Assembler,
    Joiner,
    apply_assemble,
    inference_turns,
    join_paths,
    make_assembler,
    path_lookups,
    question_of,
    read_turns,
)
from .capabilities import decompose, supervised_chars, tag_turns
from .common import lookup_refs
from .condition import BUILTIN_TURNS, apply_condition, inference_block
from .convert import apply_steps, dialect_inference, prepare_steps
from .decontam import Decontaminator
from .filters import apply_filters
from .label import apply_labels, label_classes
from .negatives import apply_rules, prepare_rules

if TYPE_CHECKING:
    from dsc.compiler.spec.model import LoadedSpec, Spec

# The sections that act per row (dedup and mix act on the whole set, in dsc.compiler.stages.select.mix).
SECTIONS = ("label", "filters", "convert", "decontaminate", "assemble", "condition", "negatives", "capabilities")


@dataclass
class RowOutcome:
    rows: list[Conversation] = field(default_factory=list)
    dropped: str | None = None  # "filter: <name>: why" | "decontaminated: exact|ngram"
    weights: dict[str, float] = field(default_factory=dict)  # id → supervised tokens (measure: tokens)


@dataclass
class Transforms:
    """Everything the per-row stage needs, prepared once in the main process."""

    spec: Spec
    seed: int
    assembler: Assembler | None = None
    joiner: Joiner = field(default_factory=Joiner)
    convert_prepared: list[Any] = field(default_factory=list)
    rules_prepared: list[Any] = field(default_factory=list)
    decontaminator: Decontaminator | None = None
    template: Any = None  # for measure: tokens
    tokenizer: Any = None
    loss: Any = None

    def active(self) -> bool:
        return any(getattr(self.spec, s) for s in SECTIONS)


def _lookup_keys(spec: Spec) -> dict[str, str]:
    return {n: s.lookup for n, s in spec.sources.items() if s.lookup is not None}


def build_transforms(spec: Spec, base_dir: Path, *, template: Any = None, tokenizer: Any = None) -> Transforms:
    """Read prompt files, tool files, lookup tables and evaluation questions (once)."""
    from dsc.compiler.stages.read.sources import iter_raw_rows, load_lookup
    from dsc.compiler.stages.read.formats import MISSING, get_path

    tr = Transforms(spec=spec, seed=spec.seed, template=template, tokenizer=tokenizer, loss=spec.loss)
    asm_spec = spec.assemble
    decon = spec.decontaminate
    needed: list[str] = []
    if asm_spec is not None:
        tr.assembler = make_assembler(asm_spec, base_dir)
        needed += tr.assembler.lookups_used()
    if decon is not None:
        needed += path_lookups(_question_path(spec))
    needed = sorted(set(needed))
    if needed:
        tr.joiner = Joiner({n: load_lookup(spec.sources[n], base_dir, n) for n in needed},
                           join_paths(needed, asm_spec.join if asm_spec is not None else {}, _lookup_keys(spec)))
        if tr.assembler is not None:
            tr.assembler.joiner = tr.joiner
    tr.convert_prepared = prepare_steps(spec.convert or [], base_dir)
    tr.rules_prepared = prepare_rules(spec.negatives or [], base_dir)
    if decon is not None:
        d = Decontaminator(decon.ngram, decon.threshold)
        for ev in decon.against:
            for raw in iter_raw_rows(ev.source, spec.sources[ev.source], base_dir):
                q = get_path(raw.data or {}, ev.field)
                if q is not MISSING and isinstance(q, str) and q.strip():
                    d.add(q)
        tr.decontaminator = d
    return tr


def _question_path(spec: Spec) -> str | None:
    decon = spec.decontaminate
    if decon is not None and decon.question:
        return decon.question
    asm = spec.assemble
    return asm.question if asm is not None else None


def _weight(conv: Conversation, tr: Transforms) -> float:
    from dsc.compiler.stages.render.render import render

    rendered = render(conv, tr.template, tr.loss)
    enc = tr.tokenizer.encode(rendered)
    return float(enc.n_supervised) if enc is not None else 0.0


def process_row(conv: Conversation, tr: Transforms) -> RowOutcome:
    """One normalised row → the rows it becomes (BadRow propagates: the row is quarantined)."""
    spec = tr.spec
    label = spec.label
    if label is not None:
        apply_labels(conv, label)
    filters = spec.filters
    if filters:
        why = apply_filters(conv, filters)
        if why is not None:
            return RowOutcome(dropped=f"filter: {why}")
    steps = spec.convert
    if steps:
        conv = apply_steps(conv, steps, tr.convert_prepared)
    if tr.decontaminator is not None:
        q = question_of(conv, tr.joiner, _question_path(spec))
        hit = tr.decontaminator.check(q) if q else None
        if hit is not None:
            return RowOutcome(dropped=f"decontaminated: {hit}")
    positions: dict[str, int] = {}
    if tr.assembler is not None:
        positions = apply_assemble(conv, tr.assembler)
    cond = spec.condition
    if cond is not None:
        apply_condition(conv, cond, positions)
    rows = [conv]
    rules = spec.negatives
    if rules:
        rows += apply_rules(conv, rules, tr.rules_prepared, tr.seed)
    caps = spec.capabilities
    if caps is not None:
        tagged: list[Conversation] = []
        for r in rows:
            tag_turns(r, caps)
            tagged.extend(decompose(r, caps) if caps.decompose else [r])
        rows = tagged
    out = RowOutcome(rows=rows)
    if caps is not None and caps.measure == "tokens" and tr.tokenizer is not None:
        out.weights = {r.id: _weight(r, tr) for r in rows}
    return out


def weight_function(spec: Spec, weights: dict[str, float]):
    """The measure capability ratios count in: 1 per row, supervised characters, or the
    supervised tokens computed per row in the workers (copies weigh what their original does)."""
    caps = spec.capabilities
    measure = caps.measure if caps is not None else "rows"
    if measure == "chars":
        return lambda c: float(supervised_chars(c))
    if measure == "tokens":
        return lambda c: weights.get(c.id.split("#")[0], 0.0)
    return lambda c: 1.0


def inference(spec: Spec, tr: Transforms | None) -> dict[str, Any]:
    """The manifest's `inference` block (see `condition.inference_block`)."""
    asm = tr.assembler if tr is not None else None
    positions: dict[str, int] = {}
    if asm is not None:
        prompt = inference_turns(asm)
        positions = {t.id: i for i, t in enumerate(asm.prepend) if t.id}
        if not any(QUESTION_PLACEHOLDER in m["content"] for m in prompt):
            prompt.append({"role": "user", "content": QUESTION_PLACEHOLDER})
    else:
        prompt = [{"role": "user", "content": QUESTION_PLACEHOLDER}]
    block = inference_block(spec.condition, prompt, positions)
    dialect = dialect_inference(spec.convert or [], tr.convert_prepared if tr is not None else [])
    if dialect is not None:  # only specs that write a dialect (the others' manifests stay as they were)
        block["dialect"] = dialect
    return block


# ---------------------------------------------------------------------------------------------
# Cross-section checks (spec time): one located error
# ---------------------------------------------------------------------------------------------


def _wheres(spec: Spec) -> list[tuple[Any, tuple[Any, ...]]]:
    """Every `where:` selector in the spec with its location."""
    out: list[tuple[Any, tuple[Any, ...]]] = []
    label = spec.label
    if isinstance(label, list):
        out += [(r.where, ("label", i, "where")) for i, r in enumerate(label)]
    elif label is not None:
        out.append((label.where, ("label", "where")))
    for i, f in enumerate(spec.filters or []):
        out.append((f.where, ("filters", i, "where")))
    for i, s in enumerate(spec.convert or []):
        out.append((s.where, ("convert", i, "where")))
    for i, r in enumerate(spec.negatives or []):
        out.append((r.where, ("negatives", i, "where")))
    caps = spec.capabilities
    for i, r in enumerate(caps.rules if caps is not None else []):
        out.append((r.where, ("capabilities", "rules", i, "where")))
    for name, b in (spec.mix or {}).items():
        out.append((b.where, ("mix", name, "where")))
    return [(w, loc) for w, loc in out if w is not None]


def check_semantics(loaded: LoadedSpec) -> None:
    """Checks across sections; raises one located SpecError (exit 2)."""
    from dsc.compiler.spec.sections import mix_problems

    spec, base = loaded.spec, loaded.base_dir
    sources = list(spec.sources)
    emitted = [n for n, s in spec.sources.items() if s.lookup is None]
    lookups = _lookup_keys(spec)

    def need_lookup(name: str, loc: tuple[Any, ...]) -> None:
        if name not in spec.sources:
            raise loaded.error(f"lookup '{name}' is not a source{did_you_mean(name, sources)}; add it under "
                               f"`sources:` with `lookup: <key field>`", loc)
        if spec.sources[name].lookup is None:
            raise loaded.error(f"source '{name}' is used as a lookup but has no key: add `lookup: <key field>` "
                               f"to sources.{name}", loc)

    label = spec.label
    classes = label_classes(label)

    asm = spec.assemble
    if asm is not None:
        for section in ("prepend", "append"):
            turns = getattr(asm, section)
            with loaded.at("assemble", section):
                resolved = read_turns(turns, base, section)
            for i, t in enumerate(resolved):
                key = "file" if turns[i].file is not None else "content"
                for name in sorted(lookup_refs(t.text)):
                    need_lookup(name, ("assemble", section, i, key))
        for name in path_lookups(asm.question):
            need_lookup(name, ("assemble", "question"))
        for name in asm.join:
            need_lookup(name, ("assemble", "join", name))
        with loaded.at("assemble"):
            inference_turns(make_assembler(asm, base))

    cond = spec.condition
    if cond is not None:
        if label is None:
            raise loaded.error("`condition` needs a `label` section: conditioning strings are chosen by label class",
                               ("condition",))
        for cls in cond.strings:
            if cls not in classes:
                raise loaded.error(f"condition string for class '{cls}', which no label rule produces"
                                   f"{did_you_mean(cls, classes)} (label classes: {', '.join(classes)})",
                                   ("condition", "strings", cls))
        if cond.inference not in cond.strings:
            raise loaded.error(f"`inference: {cond.inference}` has no string in `strings`"
                               f"{did_you_mean(cond.inference, list(cond.strings))} "
                               f"(classes: {', '.join(cond.strings)})", ("condition", "inference"))
        missing = [c for c in classes if c not in cond.strings]
        if missing and cond.unlabelled == "error":
            raise loaded.error(f"label class{'es' if len(missing) > 1 else ''} {', '.join(missing)} "
                               f"{'have' if len(missing) > 1 else 'has'} no conditioning string (add "
                               f"{'them' if len(missing) > 1 else 'it'}, or set `unlabelled: keep`)",
                               ("condition", "strings"))
        turn_ids = asm.turn_ids() if asm is not None else {}
        if cond.turn not in BUILTIN_TURNS:
            if cond.turn not in turn_ids:
                allowed = [*BUILTIN_TURNS, *turn_ids]
                raise loaded.error(f"condition turn '{cond.turn}' is neither {', '.join(BUILTIN_TURNS)} nor the id "
                                   f"of an assembled turn{did_you_mean(cond.turn, allowed)}", ("condition", "turn"))
            if turn_ids[cond.turn][0] == "append":
                raise loaded.error(f"condition turn '{cond.turn}' is appended after the trajectory; the "
                                   "conditioning string must be in the prompt (a prepended turn)", ("condition", "turn"))

    caps = spec.capabilities
    if caps is not None:
        produced = caps.produced()
        for key in ("rates", "proportions"):
            for cap in getattr(caps, key) or {}:
                if cap not in produced:
                    raise loaded.error(f"ratio for capability '{cap}', which no rule produces"
                                       f"{did_you_mean(cap, produced)} (rules produce: {', '.join(produced)})",
                                       ("capabilities", key, cap))
        if caps.measure == "tokens" and spec.tokenize is None:
            raise loaded.error("`measure: tokens` counts supervised tokens, which needs a `tokenize` section "
                               "(or use measure: chars)", ("capabilities", "measure"))

    for where, loc in _wheres(spec):
        for name in ([where.source] if isinstance(where.source, str) else where.source or []):
            if name not in emitted:
                raise loaded.error(f"`where` names source '{name}', which is not an emitted source"
                                   f"{did_you_mean(name, emitted)}", (*loc, "source"))
        if label is not None:
            for cls in ([where.label] if isinstance(where.label, str) else where.label or []):
                if cls not in classes:
                    raise loaded.error(f"`where` names label class '{cls}', which the label never gives"
                                       f"{did_you_mean(cls, classes)} (classes: {', '.join(classes)})",
                                       (*loc, "label"))
        if where.rule is not None:
            rules = [r.rule for r in spec.negatives or []]
            for r in [where.rule] if isinstance(where.rule, str) else where.rule:
                if r != "none" and r not in rules:
                    raise loaded.error(f"`where` names rule '{r}', which no `negatives` entry uses"
                                       f"{did_you_mean(r, rules)}", (*loc, "rule"))

    mix = spec.mix
    if mix:
        problems = mix_problems(mix, emitted)
        if problems:
            msg, loc = problems[0]
            raise loaded.error(msg, ("mix", *loc))

    decon = spec.decontaminate
    if decon is not None:
        for i, ev in enumerate(decon.against):
            if ev.source not in spec.sources:
                raise loaded.error(f"evaluation source '{ev.source}' is not a source{did_you_mean(ev.source, sources)}",
                                   ("decontaminate", "against", i, "source"))
            if spec.sources[ev.source].lookup is None:
                raise loaded.error(f"evaluation source '{ev.source}' would be trained on: give it "
                                   f"`lookup: <key field>` so it is read for decontamination, not emitted",
                                   ("decontaminate", "against", i, "source"))
        for name in path_lookups(decon.question):
            need_lookup(name, ("decontaminate", "question"))

    # Files the steps read (tools, tool pools): point at the key that names them.
    for i, step in enumerate(spec.convert or []):
        with loaded.at("convert", i, *_file_key(step.options)):
            prepare_steps([step], base)
    for i, rule in enumerate(spec.negatives or []):
        with loaded.at("negatives", i, *_file_key(rule.options)):
            prepare_rules([rule], base)


def _file_key(options: Any) -> tuple[str, ...]:
    for key in ("tools", "pool"):
        if getattr(options, key, None) is not None:
            return (key,)
    return ()


__all__ = ["RowOutcome", "Transforms", "build_transforms", "check_semantics", "inference", "process_row",
           "weight_function"]
