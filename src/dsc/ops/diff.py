"""`dsc diff`: what changed between two artifacts, row by row and in the counts.

Rows are matched by id. A row whose id is in both artifacts is *changed* when anything that
training sees differs (its split, messages, tools, text, loss spans, tokens, group, or meta other
than provenance). Provenance is reported apart, as a count: editing one input row changes the
file's sha256 in every row's provenance, and deleting a row shifts the row numbers after it, yet
those rows train exactly as before. Ids are content hashes, so an edited input row gets a new
id: a removed and an added row that come from the same source file and row number are paired
and reported as one changed row (`id` among its changed fields).

Either side can be an artifact directory, or an artifact path at a git revision (extracted with
`git archive` into a temporary directory; git-lfs pointers are smudged with `git lfs smudge`
when git-lfs has the content, else a clear error says what to fetch).
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dsc.artifact.inspection import DIMENSIONS, ArtifactStats, artifact_stats, find_rows, row_text
from dsc.artifact.manifest import Manifest
from dsc.artifact.reader import LFS_POINTER_PREFIX, Artifact, is_lfs_pointer, open_artifact, split_sort_key
from dsc.core.canonical import canonical_json
from dsc.core.errors import ArtifactError
from dsc.core.files import files_under

# Columns compared for "changed"; `meta` without its provenance. The last ones are a preference
# artifact's (DPO pairs, KTO rows): absent, hence equal, in SFT rows.
ROW_FIELDS = ("group", "messages", "tools", "meta", "text", "loss_spans", "loss_weights", "input_ids", "labels",
              "weights", "prompt", "chosen", "rejected", "completion", "label", "chosen_id", "rejected_id",
              "source_id", "score_gap", "score")
# The fields whose change shows in a row's text (ranked first among the examples)
TEXT_FIELDS = frozenset({"text", "prompt", "chosen", "rejected", "completion", "label"})


@dataclass
class RowRef:
    id: str
    split: str
    source: str


@dataclass
class RowChange:
    id: str  # in A
    new_id: str  # in B (differs when the row's content, hence its id, changed)
    split: str
    new_split: str
    source: str
    fields: list[str]  # "split", "id" and the ROW_FIELDS that differ


@dataclass
class CountDelta:
    what: str  # rows | supervised_chars | supervised_tokens
    dimension: str  # split | source | label | capability
    key: str
    split: str
    before: int
    after: int

    @property
    def delta(self) -> int:
        return self.after - self.before


@dataclass
class ArtifactDiff:
    a: str
    b: str
    version_a: str | None
    version_b: str | None
    added: list[RowRef] = field(default_factory=list)
    removed: list[RowRef] = field(default_factory=list)
    changed: list[RowChange] = field(default_factory=list)
    provenance_only: int = 0  # rows whose only difference is provenance (file hash, row number)
    unchanged: int = 0
    counts: list[CountDelta] = field(default_factory=list)  # non-zero deltas only
    spec_changes: list[tuple[str, Any, Any]] = field(default_factory=list)  # dotted key, before, after
    notes: list[str] = field(default_factory=list)  # template / tokenizer / inputs / plugins / dsc version changes

    @property
    def identical_rows(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["counts"] = [{**asdict(c), "delta": c.delta} for c in self.counts]
        d["spec_changes"] = [{"key": k, "before": a, "after": b} for k, a, b in self.spec_changes]
        d["summary"] = {"added": len(self.added), "removed": len(self.removed), "changed": len(self.changed),
                        "provenance_only": self.provenance_only, "unchanged": self.unchanged}
        return d


# ---------------------------------------------------------------------------------------------
# Row fingerprints
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _RowPrint:
    split: str
    source: str
    origin: tuple[str, str, int]  # source, file, row: what an edited row keeps
    fields: dict[str, bytes]
    provenance: bytes


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(canonical_json(value).encode("utf-8"), digest_size=12).digest()


def _fingerprints(art: Artifact, progress: Any = None, stage: str = "read rows") -> dict[str, _RowPrint]:
    """Each row's field digests; `progress` (the build's interface) is told the rows read."""
    out: dict[str, _RowPrint] = {}
    if progress is not None:
        progress.start(stage, sum(art.manifest.counts.written.values()) or None)
    for split in art.splits:
        for batch in art.batches(split):
            if progress is not None:
                progress.advance(batch.num_rows)
            for row in batch.to_pylist():
                _fingerprint_row(out, split, row)
    if progress is not None:
        progress.done()
    return out


def _fingerprint_row(out: dict[str, _RowPrint], split: str, row: dict[str, Any]) -> None:
    meta = dict(row.get("meta") or {})
    prov = meta.pop("provenance", None) or {}
    fields = {k: _digest(meta if k == "meta" else row.get(k)) for k in ROW_FIELDS}
    # A preference row has no provenance of its own (its sides' ids are in it): its origin is
    # its id, so an added and a removed pair are never taken for one edited row.
    origin = ((meta.get("source") or "", prov.get("file") or "", int(prov.get("row") or 0)) if "meta" in row
              else ("", row["id"], 0))
    out[row["id"]] = _RowPrint(split, meta.get("source") or "", origin, fields, _digest(prov))


def _changed_fields(a: _RowPrint, b: _RowPrint) -> list[str]:
    out = ["split"] if a.split != b.split else []
    return out + [k for k in ROW_FIELDS if a.fields[k] != b.fields[k]]


# ---------------------------------------------------------------------------------------------
# Count deltas and manifest-level changes
# ---------------------------------------------------------------------------------------------


def _count_deltas(sa: ArtifactStats, sb: ArtifactStats) -> list[CountDelta]:
    out: list[CountDelta] = []
    splits = sorted(set(sa.splits) | set(sb.splits), key=split_sort_key)
    measures = ["rows", "supervised_chars"] + (["supervised_tokens"] if sa.tokenised or sb.tokenised else [])
    for split in splits:
        ta, tb = sa.splits.get(split), sb.splits.get(split)
        for m in measures:
            before, after = (getattr(ta, m) if ta else 0), (getattr(tb, m) if tb else 0)
            if before != after:
                out.append(CountDelta(m, "split", split, split, before, after))
    for dim in DIMENSIONS:
        if dim != "source" and not (sa.has_values(dim) or sb.has_values(dim)):
            continue  # no row carries a label / capability on either side
        for split in splits:
            pa_, pb_ = sa.by.get(dim, {}).get(split, {}), sb.by.get(dim, {}).get(split, {})
            for key in sorted(set(pa_) | set(pb_)):
                for m in measures:
                    before = getattr(pa_[key], m) if key in pa_ else 0
                    after = getattr(pb_[key], m) if key in pb_ else 0
                    if before != after:
                        out.append(CountDelta(m, dim, key, split, before, after))
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k in sorted(value):
            out.update(_flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _spec_changes(ma: Manifest, mb: Manifest) -> list[tuple[str, Any, Any]]:
    fa, fb = _flatten(ma.spec), _flatten(mb.spec)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def _moved(la: list[Any], lb: list[Any], label: Callable[[Any], str], *, gone: str, new: str) -> list[str]:
    """What went, came or changed sha256 between two manifests' lists (inputs, plugins)."""
    da = {label(x): x.sha256 for x in la}
    db = {label(x): x.sha256 for x in lb}
    out = []
    for what in sorted(set(da) | set(db)):
        if what not in db:
            out.append(f"{what} {gone}")
        elif what not in da:
            out.append(f"{what} {new}")
        elif da[what] != db[what]:
            out.append(f"{what} changed ({str(da[what])[:12]} → {str(db[what])[:12]})")
    return out


