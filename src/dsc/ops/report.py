"""`dsc report`: one self-contained static HTML page about an artifact.

What the page holds: the realised mix by source, label and capability (charts and tables, with
the planned side the manifest records: mix buckets and capability ratios), length histograms
(characters, tokens when tokenised, the supervised share of each row), the quarantine grouped by
reason with example rows, and a row browser over a seeded sample of rows, each shown as the
model sees it (supervised spans coloured, conditioning strings highlighted, token ids on hover).

Everything is inline (CSS, the browser's script, the charts as SVG drawn here); a Content
Security Policy forbids any network access and any script but the page's own (pinned by its
hash), and all row text goes in as escaped JSON and out through `textContent`, never as markup.
Rows are read through `dsc.artifact.inspection`, like `dsc inspect`.
"""
from __future__ import annotations

import base64
import hashlib
import heapq
import html
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dsc import __version__
from dsc.artifact import inspection as ins
from dsc.artifact.manifest import Manifest
from dsc.artifact.reader import Artifact, open_artifact
from dsc.compiler.stages.transforms.common import rank_key
from dsc.compiler.stages.write.card import percent
from dsc.ops.tokens import find_tokenizer

DEFAULT_SAMPLE = 2000
# Token boundaries are embedded for sampled rows until this many tokens (then character spans
# only), so a page over long rows stays a few MB.
DEFAULT_TOKEN_BUDGET = 400_000
QUARANTINE_EXAMPLES = 3
RAW_EXAMPLE_CHARS = 600
HIST_BINS = 30


# ---------------------------------------------------------------------------------------------
# Reading: one streaming pass for the statistics and the sample, one for the sampled rows
# ---------------------------------------------------------------------------------------------


def sample_quotas(counts: dict[str, int], size: int) -> dict[str, int]:
    """Rows to sample from each source: all of them when the total fits, else `size` shared out
    evenly, a source with fewer rows than its share giving the rest to the others."""
    if sum(counts.values()) <= size:
        return dict(counts)
    quotas = {k: 0 for k in counts}
    left, open_keys = size, sorted(k for k, n in counts.items() if n > 0)
    while left > 0 and open_keys:
        share = max(1, left // len(open_keys))
        for k in list(open_keys):
            take = min(share, counts[k] - quotas[k], left)
            quotas[k] += take
            left -= take
            if quotas[k] == counts[k]:
                open_keys.remove(k)
            if left == 0:
                break
    return quotas


@dataclass
class _Sampler:
    """The `quota` rows of each source with the lowest seeded hash rank of their id."""

    quotas: dict[str, int]
    seed: int
    heaps: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)

    def offer(self, split: str, source: str, row_id: str) -> None:
        quota = self.quotas.get(source, 0)
        if quota <= 0:
            return
        rank = int(rank_key(self.seed, "report", row_id)[:16], 16)
        heap = self.heaps.setdefault(source, [])
        item = (-rank, row_id, split)  # a max-heap on rank: the worst kept row is on top
        if len(heap) < quota:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)

    def chosen(self) -> dict[str, list[tuple[int, str]]]:
        """split → [(rank, id)] of the sampled rows."""
        out: dict[str, list[tuple[int, str]]] = {}
        for heap in self.heaps.values():
            for neg, row_id, split in heap:
                out.setdefault(split, []).append((-neg, row_id))
        return out


@dataclass
class Measures:
    """Per-row lengths over the whole artifact, for the histograms."""

    chars: list[np.ndarray] = field(default_factory=list)
    tokens: list[np.ndarray] = field(default_factory=list)
    sup_share: list[np.ndarray] = field(default_factory=list)

    def add(self, m: dict[str, np.ndarray], tokenised: bool) -> None:
        self.chars.append(m["chars"])
        if tokenised:
            self.tokens.append(m["tokens"])
            self.sup_share.append(m["supervised_tokens"] / np.maximum(m["tokens"], 1))
        else:
            self.sup_share.append(m["supervised_chars"] / np.maximum(m["chars"], 1))

    @staticmethod
    def joined(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)


def _per_source_counts(manifest: Manifest) -> dict[str, int]:
    return {src: sum(splits.values()) for src, splits in manifest.counts.per_source.items()}


def _utf16_offsets(text: str) -> list[int] | None:
    """Code point index → UTF-16 offset (what JavaScript strings index by); None for ASCII-free
    cases where they are the same (every code point below U+10000)."""
    if all(ord(c) < 0x10000 for c in text):
        return None
    out = [0]
    for c in text:
        out.append(out[-1] + (2 if ord(c) >= 0x10000 else 1))
    return out


