"""The per-row transform stage (run in build workers) and the checks that tie the sections of a
spec together.

The stage is a list of steps (datatrove's pipeline shape), built from the spec with only the
steps its sections ask for, in this order:

    label → filters → convert → decontaminate → assemble → condition → negatives → capabilities
    (→ measure, with `capabilities: {measure: tokens}`)

Each step is a small object holding its prepared config; `run` changes the row's work in place
or returns the reason the row is dropped (filters, decontamination), which the pipeline counts
under the step's name. Negatives add rows made from the (assembled, conditioned) row;
capabilities tag every row's assistant turns and, with `decompose`, split rows.

Conditioning runs right after assembly, because that is where the assembled turns' positions are
known; mixing never looks at message text, so selecting after conditioning is the same as
conditioning after selecting.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from dsc.chat.render import render
from dsc.chat.weights import parts_dialect
from dsc.compiler.stages.read.sources import iter_raw_rows, load_lookup
from dsc.compiler.stages.transforms.assemble import (
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
from dsc.compiler.stages.transforms.capabilities import decompose, tag_turns
from dsc.compiler.stages.transforms.common import lookup_refs
from dsc.compiler.stages.transforms.condition import BUILTIN_TURNS, apply_condition, inference_block
from dsc.compiler.stages.transforms.convert import apply_steps, dialect_inference, prepare_steps, spec_dialect
from dsc.compiler.stages.transforms.decontam import Decontaminator
from dsc.compiler.stages.transforms.filters import apply_filters
from dsc.compiler.stages.transforms.label import apply_labels
from dsc.compiler.stages.transforms.negatives import apply_rules, prepare_rules
from dsc.core.errors import did_you_mean
from dsc.record import MISSING, Conversation, get_path
from dsc.spec.model import LoadedSpec, Spec
from dsc.spec.sections import (
    CapabilitiesSpec,
    ConditionSpec,
    LabelRules,
    label_classes,
    loss_weight_rules,
    row_condition,
)
from dsc.spec.steps import ConvertStep, FilterEntry, NegativeRule


@dataclass
class RowWork:
    """One normalised row on its way through the steps: the rows it has become so far (one until
    negatives or decomposition add more), where assembly put its turns (conditioning places its
    strings by them) and, with `measure: tokens`, each row's supervised tokens by id."""

    rows: list[Conversation]
    positions: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)


class RowStep(ABC):
    """One per-row step: its config, prepared once in the process that builds the context."""

    name: ClassVar[str]

    @abstractmethod
    def run(self, work: RowWork) -> str | None:
        """Change `work` in place; or return why the row is dropped (BadRow: it is quarantined)."""


@dataclass
class Label(RowStep):
    name: ClassVar[str] = "label"
    rules: LabelRules

    def run(self, work: RowWork) -> None:
        apply_labels(work.rows[0], self.rules)


@dataclass
class Filter(RowStep):
    name: ClassVar[str] = "filters"
    filters: list[FilterEntry]

    def run(self, work: RowWork) -> str | None:
        why = apply_filters(work.rows[0], self.filters)
        return None if why is None else f"filter: {why}"


@dataclass
class Convert(RowStep):
    name: ClassVar[str] = "convert"
    steps: list[ConvertStep]
    prepared: list[Any]

    def run(self, work: RowWork) -> None:
        work.rows[0] = apply_steps(work.rows[0], self.steps, self.prepared)


@dataclass
class Decontaminate(RowStep):
    name: ClassVar[str] = "decontaminate"
    decontaminator: Decontaminator
    joiner: Joiner
    question_path: str | None

    def run(self, work: RowWork) -> str | None:
        q = question_of(work.rows[0], self.joiner, self.question_path)
        hit = self.decontaminator.check(q) if q else None
        return None if hit is None else f"decontaminated: {hit}"


