"""The compiler driver: spec → sources → records → selection → render → artifact.

Per-row stages are pure functions of (row, spec, seed) and run in worker processes
(`workers`); the selection stage runs once over compact keys. Output order is a seeded hash
of each row's id, so the bytes never depend on the worker count or the order of input files.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsc import __version__
from dsc.compiler import artifact as art
from dsc.compiler.errors import BuildError
from dsc.compiler.record import BadRow, Conversation, canonical_json
from dsc.compiler.render import Rendered, apply_special_token_policy, render
from dsc.compiler.sources import RawRow, input_fingerprints, iter_raw_rows, normalise_row
from dsc.compiler.spec import LoadedSpec, Spec, load_spec
from dsc.compiler.templating import ChatTemplate, load_template
from dsc.compiler.transforms.pipeline import Transforms, build_transforms, process_row, weight_function
from dsc.compiler.transforms.pipeline import inference as inference_block

CHUNK_ROWS = 512
SPLITS = ("train", "validation", "test")


# ---------------------------------------------------------------------------------------------
# Progress reporting (the CLI plugs a rich progress bar in; the library stays silent)
# ---------------------------------------------------------------------------------------------


class Progress:
    def start(self, stage: str, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def done(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Values passed between stages
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Quarantined:
    source: str
    file: str
    row: int
    stage: str  # read | normalise | render | tokenize
    reason: str
    raw: Any = None  # the raw row (or the broken line) so nothing is lost
    counts_as_bad: bool = True  # length drops are recorded but do not count against max_bad_rows

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "file": self.file, "row": self.row, "stage": self.stage,
                "reason": self.reason, "raw": self.raw}


@dataclass
class BuildContext:
    """Everything a worker needs; inherited by forked workers, never mutated."""

    spec: Spec
    base_dir: Path
    template: ChatTemplate
    tokenizer: Any = None  # dsc.compiler.tokenize.RowTokenizer when the spec tokenises
    transforms: Transforms | None = None  # label/assemble/convert/... (None: the spec uses none)


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict[str, Any]
    quarantined: int
    written: dict[str, int]
    warnings: list[str] = field(default_factory=list)


_CTX: BuildContext | None = None


def _init_worker(ctx: BuildContext) -> None:
    global _CTX
    _CTX = ctx


# ---------------------------------------------------------------------------------------------
# Per-row stages (pure; run in workers)
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Dropped:
    """A readable row a quality filter or decontamination removed (counted, not quarantined)."""

    source: str
    reason: str  # "filter: <name>: why" | "decontaminated: exact|ngram"


@dataclass(slots=True)
class Weight:
    """A row's supervised-token count, for capability ratios measured in tokens."""

    id: str
    value: float


def _normalise_chunk(chunk: list[RawRow]) -> list[Conversation | Quarantined | Dropped | Weight]:
    ctx = _CTX
    assert ctx is not None
    out: list[Conversation | Quarantined | Dropped | Weight] = []
    for raw in chunk:
        stage = "read" if raw.error else "normalise"
        try:
            conv = normalise_row(raw, raw.source, ctx.spec.sources[raw.source])
            if ctx.transforms is None:
                out.append(conv)
                continue
            stage = "transform"
            outcome = process_row(conv, ctx.transforms)
        except BadRow as e:
            out.append(Quarantined(raw.source, raw.file, raw.row, stage, e.reason, raw.data if raw.data is not None
                                   else raw.error))
            continue
        if outcome.dropped is not None:
            out.append(Dropped(raw.source, outcome.dropped))
        out.extend(outcome.rows)
        out.extend(Weight(k, v) for k, v in sorted(outcome.weights.items()))
    return out


@dataclass(slots=True)
class FinishedRow:
    row: dict[str, Any]
    supervised_chars: int
    supervised_tokens: int
    special_tokens: list[str]
    truncated: bool = False


