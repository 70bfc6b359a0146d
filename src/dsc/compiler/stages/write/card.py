"""The artifact's dataset card (README.md with the YAML front matter the Hugging Face Hub reads),
with the realised mix as a table and a PNG chart, and a histogram of row lengths.

The card is part of the artifact, so it must be byte-identical across builds: no timestamps or
paths in the text; the charts are drawn with matplotlib's object API on the Agg canvas (no
pyplot, so the user's backend is never touched) inside `style.context("default")` (so a user's
matplotlibrc cannot change a pixel), at a fixed size and dpi, and saved without the `Software`
metadata entry. PNG files from matplotlib carry no timestamp. Identical bytes therefore hold for
a given matplotlib version (the version is recorded in the manifest's libraries).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from dsc.artifact.inspection import DIMENSIONS, ArtifactStats, artifact_stats, length_summary, realised_mix
from dsc.artifact.manifest import CARD, TEMPLATE_FILE, Manifest
from dsc.artifact.reader import Artifact, split_sort_key

ASSETS_DIR = "assets"
MIX_CHART = f"{ASSETS_DIR}/mix.png"
LENGTH_CHART = f"{ASSETS_DIR}/lengths.png"
CHART_DPI = 100
LENGTH_BINS = 30
# Fixed colours per split / measure: the chart never depends on the style's colour cycle.
SPLIT_COLOURS = {"train": "#1f77b4", "validation": "#ff7f0e", "test": "#2ca02c"}
ROWS_COLOUR, SUPERVISED_COLOUR = "#1f77b4", "#2ca02c"


def _front_matter(manifest: dict[str, Any]) -> str:
    splits = sorted(manifest["counts"]["written"])
    lines = ["---"]
    license_ = manifest["spec"].get("license")
    if license_:
        lines.append(f"license: {license_}")
    lines += ["tags:", "- dsc", "- agent", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*.parquet"]
    lines.append("---")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def percent(x: float) -> str:
    """0.1234 → "12.3%" (the card's and the report's spelling)."""
    return f"{100 * x:.1f}%"


def _mix_section(stats: ArtifactStats, split: str) -> list[str]:
    parts = [f"## Realised mix ({split} split)",
             f"What the {split} split really holds after quarantine, filters, mixing and length limits "
             f"(rows, and the supervised {stats.unit} that carry the loss)."]
    for dim in DIMENSIONS:
        if dim != "source" and not stats.has_values(dim):
            continue
        rows = [[key, n, percent(share), sup, percent(sup_share)]
                for key, n, share, sup, sup_share in realised_mix(stats, dim, split)]
        parts.append(_table([dim, "rows", "share", f"supervised {stats.unit}", "share"], rows))
    parts.append(f"![realised mix]({MIX_CHART})")
    return parts


def _length_section(stats: ArtifactStats) -> list[str]:
    splits = sorted(stats.lengths, key=split_sort_key)
    rows = [[s, *length_summary(stats.lengths[s]).values()] for s in splits]
    return [f"## Row lengths ({stats.unit})",
            _table(["split", "min", "median", "p95", "max"], rows),
            f"![row lengths]({LENGTH_CHART})"]


def _weights_section(stats: ArtifactStats, spec: dict[str, Any]) -> list[str]:
    """Supervised tokens (chars) by loss weight, per split, and their weighted sum."""
    if not stats.by_weight:
        return []
    splits = sorted(stats.by_weight, key=split_sort_key)
    weights = sorted({w for per in stats.by_weight.values() for w in per})
    rows = [[f"{w:g}", *[stats.by_weight[s].get(w, 0) for s in splits]] for w in weights]
    rows.append(["weighted sum", *[f"{sum(w * n for w, n in stats.by_weight[s].items()):g}" for s in splits]])
    rules = "; ".join(f"{'`' + r['pattern'] + '`' if r.get('pattern') is not None else r['part']} → {r['weight']:g}"
                      for r in spec["loss"]["weights"])
    return ["## Loss weights",
            f"Supervised {stats.unit} by their loss weight (rules in order, a later rule wins: {rules}; "
            f"1 elsewhere in the supervised text). `dsc train` minimises sum(weight × token loss) / sum(weight).",
            _table(["weight", *splits], rows)]


def _in_split_order(per_split: dict[str, Any]) -> dict[str, Any]:
    """A per-split count as the build made it (train, validation, test), also when read back
    from manifest.json, whose keys are sorted."""
    return {k: per_split[k] for k in sorted(per_split, key=split_sort_key)}


def _loss_text(loss: Any) -> str:
    return f"`{loss}`" if isinstance(loss, str) else f"`{loss['mode']}` with loss weights (below)"


def _groups_line(stats: ArtifactStats, spec: dict[str, Any]) -> str:
    """Groups (questions) per split and any group with rows in two splits: with `split.by: id`
    or an ill-chosen `group:`, the same question would be trained on and validated on."""
    per = ", ".join(f"{s} {n:,}" for s, n in stats.groups_per_split().items())
    shared = stats.shared_groups()
    by = (spec.get("split") or {}).get("by", "group")
    if not shared:
        return f"Groups (split by {by}): {per}; no group has rows in two splits."
    shown = ", ".join(f"`{g}`" for g in shared[:5]) + (" …" if len(shared) > 5 else "")
    return f"Groups (split by {by}): {per}; **{len(shared):,} groups have rows in two splits**: {shown}."


def row_accounting(counts: dict[str, Any]) -> str:
    """Where every read row went, as one line whose numbers add up exactly:
    read = written + quarantined + filtered (+ the mix's net selection: rows it left out minus the
    rows negatives rules generated, when the spec has those)."""
    read = sum(counts["read"].values())
    written = sum(counts["written"].values())
    quarantined = counts["quarantined"]
    bad = counts.get("bad_rows", 0)
    duplicates = sum(counts.get("duplicates_removed", {}).values())  # each one quarantined (stage dedup)
    dropped = counts.get("dropped", {})
    filtered = sum(dropped.values())
    rest = read - written - quarantined - filtered
    line = (f"read {read} = written {written} + quarantined {quarantined} ({bad} bad, {duplicates} duplicates, "
            f"{quarantined - bad - duplicates} other) + filtered {filtered}")
    if filtered:  # why, most first: `filtered 527 (decontaminated: exact 509, filter: finished 13)`
        reasons = sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))
        line += " (" + ", ".join(f"{reason} {n}" for reason, n in reasons) + ")"
    if rest:
        line += f" + {rest} left out by selection (mix, caps; net of generated rows)"
    return line


def card_text(manifest: dict[str, Any], stats: ArtifactStats | None = None) -> str:
    """The card's markdown; the mix and length sections need `stats` (from the written rows)."""
    counts = manifest["counts"]
    spec = manifest["spec"]
    splits = sorted(counts["written"], key=split_sort_key)
    per_source = counts["per_source"]
    source_rows = [[name, *[per_source[name].get(s, 0) for s in splits], counts["read"].get(name, "")]
                   for name in sorted(per_source)]
    licences = [[name, src.get("license") or "not declared"] for name, src in sorted(spec["sources"].items())]
    tok = manifest.get("tokenizer")
    split_files = ", ".join(f'"{s}": "data/{s}-*.parquet"' for s in splits)
    parts = [
        _front_matter(manifest),
        f"# {manifest['name']}",
        spec.get("description") or "",
        f"Compiled by dsc {manifest['dsc_version']} from a declarative spec. "
        f"**Version `{manifest['version']}`** (a content hash of the spec, inputs, template, tokenizer and data). "
        "`dsc verify <spec> <this directory>` rebuilds it and checks that every file is identical.",
        "## Load it",
        "```python\nfrom datasets import load_dataset\n\n"
        f"ds = load_dataset(\"parquet\", data_files={{{split_files}}})  # paths relative to this directory\n```",
        "Each row holds the canonical conversation (`messages`, `tools`, `meta`), the rendered `text` and the "
        "supervised character spans `loss_spans`"
        + (" plus `input_ids` and `labels` (-100 = not trained on)" if tok else "")
        + f". Train with the same chat template (`{TEMPLATE_FILE}`): `dsc train <spec>` reads this artifact "
        "directly; `dsc inspect <this directory>` shows what each row trains on.",
        "## Rows",
        _table(["source", *splits, "rows read"], source_rows),
        f"Quarantined input rows: {counts['quarantined']} (see `quarantine.jsonl`).",
        f"Row accounting: {row_accounting(counts)}.",
    ]
    if stats is not None:
        parts.append(_groups_line(stats, spec))
        parts += _mix_section(stats, "train" if "train" in stats.splits else splits[0])
        parts += _length_section(stats)
        parts += _weights_section(stats, spec)
    parts += [
        "## Rendering",
        "\n".join([
            f"- chat template: `{manifest['template']['ref']}` (sha256 `{manifest['template']['sha256']}`,"
            f" copied to `{TEMPLATE_FILE}`)",
            f"- loss: {_loss_text(spec['loss'])}; supervised characters per split: "
            f"{_in_split_order(counts['supervised_chars'])}",
            (f"- tokenizer: `{tok['ref']}` (sha256 `{tok['sha256']}`), supervised tokens per split: "
             f"{_in_split_order(counts['supervised_tokens'])}" if tok else
             "- not tokenised (text + character loss spans)"),
        ]),
        "## Source licences",
        "As the spec declares them; the compiled dataset's own licence is in the front matter.",
        _table(["source", "licence"], licences),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


# ---------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------

_CHART_MODULES = ("matplotlib.style", "matplotlib.backends.backend_agg", "matplotlib.figure")


def preload_in_background() -> None:
    """Import matplotlib (≈1.3 s) on a daemon thread, for a caller that is about to wait on
    other processes (the build's main process while workers render): the card then does not
    pay for the import at the end of the build. Importing has no effect on the charts' bytes."""
    import importlib
    import threading

    def load() -> None:
        for name in _CHART_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the card reports a missing matplotlib itself
                return

    threading.Thread(target=load, name="dsc-preload-matplotlib", daemon=True).start()


def _png(draw) -> bytes:
    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.style.context("default"):
        fig = Figure(dpi=CHART_DPI)
        FigureCanvasAgg(fig)
        draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=CHART_DPI, metadata={"Software": None})
    return buf.getvalue()