def _spans16(spans: list[tuple[int, int]], offsets: list[int] | None) -> list[list[int]]:
    if offsets is None:
        return [[int(a), int(b)] for a, b in spans]
    return [[offsets[a], offsets[b]] for a, b in spans]


def _utf16_len(text: str, end: int | None = None) -> int:
    """The UTF-16 length of text[:end] (JavaScript's index of that point)."""
    part = text if end is None else text[:end]
    return len(part) + sum(1 for c in part if ord(c) >= 0x10000)


def preference_browser_row(split: str, row: dict[str, Any], conditions: dict[str, str]) -> dict[str, Any]:
    """A preference row as the page's script draws it: the prompt, then a DPO pair's two sides
    side by side (`part`: where they stop sharing text, in UTF-16 offsets) or a KTO row's one
    completion. `text` (what the search box reads) is the three texts joined."""
    prompt = row.get(ins.PROMPT_TEXT) or ""
    if ins.preference_kind(row) == "dpo":
        chosen, rejected = row.get("chosen_text") or "", row.get("rejected_text") or ""
        k = ins.common_prefix(chosen, rejected)
        sides = [{"name": "chosen", "cls": "chosen", "text": chosen, "part": _utf16_len(chosen, k)},
                 {"name": "rejected", "cls": "rejected", "text": rejected, "part": _utf16_len(rejected, k)}]
        label, facts = ins.NONE_KEY, [f"DPO pair: chosen {row.get('chosen_id')} over rejected {row.get('rejected_id')}",
                                      f"score gap {row.get('score_gap')}", f"the sides part at character {k}"]
    else:
        desirable = bool(row.get("label"))
        label = ins.KTO_CLASSES[desirable]
        sides = [{"name": f"completion ({label})", "cls": "chosen" if desirable else "rejected",
                  "text": row.get("completion_text") or "", "part": 0}]
        facts = [f"KTO row from {row.get('source_id')}", f"score {row.get('score')}"]
    completions = sum(len(x["text"]) for x in sides)
    cond = sorted({span for c in conditions.values()
                   for span in (ins.occurrences(prompt, c) or ins.occurrences(prompt, c.strip()))})
    return {"id": row["id"], "group": row.get("group"), "split": split, "source": ins.NONE_KEY, "label": label,
            "capability": ins.NONE_KEY, "text": "\n".join([prompt] + [x["text"] for x in sides]), "sup": [],
            "cond": _spans16(cond, _utf16_offsets(prompt)), "sup_chars": completions,
            "chars": len(prompt) + completions, "pair": {"prompt": prompt, "sides": sides, "facts": facts}}


def browser_row(split: str, row: dict[str, Any], view: ins.TokenView | None, conditions: dict[str, str],
                with_tokens: bool) -> dict[str, Any]:
    """One sampled row as the page's script draws it: text, and spans in UTF-16 offsets."""
    if ins.is_preference_row(row):
        return preference_browser_row(split, row, conditions)
    text: str = row.get("text") or ""
    meta = row.get("meta") or {}
    offsets = _utf16_offsets(text)
    sup = sorted((int(a), int(b)) for a, b in row.get("loss_spans") or [])
    cond = sorted({span for s in conditions.values()
                   for span in (ins.occurrences(text, s) or ins.occurrences(text, s.strip()))})
    out: dict[str, Any] = {
        "id": row["id"], "group": row.get("group"), "split": split,
        "source": str(meta.get("source")), "label": ins.NONE_KEY if meta.get("label") is None else str(meta["label"]),
        "capability": ins.NONE_KEY if meta.get("capability") is None else str(meta["capability"]),
        "text": text, "sup": _spans16(sup, offsets), "cond": _spans16(cond, offsets),
        "sup_chars": sum(b - a for a, b in sup), "chars": len(text),
    }
    labels = row.get("labels")
    if labels is not None:
        out["tokens"] = len(labels)
        out["sup_tokens"] = sum(1 for t in labels if t != ins.IGNORE_INDEX)
    ids = row.get("input_ids")
    if with_tokens and view is not None and ids is not None and labels is not None:
        spans = view.spans(text, ids)
        if spans is not None:
            flat: list[int] = []
            for a, b in _spans16(spans, offsets):
                flat.extend((a, b))
            out["tok"] = {"b": flat, "ids": [int(i) for i in ids],
                          "s": "".join("1" if t != ins.IGNORE_INDEX else "0" for t in labels)}
    return out