def _notes(ma: Manifest, mb: Manifest) -> list[str]:
    out: list[str] = []
    ta, tb = ma.template, mb.template
    if ta.sha256 != tb.sha256:
        out.append(f"template {ta.ref} ({ta.sha256[:12]}) → {tb.ref} ({tb.sha256[:12]})")
    ka, kb = ma.tokenizer, mb.tokenizer
    if (ka and ka.sha256) != (kb and kb.sha256):
        out.append(f"tokenizer {ka.ref if ka else 'none'} → {kb.ref if kb else 'none'}")
    out += _moved(ma.inputs, mb.inputs, lambda i: f"input {i.path} (source '{i.source}')",
                  gone="no longer read", new="newly read")
    out += _moved(ma.plugins or [], mb.plugins or [], lambda p: f"plugin {p.module} ({p.path})",
                  gone="no longer used", new="newly used")
    if ma.dsc_version != mb.dsc_version:
        out.append(f"dsc {ma.dsc_version} → {mb.dsc_version}")
    return out


# ---------------------------------------------------------------------------------------------
# Diffing two artifacts
# ---------------------------------------------------------------------------------------------


def diff_artifacts(a: str | Path | Artifact, b: str | Path | Artifact, *, label_a: str | None = None,
                   label_b: str | None = None, progress: Any = None) -> ArtifactDiff:
    art_a = a if isinstance(a, Artifact) else open_artifact(a)
    art_b = b if isinstance(b, Artifact) else open_artifact(b)
    out = ArtifactDiff(label_a or str(art_a.path), label_b or str(art_b.path),
                       art_a.version, art_b.version)
    fa, fb = _fingerprints(art_a, progress, "read A"), _fingerprints(art_b, progress, "read B")
    only_a = [i for i in fa if i not in fb]
    only_b = [i for i in fb if i not in fa]
    for i in fa:
        if i not in fb:
            continue
        fields = _changed_fields(fa[i], fb[i])
        if fields:
            out.changed.append(RowChange(i, i, fa[i].split, fb[i].split, fa[i].source, fields))
        elif fa[i].provenance != fb[i].provenance:
            out.provenance_only += 1
        else:
            out.unchanged += 1
    # An edited input row: same origin, new id. Pair only when the origin is unique on both sides.
    origins_b: dict[tuple[str, str, int], list[str]] = {}
    for i in only_b:
        origins_b.setdefault(fb[i].origin, []).append(i)
    origins_a: dict[tuple[str, str, int], int] = {}
    for i in only_a:
        origins_a[fa[i].origin] = origins_a.get(fa[i].origin, 0) + 1
    paired_b: set[str] = set()
    for i in only_a:
        cands = origins_b.get(fa[i].origin, [])
        if len(cands) == 1 and origins_a[fa[i].origin] == 1:
            j = cands[0]
            paired_b.add(j)
            out.changed.append(RowChange(i, j, fa[i].split, fb[j].split, fa[i].source,
                                         ["id", *_changed_fields(fa[i], fb[j])]))
        else:
            out.removed.append(RowRef(i, fa[i].split, fa[i].source))
    out.added = [RowRef(j, fb[j].split, fb[j].source) for j in only_b if j not in paired_b]
    for lst in (out.added, out.removed):
        lst.sort(key=lambda r: (split_sort_key(r.split), r.id))
    out.changed.sort(key=lambda c: (split_sort_key(c.split), c.id))
    out.counts = _count_deltas(artifact_stats(art_a), artifact_stats(art_b))
    out.spec_changes = _spec_changes(art_a.manifest, art_b.manifest)
    out.notes = _notes(art_a.manifest, art_b.manifest)
    return out