def mix_chart(stats: ArtifactStats, split: str = "train") -> bytes:
    """Horizontal bars per dimension: share of rows and share of supervised units per key."""
    dims = [d for d in DIMENSIONS if d == "source" or stats.has_values(d)]
    mixes = {d: realised_mix(stats, d, split) for d in dims}
    n_bars = sum(max(1, len(m)) for m in mixes.values())

    def draw(fig) -> None:
        fig.set_size_inches(7.0, 1.0 + 0.45 * n_bars + 0.5 * len(dims))
        axes = fig.subplots(len(dims), 1, squeeze=False,
                            gridspec_kw={"height_ratios": [max(1, len(mixes[d])) for d in dims]})[:, 0]
        for ax, dim in zip(axes, dims):
            mix = mixes[dim]
            keys = [k for k, *_ in mix]
            y = list(range(len(keys)))
            ax.barh([v - 0.2 for v in y], [100 * s for _, _, s, _, _ in mix], height=0.4,
                    color=ROWS_COLOUR, label="rows")
            ax.barh([v + 0.2 for v in y], [100 * s for *_, s in mix], height=0.4,
                    color=SUPERVISED_COLOUR, label=f"supervised {stats.unit}")
            ax.set_yticks(y, keys)
            ax.invert_yaxis()
            ax.set_xlim(0, 100)
            ax.set_xlabel("% of split")
            ax.set_title(f"{split}: by {dim}", loc="left", fontsize=10)
        # Above the first panel, beside its title: never over a bar.
        axes[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=2, frameon=False, fontsize=8)
        fig.tight_layout()

    return _png(draw)