@dataclass
class ReportData:
    art: Artifact
    stats: ins.ArtifactStats
    measures: Measures
    rows: list[dict[str, Any]]
    sample_size: int
    total_rows: int
    token_note: str
    tokens_shown_rows: int
    quarantine: list[tuple[str, int, list[dict[str, Any]]]]  # reason, count, examples
    conditions: dict[str, str]
    seed: int


def collect(art: Artifact, *, sample: int = DEFAULT_SAMPLE, seed: int = 0,
            tokenizer: Path | None = None, token_budget: int = DEFAULT_TOKEN_BUDGET) -> ReportData:
    stats = ins.ArtifactStats(tokenised=art.tokenised)
    measures = Measures()
    # Preference rows keep no source (the manifest counts the chosen side's): one pool
    sources = (_per_source_counts(art.manifest) if art.manifest.kind == "sft"
               else {ins.NONE_KEY: sum(art.manifest.counts.written.values())})
    sampler = _Sampler(sample_quotas(sources, sample), seed)
    for split in art.splits:
        stats.start_split(split)
        for batch in art.batches(split, ins.STAT_COLUMNS):
            stats.add_batch(split, batch)
            measures.add(ins.batch_measures(batch), art.tokenised)
            for row_id, source in zip(batch.column("id").to_pylist(), ins.meta_keys(batch, "source")):
                sampler.offer(split, source, row_id)
    view, note = find_tokenizer(art.manifest, art.path, tokenizer)
    conditions = ins.conditioning_strings(art.manifest)
    chosen = sampler.chosen()
    rows: list[tuple[str, int, dict[str, Any]]] = []
    for split in art.splits:
        wanted = dict((i, r) for r, i in chosen.get(split, []))
        if not wanted:
            continue
        rows += [(split, wanted[row["id"]], row) for row in art.rows_with_ids(split, wanted)]
    # Browser order: by split, then the seeded rank (a shuffle that interleaves the sources).
    rows.sort(key=lambda t: (ins.split_sort_key(t[0]), t[1], t[2]["id"]))
    out_rows, token_total, with_tokens_rows = [], 0, 0
    for split, _, row in rows:
        n_tok = len(row.get("input_ids") or [])
        with_tokens = view is not None and token_total + n_tok <= token_budget
        r = browser_row(split, row, view, conditions, with_tokens)
        if "tok" in r:
            token_total += n_tok
            with_tokens_rows += 1
        out_rows.append(r)
    return ReportData(art=art, stats=stats, measures=measures, rows=out_rows, sample_size=sample,
                      total_rows=sum(t.rows for t in stats.splits.values()), token_note=note,
                      tokens_shown_rows=with_tokens_rows, quarantine=quarantine_groups(art),
                      conditions=conditions, seed=seed)


