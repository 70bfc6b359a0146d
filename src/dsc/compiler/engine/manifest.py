"""The artifact's manifest: what was built from what (spec, inputs, template, tokenizer,
libraries, plugins), what selection and rendering did (counts), the files and their hashes, and
everything the content version is computed over when `artifact.write_manifest` writes it."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsc import __version__
from dsc.artifact.inspection import ArtifactStats, quarantine_group
from dsc.artifact.manifest import QUARANTINE, TEMPLATE_FILE
from dsc.compiler.engine.fingerprints import manifest_plugins
from dsc.compiler.engine.normalise import NormalisedSources
from dsc.compiler.engine.rowfiles import QuarantineEntry
from dsc.compiler.engine.tally import Tally
from dsc.compiler.stages.transforms.pipeline import inference as inference_block
from dsc.compiler.stages.write import artifact as art
from dsc.compiler.stages.write.card import write_card
from dsc.spec.model import LoadedSpec

if TYPE_CHECKING:
    from dsc.compiler.engine.context import BuildContext


def library_versions() -> dict[str, str]:
    """Versions of dsc and of the libraries that shape an artifact's bytes."""
    import importlib.metadata as md

    out = {"dsc": __version__}
    # matplotlib draws the dataset card's charts (part of the artifact's bytes).
    for name in ("pyarrow", "jinja2", "tokenizers", "pydantic", "ruamel.yaml", "matplotlib"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _counts(read: NormalisedSources, tally: Tally, quarantine: list[QuarantineEntry], tokenised: bool
            ) -> dict[str, Any]:
    reasons: Counter[str] = Counter(quarantine_group(q.stage, q.reason) for q in quarantine)
    return {
        "read": dict(sorted(read.read_counts.items())),
        "quarantined": len(quarantine),
        "bad_rows": sum(1 for q in quarantine if q.bad),
        "quarantine_reasons": dict(sorted(reasons.items())),
        "duplicates_removed": dict(sorted(read.duplicates.items())),
        "written": dict(tally.written),
        "per_source": {s: dict(sorted(c.items())) for s, c in sorted(tally.per_source.items())},
        "per_label": {s: dict(sorted(c.items())) for s, c in sorted(tally.per_label.items())},
        "per_capability": {s: dict(sorted(c.items())) for s, c in sorted(tally.per_capability.items())
                           if s != "None"},
        "dropped": dict(sorted(read.dropped.items())),
        "supervised_chars": dict(tally.supervised_chars),
        "supervised_tokens": dict(tally.supervised_tokens) if tokenised else None,
        "dropped_too_long": sum(1 for q in quarantine if q.stage == "tokenize" and not q.bad),
        "truncated": tally.truncated,
        "special_tokens_in_content": dict(sorted(tally.special_found.items())),
    }


def build_manifest(loaded: LoadedSpec, ctx: BuildContext, inputs: list[dict[str, Any]], read: NormalisedSources,
                   selection_report: dict[str, Any], tally: Tally, quarantine: list[QuarantineEntry],
                   files: dict[str, str], preference: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest's fields of a built artifact (all but `version`, which `write_manifest` adds)."""
    spec, template, tokenizer = loaded.spec, ctx.template, ctx.tokenizer
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
                      if tokenizer is not None and spec.tokenize is not None else None),
        "libraries": library_versions(),
        "inference": inference_block(spec, ctx.pipeline),
        "selection": selection_report,
        "counts": _counts(read, tally, quarantine, tokenizer is not None),
        "files": dict(sorted(files.items())),
    }
    plugins = manifest_plugins(spec, loaded.plugins, loaded.base_dir)
    if plugins:  # absent without user code, so plugin-free specs keep their versions
        manifest["plugins"] = [m.to_dict() for m in plugins]
    if preference is not None:  # absent for SFT artifacts, so their versions stay
        manifest["preference"] = preference
    return manifest


def write_artifact_files(tmp: Path, loaded: LoadedSpec, ctx: BuildContext, inputs: list[dict[str, Any]],
                         read: NormalisedSources, selection_report: dict[str, Any], tally: Tally,
                         quarantine: list[QuarantineEntry], files: dict[str, str], stats: ArtifactStats,
                         preference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything of a staged artifact but its data shards: the quarantine, the chat template, the
    manifest (versioned, checked against the Manifest model) and the card; the manifest."""
    art.write_jsonl(tmp / QUARANTINE, (json.loads(q.line) for q in quarantine))
    (tmp / TEMPLATE_FILE).write_text(ctx.template.source, encoding="utf-8")
    fields = build_manifest(loaded, ctx, inputs, read, selection_report, tally, quarantine, files,
                            preference=preference)
    manifest = art.write_manifest(tmp, fields).to_dict()
    write_card(tmp, manifest, stats)
    return manifest