def length_chart(stats: ArtifactStats) -> bytes:
    """Histogram of row lengths per split, on shared bins."""
    import numpy as np

    splits = sorted(stats.lengths, key=split_sort_key)
    lengths = {s: stats.lengths[s] for s in splits}
    # the distinct lengths span what the rows span: the same bins
    values = np.concatenate([c.values for c in lengths.values()]) if lengths else np.zeros(0, np.int64)
    edges = np.histogram_bin_edges(values if len(values) else np.zeros(1, np.int64), bins=LENGTH_BINS)

    def draw(fig) -> None:
        fig.set_size_inches(7.0, 3.2)
        ax = fig.add_subplot()
        for s in splits:
            ax.hist(lengths[s].values, bins=edges, weights=lengths[s].counts, histtype="step", linewidth=1.5,
                    color=SPLIT_COLOURS.get(s, "#7f7f7f"), label=f"{s} ({len(lengths[s])} rows)")
        ax.set_xlabel(f"row length ({stats.unit})")
        ax.set_ylabel("rows")
        ax.legend(fontsize=8)
        fig.tight_layout()

    return _png(draw)


def write_card(out: Path, manifest: dict[str, Any], stats: ArtifactStats | None = None) -> None:
    """Write README.md and its charts into a freshly written artifact directory; `stats`: its
    rows' counts when the caller took them while writing (else they are read back)."""
    if stats is None:
        stats = artifact_stats(Artifact(out, Manifest.model_validate(manifest)))
    (out / ASSETS_DIR).mkdir(exist_ok=True)
    split = "train" if "train" in stats.splits else sorted(stats.splits, key=split_sort_key)[0]
    (out / MIX_CHART).write_bytes(mix_chart(stats, split))
    (out / LENGTH_CHART).write_bytes(length_chart(stats))
    (out / CARD).write_text(card_text(manifest, stats), encoding="utf-8")
