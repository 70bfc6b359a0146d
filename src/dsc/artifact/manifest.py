"""The artifact's `manifest.json` as a typed, versioned model (the contract between the writer
and every reader: inspect, verify, diff, report, lock, plan, lm-eval export, train and eval).

The manifest's schema version is its `format` key (like dbt's `schemas/manifest/vN`); the JSON
Schema of each version this dsc reads is committed as `schemas/manifest/v<N>.json`
(`python -m dsc.artifact.manifest` writes it). A manifest of a schema version not in
`READABLE_VERSIONS` (an artifact written by a newer dsc) is refused with one clear error; a
manifest with a key unknown to its version, or without one it needs, likewise.

The writer builds a `Manifest` and writes `manifest_text(m)`: the same bytes the artifact had
before the model existed (so the artifact versions of existing specs do not change).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from dsc.core.errors import ArtifactError, did_you_mean

# The artifact directory's layout (the writer's and every reader's).
MANIFEST = "manifest.json"
DATA_DIR = "data"  # <split>-0000i-of-0000N.parquet
TEMPLATE_FILE = "chat_template.jinja"
QUARANTINE = "quarantine.jsonl"
CARD = "README.md"

SCHEMA_VERSION = 1  # the version this dsc writes (manifest key `format`)
READABLE_VERSIONS = (1,)  # the versions this dsc reads
SCHEMA_DIR = Path("schemas") / "manifest"


class ManifestVersionError(ArtifactError):
    """The manifest's schema version is not one this dsc reads (a newer dsc wrote it)."""


class _Strict(BaseModel):
    # strict: a manifest is machine-written; a value of another type is a broken manifest, not
    # something to coerce (coercing would also change its bytes on the way back out).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputFile(_Strict):
    """One input the build read: a file (its size and sha256) or a hub dataset (size None,
    sha256 = the pinned revision)."""

    source: str
    path: str
    size: int | None
    sha256: str


class TemplateInfo(_Strict):
    ref: str
    sha256: str
    end_of_turn: str | None  # None: nothing ends a turn (the template was probed)


class TokenizerInfo(_Strict):
    ref: str
    sha256: str
    max_length: int | None  # None: no length limit
    overflow: str


class InferenceMessage(_Strict):
    role: str
    content: str  # Jinja over `question`


class InferenceCondition(_Strict):
    turn: str
    position: str
    string: str


class InferenceDialect(_Strict):
    """The tool-call dialect the rows' calls are written in (`dsc eval` parses replies with it)."""

    name: str
    parser: str  # module.Class.parse_turn
    stop: list[str]
    reply_is_answer: bool
    observation_role: str | None
    tools_in_system: bool
    system_prompt: str | None  # the declared tools listed for the system turn


class Inference(_Strict):
    """The exact prompt at inference time, the class it is conditioned on and the dialect."""

    messages: list[InferenceMessage]
    label: str | None
    condition: InferenceCondition | None = None  # absent for a spec without `condition`
    dialect: InferenceDialect | None = None  # absent for a spec that writes no dialect


class Selection(_Strict):
    """The select stage's report; each part is present only when that step ran (its inner shape
    is the select stage's own, per bucket / capability)."""

    dedup_removed: dict[str, int] | None = None
    mix: dict[str, Any] | None = None
    capabilities: dict[str, Any] | None = None


SplitCounts = dict[str, int]  # split -> rows


class Counts(_Strict):
    read: dict[str, int]  # source -> rows read
    quarantined: int
    bad_rows: int
    quarantine_reasons: dict[str, int]
    duplicates_removed: dict[str, int]
    written: SplitCounts
    per_source: dict[str, SplitCounts]
    per_label: dict[str, SplitCounts]
    per_capability: dict[str, SplitCounts]
    dropped: dict[str, int]
    supervised_chars: SplitCounts
    supervised_tokens: SplitCounts | None  # None: not tokenised
    dropped_too_long: int
    truncated: int
    special_tokens_in_content: dict[str, int]


class PreferenceInfo(_Strict):
    """A preference artifact (a spec with `preference:`): what its rows are and how pairing went.
    Its rows are DPO pairs or KTO rows (`dsc.compiler.stages.preference.columns`), not SFT rows."""

    kind: str  # dpo | kto
    granularity: str  # trajectory | step
    candidates: int  # chosen x rejected pairs within groups
    pairs: int  # pairs taken
    dropped: dict[str, int]  # reason -> candidate pairs not taken (ties, gaps, per_group_max)
    unpairable: int  # pairs that could not be cut or rendered (quarantined)
    rows: SplitCounts  # rows written per split
    kto_classes: dict[str, SplitCounts] | None  # kto: desirable / undesirable rows per split


