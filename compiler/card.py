"""The artifact's dataset card (README.md with the YAML front matter the Hugging Face Hub reads)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dsc.compiler.artifact import CARD


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


def card_text(manifest: dict[str, Any]) -> str:
    counts = manifest["counts"]
    spec = manifest["spec"]
    splits = sorted(counts["written"])
    per_source = counts["per_source"]
    source_rows = [[name, *[per_source[name].get(s, 0) for s in splits], counts["read"].get(name, "")]
                   for name in sorted(per_source)]
    licences = [[name, src.get("license") or "not declared"] for name, src in sorted(spec["sources"].items())]
    tok = manifest.get("tokenizer")
    parts = [
        _front_matter(manifest),
        f"# {manifest['name']}",
        spec.get("description") or "",
        f"Compiled by dsc {manifest['dsc_version']} from a declarative spec. "
        f"**Version `{manifest['version']}`** (a content hash of the spec, inputs, template, tokenizer and data).",
        "## Load it",
        "```python\nfrom datasets import load_dataset\n"
        "ds = load_dataset(\"parquet\", data_dir=\"<this directory>/data\")\n```",
        "## Rows",
        _table(["source", *splits, "rows read"], source_rows),
        f"Quarantined input rows: {counts['quarantined']} (see `quarantine.jsonl`).",
        "## Rendering",
        "\n".join([
            f"- chat template: `{manifest['template']['ref']}` (sha256 `{manifest['template']['sha256']}`,"
            " copied to `chat_template.jinja`)",
            f"- loss: `{spec['loss']}`; supervised characters per split: {counts['supervised_chars']}",
            (f"- tokenizer: `{tok['ref']}` (sha256 `{tok['sha256']}`), supervised tokens per split: "
             f"{counts['supervised_tokens']}" if tok else "- not tokenised (text + character loss spans)"),
        ]),
        "## Source licences",
        _table(["source", "licence"], licences),
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def write_card(out: Path, manifest: dict[str, Any]) -> None:
    (out / CARD).write_text(card_text(manifest), encoding="utf-8")