def _finish_chunk(chunk: list[Conversation]) -> list[FinishedRow | Quarantined]:
    """Special-token policy, rendering with loss spans, then (optionally) tokenisation."""
    ctx = _CTX
    assert ctx is not None
    results: list[FinishedRow | Quarantined | None] = [None] * len(chunk)
    rendered: list[tuple[int, Conversation, Rendered, list[str]]] = []
    for i, conv in enumerate(chunk):
        prov = conv.meta.provenance
        try:
            conv, found = apply_special_token_policy(conv, ctx.template, ctx.spec.special_tokens)
            r = render(conv, ctx.template, ctx.spec.loss)
        except BadRow as e:
            results[i] = Quarantined(conv.meta.source, prov.file, prov.row, "render", e.reason, conv.to_dict())
            continue
        rendered.append((i, conv, r, found))
    encoded: list[Any] = [None] * len(rendered)
    if ctx.tokenizer is not None and rendered:
        from dsc.compiler.tokenize import RowTooLong

        try:
            encoded = ctx.tokenizer.encode_batch([r for _, _, r, _ in rendered])
        except RowTooLong as e:
            prov = rendered[e.index][1].meta.provenance
            raise BuildError(f"{prov.file}:{prov.row + 1}: {e.n_tokens} tokens is more than tokenize.max_length="
                             f"{ctx.spec.tokenize.max_length} (tokenize.overflow: error; use drop or truncate "
                             f"to build anyway)") from None
    for (i, conv, r, found), enc in zip(rendered, encoded):
        prov = conv.meta.provenance
        row = conv.to_dict()
        row["text"] = r.text
        row["loss_spans"] = [[a, b] for a, b in r.spans]
        sup_tokens = 0
        truncated = False
        if ctx.tokenizer is not None:
            if enc is None:
                results[i] = Quarantined(conv.meta.source, prov.file, prov.row, "tokenize",
                                         f"longer than tokenize.max_length={ctx.spec.tokenize.max_length} tokens "
                                         f"(overflow: drop)", {"id": conv.id}, counts_as_bad=False)
                continue
            row["input_ids"] = enc.input_ids
            row["labels"] = enc.labels
            sup_tokens = sum(1 for t in enc.labels if t != -100)
            truncated = bool(getattr(enc, "truncated", False))
            if sup_tokens == 0:
                results[i] = Quarantined(conv.meta.source, prov.file, prov.row, "tokenize",
                                         "nothing supervised after truncation", {"id": conv.id})
                continue
        results[i] = FinishedRow(row, sum(b - a for a, b in r.spans), sup_tokens, found, truncated)
    return [r for r in results if r is not None]


# ---------------------------------------------------------------------------------------------
# Selection (main process, over compact keys)
# ---------------------------------------------------------------------------------------------