class PluginInfo(_Strict):
    module: str
    path: str
    sha256: str


class Manifest(_Strict):
    format: int  # the schema version
    name: str
    version: str  # the content hash over every other key
    dsc_version: str
    spec: dict[str, Any]  # the resolved spec, as the spec model dumps it
    spec_sha256: str  # of the spec file's text
    inputs: list[InputFile]
    template: TemplateInfo
    tokenizer: TokenizerInfo | None
    libraries: dict[str, str]
    inference: Inference
    selection: Selection
    counts: Counts
    files: dict[str, str]  # data file (relative path) -> sha256
    plugins: list[PluginInfo] | None = None  # absent without user code (so plugin-free versions stay)
    preference: PreferenceInfo | None = None  # absent for SFT artifacts (so their versions stay)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON values, exactly the keys it was made with (an absent optional
        key stays absent: adding it would change the artifact's bytes and version)."""
        return self.model_dump(mode="json", exclude_unset=True)

    @property
    def tokenised(self) -> bool:
        return self.tokenizer is not None

    @property
    def kind(self) -> str:
        """What the rows are for: sft, dpo or kto."""
        return self.preference.kind if self.preference is not None else "sft"


def manifest_text(manifest: Manifest) -> str:
    """manifest.json's bytes (as text)."""
    return json.dumps(manifest.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _problem(err: dict[str, Any], allowed_at: dict[tuple[Any, ...], list[str]]) -> str:
    loc = tuple(err["loc"])
    where = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        parent, key = loc[:-1], str(loc[-1])
        allowed = allowed_at.get(parent, [])
        return f"unknown key '{where}'{did_you_mean(key, allowed)}"
    if err["type"] == "missing":
        return f"missing key '{where}'"
    return f"'{where}': {err['msg'].lower()}"


def _allowed_keys() -> dict[tuple[Any, ...], list[str]]:
    # The keys allowed at each fixed place of the manifest (for did-you-mean on an unknown one).
    out: dict[tuple[Any, ...], list[str]] = {}

    def walk(model: type[BaseModel], at: tuple[Any, ...]) -> None:
        out[at] = list(model.model_fields)
        for name, f in model.model_fields.items():
            inner = [a for a in getattr(f.annotation, "__args__", (f.annotation,)) if isinstance(a, type)]
            for a in inner:
                if issubclass(a, BaseModel):
                    walk(a, at + (name,))

    walk(Manifest, ())
    return out


def parse_manifest(data: Any, where: str = MANIFEST) -> Manifest:
    """Check a manifest's schema version, then its keys and types; ArtifactError naming what is
    wrong (never a KeyError later on)."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{where} is not a dsc manifest (not a JSON object)")
    found = data.get("format")
    readable = ", ".join(f"v{v}" for v in READABLE_VERSIONS)
    if not isinstance(found, int) or isinstance(found, bool):
        raise ArtifactError(f"{where} is not a dsc manifest: no schema version (key `format`); "
                            f"this dsc reads manifest schema {readable}")
    if found not in READABLE_VERSIONS:
        newer = " (written by a newer dsc: upgrade dsc to read it)" if found > max(READABLE_VERSIONS) else ""
        raise ManifestVersionError(f"{where} has manifest schema v{found}{newer}; "
                                   f"this dsc reads manifest schema {readable}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        errors = e.errors()
        problems = [_problem(err, _allowed_keys()) for err in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ArtifactError(f"{where} is not a valid dsc manifest (schema v{found}): "
                            + "; ".join(problems) + more) from None


def read_manifest(path: Path) -> Manifest:
    """Read and check `path` (a manifest.json)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} cannot be read as JSON: {e}") from None
    return parse_manifest(data, str(path))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the manifest version this dsc writes."""
    schema = Manifest.model_json_schema()
    schema["title"] = f"dsc artifact manifest, schema v{SCHEMA_VERSION}"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def schema_path(root: Path) -> Path:
    return root / SCHEMA_DIR / f"v{SCHEMA_VERSION}.json"


def main(argv: list[str]) -> int:
    """`python -m dsc.artifact.manifest [REPO_ROOT]`: write the current schema file."""
    path = schema_path(Path(argv[0]) if argv else Path.cwd())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_schema_text(), encoding="utf-8")
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