def quarantine_groups(art: Artifact, examples: int = QUARANTINE_EXAMPLES
                      ) -> list[tuple[str, int, list[dict[str, Any]]]]:
    counts: Counter[str] = Counter()
    shown: dict[str, list[dict[str, Any]]] = {}
    for q in ins.iter_quarantine(art):
        key = ins.quarantine_group(str(q.get("stage")), str(q.get("reason") or ""))
        counts[key] += 1
        if len(shown.setdefault(key, [])) < examples:
            shown[key].append(q)
    return [(k, n, shown[k]) for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


# ---------------------------------------------------------------------------------------------
# SVG charts (drawn here: no chart library, no network)
# ---------------------------------------------------------------------------------------------

E = html.escape
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d")


def _fmt(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 10 or x == int(x) else f"{x:.2f}"


def bar_chart(title: str, labels: list[str], series: list[tuple[str, list[float]]], unit: str = "") -> str:
    """Horizontal grouped bars: one group per label, one bar per series."""
    if not labels:
        return ""
    bar_h, gap, left, width = 14, 10, 190, 640
    group_h = bar_h * len(series) + gap
    height = 40 + group_h * len(labels) + 20 * (len(series) > 1)
    top = max((v for _, vals in series for v in vals), default=0) or 1
    scale = (width - left - 70) / top
    parts = [f'<svg class="chart" role="img" aria-label="{E(title)}" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="0" y="16" class="ct">{E(title)}</text>']
    for g, label in enumerate(labels):
        y0 = 30 + g * group_h
        parts.append(f'<text x="{left - 6}" y="{y0 + bar_h * len(series) / 2 + 4:.1f}" text-anchor="end" '
                     f'class="cl">{E(label[:28])}</text>')
        for s, (name, vals) in enumerate(series):
            v = vals[g]
            y = y0 + s * bar_h
            parts.append(f'<rect x="{left}" y="{y}" width="{max(v * scale, 0.5):.1f}" height="{bar_h - 2}" '
                         f'fill="{PALETTE[s % len(PALETTE)]}"><title>{E(f"{label} · {name}: {_fmt(v)}{unit}")}'
                         f'</title></rect>')
            parts.append(f'<text x="{left + v * scale + 4:.1f}" y="{y + bar_h - 4}" class="cv">{_fmt(v)}{E(unit)}</text>')
    if len(series) > 1:
        y = height - 8
        for s, (name, _) in enumerate(series):
            x = left + s * 150
            parts.append(f'<rect x="{x}" y="{y - 10}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
                         f'<text x="{x + 14}" y="{y}" class="cl">{E(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(title: str, values: np.ndarray, xlabel: str, bins: int = HIST_BINS,
              value_range: tuple[float, float] | None = None) -> str:
    if len(values) == 0:
        return ""
    lo, hi = value_range or (float(values.min()), float(values.max()))
    if hi <= lo:
        hi = lo + 1
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    width, height, left, bottom = 640, 220, 50, 40
    plot_w, plot_h = width - left - 30, height - bottom - 30
    top = int(counts.max()) or 1
    bw = plot_w / bins
    parts = [f'<svg class="chart" role="img" aria-label="{E(title)}" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="0" y="16" class="ct">{E(title)}</text>',
             f'<line x1="{left}" y1="{30 + plot_h}" x2="{left + plot_w}" y2="{30 + plot_h}" class="ax"/>']
    for i, c in enumerate(counts.tolist()):
        h = plot_h * c / top
        parts.append(f'<rect x="{left + i * bw:.1f}" y="{30 + plot_h - h:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{_fmt(edges[i])}–{_fmt(edges[i + 1])}: {c} rows'
                     f'</title></rect>')
    for frac in (0, 0.5, 1):
        x = left + plot_w * frac
        parts.append(f'<text x="{x:.1f}" y="{30 + plot_h + 16}" text-anchor="middle" class="cl">'
                     f'{_fmt(lo + (hi - lo) * frac)}</text>')
    parts.append(f'<text x="{left - 6}" y="36" text-anchor="end" class="cl">{top}</text>'
                 f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" class="cl">'
                 f'{E(xlabel)} (rows: {len(values)})</text></svg>')
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{E(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{E(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def mix_section(d: ReportData) -> str:
    stats, splits = d.stats, d.art.splits
    out = ["<h2>Mix</h2>"]
    for dim in ins.DIMENSIONS:
        if not stats.has_values(dim):
            continue
        keys = sorted({k for s in splits for k in stats.by.get(dim, {}).get(s, {})})
        series = [(s, [float(getattr(stats.by[dim][s].get(k), "rows", 0)) for k in keys])
                  for s in splits if s in stats.by.get(dim, {})]
        out.append(f'<div class="mix" id="mix-{E(dim)}"><h3>by {E(dim)}</h3>')
        out.append('<div class="pair">' + bar_chart(f"rows by {dim}, per split", keys, series))
        rows = []
        for k in keys:
            cells: list[Any] = [k]
            for s in splits:
                t = stats.by[dim].get(s, {}).get(k)
                split_total = stats.splits[s]
                cells.append(f"{t.rows} ({percent(t.rows / max(split_total.rows, 1))})" if t else "0")
                cells.append(percent(stats.supervised(t) / max(stats.supervised(split_total), 1)) if t else "–")
            rows.append(cells)
        headers = [dim] + [h for s in splits for h in (f"{s} rows", f"{s} supervised {stats.unit}")]
        out.append(_table(headers, rows) + "</div></div>")
    selection = d.art.manifest.selection
    buckets = {k: v for k, v in (selection.mix or {}).items() if isinstance(v, dict)}
    if buckets:
        names = sorted(buckets)
        out.append('<div class="mix" id="plan-mix"><h3>mix buckets: planned vs realised</h3>')
        out.append('<div class="pair">' + bar_chart("rows per mix bucket", names,
                             [("planned (target)", [float(buckets[n].get("target") or 0) for n in names]),
                              ("realised (selected)", [float(buckets[n].get("selected") or 0) for n in names])]))
        out.append(_table(["bucket", "how", "requested", "available", "over group cap", "target", "selected",
                           "upsampled copies", "realised"],
                          [[n, b.get("how"), b.get("requested"), b.get("available"), b.get("over_group_cap"),
                            b.get("target"), b.get("selected"), b.get("copies"), b.get("realised", "–")]
                           for n, b in sorted(buckets.items())]) + "</div>")
        kept = (selection.mix or {}).get("_unmatched_kept")
        if kept:
            out.append(f"<p>{int(kept)} rows in no bucket were kept as they are.</p>")
        out.append("</div>")
    caps = selection.capabilities or {}
    per_cap = caps.get("per_capability") or {}
    if per_cap:
        names = sorted(per_cap)
        out.append(f'<div class="mix" id="plan-capabilities"><h3>capability {E(str(caps.get("mode")))} '
                   f'({E(str(caps.get("measure")))}): planned vs realised</h3>')
        out.append('<div class="pair">' + bar_chart(f"capability {caps.get('mode')}", names,
                             [("requested", [float(per_cap[n].get("requested") or 0) for n in names]),
                              ("realised", [float(per_cap[n].get("realised") or 0) for n in names])]))
        out.append(_table(["capability", "requested", "realised", "available", "target", "selected"],
                          [[n, c.get("requested"), c.get("realised"), c.get("available"), c.get("target"),
                            c.get("selected")] for n, c in sorted(per_cap.items())]) + "</div>")
        if caps.get("untagged_kept"):
            out.append(f"<p>{int(caps['untagged_kept'])} rows without a rebalanced capability kept as they are.</p>")
        out.append("</div>")
    dropped = d.art.manifest.counts.dropped
    if dropped:
        out.append("<h3>dropped by filters and decontamination</h3>"
                   + _table(["reason", "rows"], sorted(dropped.items())))
    return "".join(out)


def lengths_section(d: ReportData) -> str:
    m = d.measures
    out = ['<h2>Lengths</h2><div class="charts">']
    out.append(histogram("characters per row", m.joined(m.chars), "characters"))
    if d.art.tokenised:
        out.append(histogram("tokens per row", m.joined(m.tokens), "tokens"))
    unit = "tokens" if d.art.tokenised else "characters"
    out.append(histogram(f"supervised share of each row ({unit})", m.joined(m.sup_share), "supervised share",
                         value_range=(0.0, 1.0)))
    out.append("</div>")
    rows = []
    for s in d.art.splits:
        summary = ins.length_summary(d.stats.lengths.get(s, ins.LengthCounts()))
        t = d.stats.splits[s]
        rows.append([s, t.rows, summary["median"], summary["p95"], summary["max"], d.stats.supervised(t)])
    out.append(_table(["split", "rows", f"median ({d.stats.unit})", f"p95 ({d.stats.unit})",
                       f"max ({d.stats.unit})", f"supervised {d.stats.unit}"], rows))
    return "".join(out)


def quarantine_section(d: ReportData) -> str:
    total = sum(n for _, n, _ in d.quarantine)
    out = [f'<h2>Quarantine</h2><p>{total} rows quarantined.</p>']
    for reason, n, examples in d.quarantine:
        out.append(f'<details class="q"><summary><b>{E(reason)}</b> — {n} rows</summary>')
        for q in examples:
            raw = json.dumps(q.get("raw"), ensure_ascii=False, sort_keys=True, default=str)
            if len(raw) > RAW_EXAMPLE_CHARS:
                raw = raw[:RAW_EXAMPLE_CHARS] + "…"
            where = f"{q.get('source')} · {q.get('file')}:{q.get('row')}"  # rows are 1-based in the quarantine
            out.append(f'<div class="qex"><div class="qwhere">{E(where)}</div>'
                       f'<div class="qreason">{E(str(q.get("reason")))}</div><pre>{E(raw)}</pre></div>')
        out.append("</details>")
    return "".join(out)


def _highlight(text: str, conditions: dict[str, str]) -> str:
    spans = sorted({sp for s in conditions.values() for sp in (ins.occurrences(text, s) or ins.occurrences(text, s.strip()))})
    out, pos = [], 0
    for a, b in spans:
        if a < pos:
            continue
        out.append(E(text[pos:a]) + f'<span class="cond">{E(text[a:b])}</span>')
        pos = b
    return "".join(out) + E(text[pos:])


def inference_section(d: ReportData) -> str:
    inf = d.art.manifest.inference
    if not inf.messages and not d.conditions:
        return ""
    out = ["<h2>Inference-time prompt</h2>"]
    if inf.label is not None:
        out.append(f"<p>conditioned on class <b>{E(inf.label)}</b></p>")
    for msg in inf.messages:
        out.append(f'<div class="msg"><span class="role">{E(msg.role)}</span>'
                   f'<pre>{_highlight(msg.content, d.conditions)}</pre></div>')
    if d.conditions:
        out.append(_table(["class", "conditioning string"], sorted(d.conditions.items())))
    return "".join(out)


def _json_for_script(value: Any) -> str:
    """JSON that cannot end its <script> element or open a comment (`<`, `>`, `&` escaped)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


# The page's stylesheet and script, package data beside this module (read once, as bytes: the
# script's sha256 pins it in the page's Content-Security-Policy).
_ASSETS = Path(__file__).resolve().parent / "assets"
STYLE = (_ASSETS / "report.css").read_text(encoding="utf-8")
SCRIPT = (_ASSETS / "report.js").read_text(encoding="utf-8")



def browser_section(d: ReportData) -> str:
    sampled = len(d.rows)
    if sampled < d.total_rows:
        note = (f"The browser shows a seeded sample of {sampled} of {d.total_rows} rows (at most "
                f"{d.sample_size}, shared evenly across sources, chosen by a hash of their ids with seed {d.seed}; "
                f"dsc report --sample N --seed S changes it). Charts and tables above count every row.")
    else:
        note = f"The browser shows all {sampled} rows."
    if d.art.tokenised:
        note += f" Token boundaries: {d.token_note}"
        if 0 < d.tokens_shown_rows < sampled:
            note += f" (embedded for the first {d.tokens_shown_rows} rows of the sample, to keep the page small)"
        note += "."
    selects = "".join(f'<label>{dim} <select id="f-{dim}"><option value="">all</option></select></label>'
                      for dim in ("split", "source", "label", "capability"))
    legend = ('<div class="legend">' + ('<span class="sup">supervised</span><span class="ctx">context</span>'
                                        if d.art.manifest.kind == "sft" else
                                        '<span class="ctx">prompt / shared by both sides</span>'
                                        '<span class="chosen">chosen (desirable)</span>'
                                        '<span class="rejected">rejected (undesirable)</span>'
                                        '<span class="parted">where the sides part</span>')
              + ('<span class="cond">conditioning string</span>' if d.conditions else "")
              + ("<span>hover a token for its id</span>" if d.tokens_shown_rows else "") + "</div>")
    return (f'<h2>Rows</h2><p class="note" id="sample-note">{E(note)}</p>{legend}'
            f'<div id="controls"><input id="q" type="search" placeholder="search id or text">{selects}'
            f'<span id="count"></span></div><div id="rows"></div><button id="more" hidden>show more</button>')


def render_html(d: ReportData) -> str:
    m = d.art.manifest
    facts = [f"version {m.version}", f"dsc {m.dsc_version}", f"template {m.template.ref}",
             f"tokenizer {m.tokenizer.ref}" if m.tokenizer else "not tokenised",
             " · ".join(f"{s}: {d.stats.splits[s].rows} rows" for s in d.art.splits)]
    script = SCRIPT
    script_hash = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    # No network, no plugins, no script but the page's own (pinned by its hash).
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{script_hash}'; "
           "base-uri 'none'; form-action 'none'")
    data = {"rows": d.rows}
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{E(csp, quote=False)}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{E(m.name)} — dsc report</title><style>{STYLE}</style></head><body>'
            f'<header><h1>{E(m.name)}</h1><div class="facts">{E(" · ".join(facts))}</div></header><main>'
            f'{mix_section(d)}{lengths_section(d)}{inference_section(d)}{quarantine_section(d)}{browser_section(d)}'
            f'<p class="facts">made by dsc {E(__version__)} report</p></main>'
            f'<script type="application/json" id="dsc-data">{_json_for_script(data)}</script>'
            f'<script>{script}</script></body></html>\n')


def write_report(artifact: str | Path, out: str | Path | None = None, *, sample: int = DEFAULT_SAMPLE,
                 seed: int | None = None, tokenizer: Path | None = None) -> tuple[Path, ReportData]:
    """Write the report of an artifact (default: `report.html` in the working directory, not
    inside the artifact, whose files are exactly what its manifest lists); returns its path."""
    art = open_artifact(artifact)
    if seed is None:
        seed = int(art.spec.get("seed") or 0)
    d = collect(art, sample=sample, seed=seed, tokenizer=tokenizer)
    path = Path(out) if out is not None else Path("report.html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(d), encoding="utf-8")
    return path, d