@dataclass
class Assemble(RowStep):
    name: ClassVar[str] = "assemble"
    assembler: Assembler

    def run(self, work: RowWork) -> None:
        work.positions = apply_assemble(work.rows[0], self.assembler)


@dataclass
class Condition(RowStep):
    name: ClassVar[str] = "condition"
    condition: ConditionSpec

    def run(self, work: RowWork) -> None:
        apply_condition(work.rows[0], self.condition, work.positions)


@dataclass
class Negatives(RowStep):
    name: ClassVar[str] = "negatives"
    rules: list[NegativeRule]
    prepared: list[Any]
    seed: int

    def run(self, work: RowWork) -> None:
        work.rows += apply_rules(work.rows[0], self.rules, self.prepared, self.seed)


@dataclass
class Capabilities(RowStep):
    name: ClassVar[str] = "capabilities"
    capabilities: CapabilitiesSpec

    def run(self, work: RowWork) -> None:
        tagged: list[Conversation] = []
        for r in work.rows:
            tag_turns(r, self.capabilities)
            tagged.extend(decompose(r, self.capabilities) if self.capabilities.decompose else [r])
        work.rows = tagged


@dataclass
class MeasureTokens(RowStep):
    """Each row's supervised tokens, for capability ratios counted in tokens."""

    name: ClassVar[str] = "measure"
    template: Any
    tokenizer: Any
    loss: Any
    dialect: Any = None  # whose turns `part` weight rules read (weights.parts_dialect)

    def run(self, work: RowWork) -> None:
        for r in work.rows:
            enc = self.tokenizer.encode(render(r, self.template, self.loss, self.dialect))
            work.weights[r.id] = float(enc.n_supervised) if enc is not None else 0.0


@dataclass
class RowOutcome:
    rows: list[Conversation] = field(default_factory=list)
    dropped: str | None = None  # the reason: "filter: <name>: why" | "decontaminated: exact|ngram"
    weights: dict[str, float] = field(default_factory=dict)  # id → supervised tokens (measure: tokens)


@dataclass
class RowPipeline:
    """The spec's per-row steps, in order; `assembler` and `convert_prepared` also make the
    manifest's inference block (whether or not any row runs through them)."""

    steps: list[RowStep]
    assembler: Assembler | None = None
    convert_prepared: list[Any] = field(default_factory=list)

    def run(self, conv: Conversation, dropped: Counter[str] | None = None) -> RowOutcome:
        """One normalised row → the rows it becomes; a drop is counted in `dropped` by the reason's
        first two parts (`filter: finished`, `decontaminated: exact`: each step's reasons start
        with its own word)."""
        work = RowWork([conv])
        for step in self.steps:
            why = step.run(work)
            if why is not None:
                if dropped is not None:
                    dropped[": ".join(why.split(": ")[:2])] += 1
                return RowOutcome(dropped=why)
        return RowOutcome(rows=work.rows, weights=work.weights)


def _lookup_keys(spec: Spec) -> dict[str, str]:
    return {n: s.lookup for n, s in spec.sources.items() if s.lookup is not None}


def weights_dialect(spec: Spec) -> Any:
    """The dialect whose turns the spec's `part` weight rules read (None: ReAct's labels);
    ValueError for a part that dialect does not have."""
    return parts_dialect(spec_dialect(spec.convert or []), loss_weight_rules(spec.loss))