# ---------------------------------------------------------------------------------------------
# Git revisions
# ---------------------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path, *, input: bytes | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=False)
    except FileNotFoundError:
        raise ArtifactError("git is not installed; `dsc diff --rev` needs it") from None


def _repo_of(path: Path) -> tuple[Path, str]:
    """The repository's top level and `path` relative to it (the path need not exist now)."""
    absolute = path.resolve() if path.exists() else (Path.cwd() / path).resolve()
    probe = absolute
    while not probe.is_dir():
        probe = probe.parent
    r = _git(["rev-parse", "--show-toplevel"], probe)
    if r.returncode != 0:
        raise ArtifactError(f"{path} is not inside a git repository (needed for --rev)")
    top = Path(r.stdout.decode().strip()).resolve()
    try:
        rel = absolute.relative_to(top).as_posix()
    except ValueError:
        raise ArtifactError(f"{path} is outside the repository at {top}") from None
    return top, rel


def _smudge_lfs(root: Path, top: Path, rev: str, rel: str) -> None:
    """Replace git-lfs pointers under `root` with their content from the local LFS store."""
    for f in files_under(root):
        if not is_lfs_pointer(f):
            continue
        r = _git(["lfs", "smudge", "--", f"{rel}/{f.relative_to(root).as_posix()}"], top, input=f.read_bytes())
        if r.returncode != 0 or r.stdout.startswith(LFS_POINTER_PREFIX):
            why = r.stderr.decode(errors="replace").strip().splitlines()
            detail = "git-lfs is not installed" if "not a git command" in " ".join(why) else \
                (why[-1] if why else "no content")
            raise ArtifactError(f"{rel}/{f.relative_to(root).as_posix()} at {rev} is a git-lfs pointer and git-lfs could "
                                f"not supply its content ({detail}); install git-lfs and run "
                                f"`git lfs fetch origin {rev}`")
        f.write_bytes(r.stdout)