def _unit_hash(*parts: Any) -> float:
    """A seeded, order-independent uniform number in [0, 1) for a key."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(spec: Spec, conv: Conversation) -> str:
    key = conv.group if spec.split.by == "group" else conv.id
    u = _unit_hash(spec.seed, "split", key)
    if u < spec.split.validation:
        return "validation"
    if u < spec.split.validation + spec.split.test:
        return "test"
    return "train"


def order_key(spec: Spec, conv_id: str) -> str:
    return hashlib.sha256(f"{spec.seed}\x1forder\x1f{conv_id}".encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _Executor:
    """Runs a per-row stage over chunks, inline or in a forked pool, preserving chunk order."""

    def __init__(self, ctx: BuildContext, workers: int):
        self.ctx = ctx
        self.workers = max(1, workers)
        self.pool = None

    def __enter__(self) -> "_Executor":
        _init_worker(self.ctx)
        if self.workers > 1:
            mp = multiprocessing.get_context("fork")
            self.pool = mp.Pool(self.workers, initializer=_init_worker, initargs=(self.ctx,))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def map(self, fn: Callable[[list[Any]], list[Any]], chunks: Iterable[list[Any]]) -> Iterator[list[Any]]:
        if self.pool is None:
            return map(fn, chunks)
        return self.pool.imap(fn, chunks)


def _bad_row_limit(spec: Spec, rows_read: int) -> int:
    limit = spec.max_bad_rows
    if isinstance(limit, float):
        return int(limit * rows_read)
    return int(limit)


def _check_bad_rows(spec: Spec, bad: int, rows_read: int, where: str, sample: list[Quarantined]) -> None:
    limit = _bad_row_limit(spec, rows_read)
    if bad > limit:
        examples = "; ".join(f"{q.file}:{q.row + 1}: {q.reason}" for q in sample[:3])
        raise BuildError(
            f"{bad} of {rows_read} rows were quarantined {where}, more than max_bad_rows allows ({limit}); "
            f"e.g. {examples}. Fix the data, or raise max_bad_rows in the spec.")


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"dsc": __version__}
    # matplotlib draws the dataset card's charts (part of the artifact's bytes).
    for name in ("pyarrow", "jinja2", "tokenizers", "pydantic", "ruamel.yaml", "matplotlib"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def default_out_dir(loaded: LoadedSpec) -> Path:
    return loaded.base_dir / "build" / loaded.spec.name


def build(spec_path: str | Path, out_dir: str | Path | None = None, *, workers: int = 1,
          progress: Progress | None = None,
          before_place: Callable[[dict[str, Any]], None] | None = None) -> BuildResult:
    """Compile a spec into an artifact directory. Raises SpecError (exit 2) or BuildError (exit 1).

    `before_place(manifest)` runs when the new artifact is complete but not yet in place; if it
    raises, the previous artifact stays (`dsc build --locked` checks the version there)."""
    loaded = load_spec(spec_path)
    return build_loaded(loaded, out_dir, workers=workers, progress=progress, before_place=before_place)


def resolve_inputs(loaded: LoadedSpec) -> list[dict[str, Any]]:
    """`{source, path, size, sha256}` of every input the spec reads, in a stable order (the
    manifest's `inputs`; `dsc.lock` pins them)."""
    spec, base = loaded.spec, loaded.base_dir
    inputs: list[dict[str, Any]] = []
    for name in sorted(spec.sources):
        with loaded.at("sources", name):
            for fp in input_fingerprints(name, spec.sources[name], base):
                inputs.append({"source": name, **fp})
    return inputs


def build_loaded(loaded: LoadedSpec, out_dir: str | Path | None = None, *, workers: int = 1,
                 progress: Progress | None = None,
                 before_place: Callable[[dict[str, Any]], None] | None = None) -> BuildResult:
    spec, base = loaded.spec, loaded.base_dir
    progress = progress or Progress()
    out = Path(out_dir) if out_dir is not None else default_out_dir(loaded)
    with loaded.at("template"):
        template = load_template(spec.template, base)
    tokenizer = None
    if spec.tokenize is not None:
        from dsc.compiler.tokenize import RowTokenizer

        with loaded.at("tokenize", "tokenizer"):
            tokenizer = RowTokenizer.load(spec.tokenize, base)
    with loaded.at():  # prompt/tool files are checked by load_spec; this names any left (exit 2)
        transforms = build_transforms(spec, base, template=template, tokenizer=tokenizer)
    ctx = BuildContext(spec=spec, base_dir=base, template=template, tokenizer=tokenizer,
                       transforms=transforms if transforms.active() else None)

    inputs = resolve_inputs(loaded)

    quarantine: list[Quarantined] = []
    read_counts: Counter[str] = Counter()
    conversations: dict[str, Conversation] = {}
    duplicates: Counter[str] = Counter()
    dropped: Counter[str] = Counter()  # filter / decontamination reasons
    weights: dict[str, float] = {}

    def raw_rows() -> Iterator[RawRow]:
        for name in sorted(spec.emitted_sources()):
            with loaded.at("sources", name):
                for raw in iter_raw_rows(name, spec.sources[name], base):
                    read_counts[name] += 1
                    yield raw

    with _Executor(ctx, workers) as ex:
        # Stage 1: read + normalise (parallel over chunks, order preserved).
        progress.start("read + normalise")
        for results in ex.map(_normalise_chunk, _chunks(raw_rows(), CHUNK_ROWS)):
            for item in results:
                if isinstance(item, Quarantined):
                    quarantine.append(item)
                elif isinstance(item, Dropped):
                    dropped[": ".join(item.reason.split(": ")[:2])] += 1
                elif isinstance(item, Weight):
                    weights[item.id] = item.value
                elif item.id in conversations:
                    # Identical content within a source: keep the first, record the others.
                    first = conversations[item.id].meta.provenance
                    prov = item.meta.provenance
                    duplicates[item.meta.source] += 1
                    quarantine.append(Quarantined(item.meta.source, prov.file, prov.row, "dedup",
                                                  f"exact duplicate of {first.file} row {first.row}",
                                                  {"id": item.id}, counts_as_bad=False))
                else:
                    conversations[item.id] = item
            progress.advance(len(results))
        progress.done()
        rows_read = sum(read_counts.values())
        bad = [q for q in quarantine if q.counts_as_bad]
        _check_bad_rows(spec, len(bad), rows_read, "while reading", bad)

        # Stage 2: selection — dedup, mix, capability ratios; then split by group hash, order by
        # seeded id hash.
        from dsc.compiler.mix import select

        selection = select(list(conversations.values()), seed=spec.seed, dedup_rows=spec.dedup, mix=spec.mix,
                           capabilities=spec.capabilities, weight=weight_function(spec, weights))
        by_split: dict[str, list[Conversation]] = defaultdict(list)
        for conv in selection.rows:
            by_split[assign_split(spec, conv)].append(conv)
        for rows in by_split.values():
            rows.sort(key=lambda c: order_key(spec, c.id))
        conversations.clear()

        # Stage 3: render + tokenise (parallel), then write.
        finished: dict[str, list[dict[str, Any]]] = {}
        supervised_chars: Counter[str] = Counter()
        supervised_tokens: Counter[str] = Counter()
        per_source: dict[str, Counter[str]] = defaultdict(Counter)
        per_label: dict[str, Counter[str]] = defaultdict(Counter)
        per_capability: dict[str, Counter[str]] = defaultdict(Counter)
        special_found: Counter[str] = Counter()
        truncated = 0
        for split in SPLITS:
            rows = by_split.get(split, [])
            if not rows:
                continue
            progress.start(f"render {split}", len(rows))
            out_rows: list[dict[str, Any]] = []
            for results in ex.map(_finish_chunk, _chunks(rows, CHUNK_ROWS)):
                for item in results:
                    if isinstance(item, Quarantined):
                        quarantine.append(item)
                        continue
                    out_rows.append(item.row)
                    supervised_chars[split] += item.supervised_chars
                    supervised_tokens[split] += item.supervised_tokens
                    per_source[item.row["meta"]["source"]][split] += 1
                    per_label[str(item.row["meta"]["label"])][split] += 1
                    per_capability[str(item.row["meta"]["capability"])][split] += 1
                    special_found.update(item.special_tokens)
                    truncated += item.truncated
                progress.advance(len(results))
            progress.done()
            finished[split] = out_rows
        bad = [q for q in quarantine if q.counts_as_bad]
        _check_bad_rows(spec, len(bad), rows_read, "in total", bad)

    if not finished.get("train"):
        raise BuildError("the build produced no train rows (see quarantine reasons with --out and the summary)")

    quarantine.sort(key=lambda q: (q.source, q.file, q.row, q.stage, q.reason))
    reasons: Counter[str] = Counter(f"{q.stage}: {q.reason.split(':')[0]}" for q in quarantine)
    dropped_long = sum(1 for q in quarantine if q.stage == "tokenize" and not q.counts_as_bad)
    bad_rows = sum(1 for q in quarantine if q.counts_as_bad)
    warnings = []
    if special_found:
        warnings.append("special-token strings found inside message content: "
                        + ", ".join(f"{t!r} ×{n}" for t, n in sorted(special_found.items()))
                        + f" (special_tokens: {spec.special_tokens.value})")

    with art.staged_directory(out) as tmp:
        files: dict[str, str] = {}
        for split, rows in finished.items():
            names = art.write_split(tmp, split, rows, len(rows), tokenized=tokenizer is not None,
                                    shard_rows=spec.output.shard_rows, row_group_rows=spec.output.row_group_rows)
            for n in names:
                files[n] = art.sha256_file(tmp / n)
        art.write_jsonl(tmp / art.QUARANTINE, (q.to_dict() for q in quarantine))
        (tmp / art.TEMPLATE_FILE).write_text(template.source, encoding="utf-8")
        manifest: dict[str, Any] = {
            "format": art.ARTIFACT_FORMAT,
            "name": spec.name,
            "dsc_version": __version__,
            "spec": spec.model_dump(mode="json"),
            "spec_sha256": hashlib.sha256(loaded.text.encode("utf-8")).hexdigest(),
            "inputs": inputs,
            "template": {"ref": spec.template, "sha256": template.sha256, "end_of_turn": template.end_of_turn},
            "tokenizer": ({"ref": spec.tokenize.tokenizer, "sha256": tokenizer.sha256,
                           "max_length": spec.tokenize.max_length, "overflow": spec.tokenize.overflow}
                          if tokenizer is not None else None),
            "libraries": library_versions(),
            "inference": inference_block(spec, transforms),
            "selection": selection.report,
            "counts": {
                "read": dict(sorted(read_counts.items())),
                "quarantined": len(quarantine),
                "bad_rows": bad_rows,
                "quarantine_reasons": dict(sorted(reasons.items())),
                "duplicates_removed": dict(sorted(duplicates.items())),
                "written": {s: len(r) for s, r in finished.items()},
                "per_source": {s: dict(sorted(c.items())) for s, c in sorted(per_source.items())},
                "per_label": {s: dict(sorted(c.items())) for s, c in sorted(per_label.items())},
                "per_capability": {s: dict(sorted(c.items())) for s, c in sorted(per_capability.items())
                                   if s != "None"},
                "dropped": dict(sorted(dropped.items())),
                "supervised_chars": dict(supervised_chars),
                "supervised_tokens": dict(supervised_tokens) if tokenizer is not None else None,
                "dropped_too_long": dropped_long,
                "truncated": truncated,
                "special_tokens_in_content": dict(sorted(special_found.items())),
            },
            "files": dict(sorted(files.items())),
        }
        manifest["version"] = art.content_version(manifest)
        art.write_json(tmp / art.MANIFEST, manifest)
        from dsc.compiler.card import write_card

        write_card(tmp, manifest)
        if before_place is not None:
            before_place(manifest)
    return BuildResult(out_dir=out, manifest=manifest, quarantined=len(quarantine),
                       written={s: len(r) for s, r in finished.items()}, warnings=warnings)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


__all__ = ["build", "build_loaded", "BuildResult", "Progress", "assign_split", "order_key", "canonical_json"]