def build_pipeline(spec: Spec, base_dir: Path, *, template: Any = None, tokenizer: Any = None) -> RowPipeline:
    """The spec's steps, their files read once: prompt files, tool files, lookup tables and
    evaluation questions."""
    asm_spec, decon = spec.assemble, spec.decontaminate
    assembler = make_assembler(asm_spec, base_dir) if asm_spec is not None else None
    needed = sorted(set((assembler.lookups_used() if assembler is not None else [])
                        + (path_lookups(_question_path(spec)) if decon is not None else [])))
    joiner = Joiner()
    if needed:
        joiner = Joiner({n: load_lookup(spec.sources[n], base_dir, n) for n in needed},
                        join_paths(needed, asm_spec.join if asm_spec is not None else {}, _lookup_keys(spec)))
        if assembler is not None:
            assembler.joiner = joiner
    convert_prepared = prepare_steps(spec.convert or [], base_dir)
    steps: list[RowStep] = []
    if spec.label:
        steps.append(Label(spec.label))
    if spec.filters:
        steps.append(Filter(spec.filters))
    if spec.convert:
        steps.append(Convert(spec.convert, convert_prepared))
    if decon is not None:
        steps.append(Decontaminate(_decontaminator(spec, base_dir), joiner, _question_path(spec)))
    if assembler is not None:
        steps.append(Assemble(assembler))
    condition = row_condition(spec.condition, spec.preference)
    if condition:
        steps.append(Condition(condition))
    if spec.negatives:
        steps.append(Negatives(spec.negatives, prepare_rules(spec.negatives, base_dir), spec.seed))
    caps = spec.capabilities
    if caps:
        steps.append(Capabilities(caps))
        if caps.measure == "tokens" and tokenizer is not None:
            steps.append(MeasureTokens(template, tokenizer, spec.loss, weights_dialect(spec)))
    return RowPipeline(steps, assembler, convert_prepared)


def _decontaminator(spec: Spec, base_dir: Path) -> Decontaminator:
    decon = spec.decontaminate
    assert decon is not None
    d = Decontaminator(decon.ngram, decon.threshold)
    for ev in decon.against:
        for raw in iter_raw_rows(ev.source, spec.sources[ev.source], base_dir):
            q = get_path(raw.data or {}, ev.field)
            if q is not MISSING and isinstance(q, str) and q.strip():
                d.add(q)
    return d


def _question_path(spec: Spec) -> str | None:
    decon = spec.decontaminate
    if decon is not None and decon.question:
        return decon.question
    asm = spec.assemble
    return asm.question if asm is not None else None


def inference(spec: Spec, pipeline: RowPipeline | None) -> dict[str, Any]:
    """The manifest's `inference` block (see `condition.inference_block`)."""
    asm = pipeline.assembler if pipeline is not None else None
    positions: dict[str, int] = {}
    if asm is not None:
        prompt = inference_turns(asm)
        positions = {t.id: i for i, t in enumerate(asm.prepend) if t.id}
        if not any(QUESTION_PLACEHOLDER in m["content"] for m in prompt):
            prompt.append({"role": "user", "content": QUESTION_PLACEHOLDER})
    else:
        prompt = [{"role": "user", "content": QUESTION_PLACEHOLDER}]
    block = inference_block(row_condition(spec.condition, spec.preference), prompt, positions)
    dialect = dialect_inference(spec.convert or [], pipeline.convert_prepared if pipeline is not None else [])
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
    if spec.preference is not None:
        out += [(spec.preference.chosen, ("preference", "chosen")),
                (spec.preference.rejected, ("preference", "rejected"))]
    return [(w, loc) for w, loc in out if w is not None]


def check_semantics(loaded: LoadedSpec) -> None:
    """Checks across sections; raises one located SpecError (exit 2)."""
    from dsc.spec.sections import mix_problems

    spec, base = loaded.spec, loaded.base_dir
    sources = list(spec.sources)
    emitted = [n for n, s in spec.sources.items() if s.lookup is None]

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

    pref = spec.preference
    if pref is not None and label is None:
        for side in ("chosen", "rejected"):
            where = getattr(pref, side)
            for key in ("label", "success"):
                if getattr(where, key) is not None:
                    raise loaded.error(f"`preference.{side}` selects by {key}, but the spec has no `label` "
                                       "section: no row has one, so no pair is possible", ("preference", side, key))

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


__all__ = ["RowOutcome", "RowPipeline", "RowStep", "build_pipeline", "check_semantics", "inference",
           "weights_dialect"]
