"""Reading a compiled artifact (the runtime never sees raw sources).

Layout (the compiler's contract, see docs/ARCHITECTURE.md):
    <dir>/manifest.json, <dir>/chat_template.jinja, <dir>/data/<split>-00000-of-0000N.parquet
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from dsc.compiler.core.errors import DscError

log = logging.getLogger("dsc.runtime")

_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet$")


class ArtifactError(DscError):
    """The path is not a usable artifact (missing files, no such split, ...)."""

    exit_code = 2


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Artifact:
    path: Path
    manifest: dict[str, Any]
    template_source: str
    shards: dict[str, list[Path]]  # split name -> its parquet shards, in shard order
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- manifest fields -------------------------------------------------------------------
    @property
    def version(self) -> str:
        return str(self.manifest.get("version", ""))

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.manifest.get("spec") or {})

    @cached_property
    def spec_hash(self) -> str:
        """The spec's sha256 as the build recorded it (else: of the resolved spec's canonical JSON)."""
        if self.manifest.get("spec_sha256"):
            return str(self.manifest["spec_sha256"])
        from dsc.compiler.record import canonical_json

        return sha256_text(canonical_json(self.spec))

    @property
    def template(self) -> dict[str, Any]:
        return dict(self.manifest.get("template") or {})

    @property
    def template_ref(self) -> str:
        return str(self.template.get("ref") or "chat_template.jinja")

    @property
    def template_sha256(self) -> str:
        return str(self.template.get("sha256") or sha256_text(self.template_source))

    @property
    def end_of_turn(self) -> list[str]:
        """The template's end-of-turn marker(s), e.g. ['<|im_end|>'] or ['</s>']."""
        return _string_list(self.template.get("end_of_turn"))

    @property
    def tokenizer(self) -> dict[str, Any] | None:
        tok = self.manifest.get("tokenizer")
        return dict(tok) if tok else None

    @property
    def inference(self) -> dict[str, Any]:
        """{"messages": [{"role", "content" (Jinja over `question`)}...], "label": ...}."""
        inf = dict(self.manifest.get("inference") or {})
        inf.setdefault("messages", [{"role": "user", "content": "{{ question }}"}])
        inf.setdefault("label", None)
        return inf

    # --- data ----------------------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        return sorted(self.shards)

    def table(self, split: str):
        """The split as one pyarrow Table (shards concatenated in order)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if split not in self.shards:
            raise ArtifactError(f"artifact {self.path} has no '{split}' split "
                                f"(it has: {', '.join(self.splits) or 'none'})")
        key = f"table:{split}"
        if key not in self._cache:
            tables = [pq.read_table(p) for p in self.shards[split]]
            self._cache[key] = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        return self._cache[key]

    def dataset(self, split: str):
        """The split as an in-memory `datasets.Dataset` (no cache files are written)."""
        import datasets

        return datasets.Dataset(self.table(split))

    def has_column(self, split: str, column: str) -> bool:
        return column in self.table(split).column_names


def _string_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    return [str(v) for v in value if v]


def is_artifact(path: str | Path) -> bool:
    p = Path(path)
    return (p / "manifest.json").is_file() and (p / "data").is_dir()


def load_artifact(path: str | Path) -> Artifact:
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact not found: {p}")
    if not p.is_dir():
        raise ArtifactError(f"{p} is not an artifact directory (run `dsc build SPEC` to make one)")
    manifest_path = p / "manifest.json"
    if not manifest_path.is_file():
        raise ArtifactError(f"{p} is not a dsc artifact: it has no manifest.json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path}: the manifest is not a JSON object")
    template_path = p / "chat_template.jinja"
    if not template_path.is_file():
        raise ArtifactError(f"{p} has no chat_template.jinja: train and eval need the artifact's exact template")
    source = template_path.read_text(encoding="utf-8")
    declared = (manifest.get("template") or {}).get("sha256")
    if declared and declared != sha256_text(source):
        log.warning("chat_template.jinja does not match the manifest's template sha256 %s: "
                    "the file was edited after the build", declared)
    shards: dict[str, list[tuple[int, Path]]] = {}
    data_dir = p / "data"
    if data_dir.is_dir():
        for f in sorted(data_dir.iterdir()):
            m = _SHARD.match(f.name)
            if m:
                shards.setdefault(m["split"], []).append((int(m["index"]), f))
    if not shards:
        raise ArtifactError(f"{p} has no data shards (expected data/<split>-00000-of-0000N.parquet)")
    return Artifact(
        path=p,
        manifest=manifest,
        template_source=source,
        shards={split: [f for _, f in sorted(files)] for split, files in shards.items()},
    )