def extract_at_revision(path: str | Path, rev: str, dest: Path) -> Path:
    """Write the artifact directory `path` as it was at git revision `rev` under `dest`."""
    top, rel = _repo_of(Path(path))
    r = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], top)
    if r.returncode != 0:
        raise ArtifactError(f"unknown git revision '{rev}'")
    commit = r.stdout.decode().strip()
    r = _git(["cat-file", "-t", f"{commit}:{rel}"], top)
    if r.returncode != 0 or r.stdout.decode().strip() != "tree":
        raise ArtifactError(f"{rel} is not a directory at revision {rev} (not committed there?)")
    r = _git(["archive", "--format=tar", commit, "--", rel], top)
    if r.returncode != 0:
        raise ArtifactError(f"git archive {rev} {rel} failed: {r.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        tar.extractall(dest, filter="data")
    root = dest / rel
    _smudge_lfs(root, top, rev, rel)
    return root


@contextlib.contextmanager
def revision_artifacts(path: str | Path, revs: list[str]) -> Iterator[tuple[Path, Path, str, str]]:
    """(A, B, label A, label B) for `path` at one revision (against the working tree) or two."""
    if not 1 <= len(revs) <= 2:
        raise ArtifactError("give --rev once (against the working tree) or twice")
    tmp = Path(tempfile.mkdtemp(prefix="dsc-diff-"))
    try:
        a = extract_at_revision(path, revs[0], tmp / "a")
        if len(revs) == 2:
            b, label_b = extract_at_revision(path, revs[1], tmp / "b"), f"{path}@{revs[1]}"
        else:
            b, label_b = Path(path), f"{path} (working tree)"
        yield a, b, f"{path}@{revs[0]}", label_b
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Rendering (rich)
# ---------------------------------------------------------------------------------------------


def _window(a: str, b: str, width: int) -> tuple[str, str, list[tuple[str, int, int, int, int]]]:
    """The region around the first difference of two texts, with the opcodes inside it."""
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    ops = [op for op in sm.get_opcodes() if op[0] != "equal"]
    if not ops:
        return a[:width], b[:width], []
    start = max(0, ops[0][1] - width // 4)
    start_b = max(0, ops[0][3] - width // 4)
    wa, wb = a[start:start + width], b[start_b:start_b + width]
    inner = [(t, i1 - start, i2 - start, j1 - start_b, j2 - start_b) for t, i1, i2, j1, j2 in ops
             if i1 - start < width and j1 - start_b < width]
    return wa, wb, inner


def side_by_side(change: RowChange, row_a: dict[str, Any], row_b: dict[str, Any], width: int = 600):
    from rich.table import Table
    from rich.text import Text

    ta, tb, ops = _window(row_text(row_a), row_text(row_b), width)
    left, right = Text(ta), Text(tb)
    for tag, i1, i2, j1, j2 in ops:
        if tag in ("replace", "delete"):
            left.stylize("bold white on red", max(0, i1), min(len(ta), i2))
        if tag in ("replace", "insert"):
            right.stylize("bold black on green3", max(0, j1), min(len(tb), j2))
    table = Table(title=f"{change.id}" + (f" → {change.new_id}" if change.new_id != change.id else "")
                  + f"  [{', '.join(change.fields)}]", title_justify="left", expand=True, show_lines=True)
    table.add_column(f"before ({change.split})", ratio=1)
    table.add_column(f"after ({change.new_split})", ratio=1)
    table.add_row(left, right)
    return table


def example_pairs(diff: ArtifactDiff, a: Artifact, b: Artifact, n: int) -> list[tuple[RowChange, dict, dict]]:
    """The first `n` changed rows, loaded from both sides (changes to the text first)."""
    ranked = sorted(diff.changed, key=lambda c: (not TEXT_FIELDS & set(c.fields), split_sort_key(c.split), c.id))[:n]
    if not ranked:
        return []
    rows_a = {r["id"]: r for _, r in find_rows(a, ids=[c.id for c in ranked])}
    rows_b = {r["id"]: r for _, r in find_rows(b, ids=[c.new_id for c in ranked])}
    return [(c, rows_a[c.id], rows_b[c.new_id]) for c in ranked]


def render_diff(diff: ArtifactDiff, examples: list[tuple[RowChange, dict, dict]], console, *, list_rows: int = 20) -> None:
    from rich.table import Table

    console.print(f"[bold]{diff.a}[/] ({diff.version_a}) → [bold]{diff.b}[/] ({diff.version_b})", highlight=False)
    for key, before, after in diff.spec_changes:
        console.print(f"  spec {key}: {before!r} → {after!r}", highlight=False)
    for note in diff.notes:
        console.print(f"  {note}", highlight=False)
    console.print(f"rows: [green]+{len(diff.added)} added[/], [red]-{len(diff.removed)} removed[/], "
                  f"[yellow]~{len(diff.changed)} changed[/], {diff.unchanged} unchanged"
                  + (f" ({diff.provenance_only} more differ only in provenance)" if diff.provenance_only else ""))
    if diff.counts:
        table = Table(title="count deltas", title_justify="left")
        for col, just in (("measure", "left"), ("by", "left"), ("key", "left"), ("split", "left"),
                          ("before", "right"), ("after", "right"), ("Δ", "right")):
            table.add_column(col, justify=just)
        for c in diff.counts:
            colour = "green" if c.delta > 0 else "red"
            table.add_row(c.what, c.dimension, c.key, c.split, str(c.before), str(c.after),
                          f"[{colour}]{c.delta:+d}[/]")
        console.print(table)
    for title, refs, mark in (("added", diff.added, "+"), ("removed", diff.removed, "-")):
        for r in refs[:list_rows]:
            console.print(f"  {mark} {r.id} ({r.split}, {r.source})", highlight=False)
        if len(refs) > list_rows:
            console.print(f"  … {len(refs) - list_rows} more {title}")
    for c in diff.changed[:list_rows]:
        moved = f"{c.split} → {c.new_split}" if c.split != c.new_split else c.split
        ident = c.id if c.new_id == c.id else f"{c.id} → {c.new_id}"
        console.print(f"  ~ {ident} ({moved}): {', '.join(c.fields)}", highlight=False)
    if len(diff.changed) > list_rows:
        console.print(f"  … {len(diff.changed) - list_rows} more changed")
    for change, ra, rb in examples:
        console.print(side_by_side(change, ra, rb))
