"""The spec's `sources:` entries: a file source (`path`, globs, a type inferred from the extension)
or a Hugging Face hub dataset pinned to a revision, the format that normalises its rows, and the
tags, ids and groups of its rows (`dsc.compiler.stages.read.sources` reads them)."""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Literal

from pydantic import Field, StrictInt, ValidationInfo, field_validator, model_validator

from dsc.core.errors import allowed_list
from dsc.core.strict import Strict
from dsc.spec.registries import FORMATS, get_format

SourceType = Literal["jsonl", "json", "csv", "parquet", "arrow"]
SOURCE_TYPES: tuple[str, ...] = ("jsonl", "json", "csv", "parquet", "arrow")
EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
# Branch names move; a hub source must name something that does not.
MOVING_REVISIONS = ("main", "master", "head", "refs/heads/main", "refs/heads/master")




class HubSource(Strict):
    """A Hugging Face hub dataset, pinned to a revision (a commit sha or a tag)."""

    id: str = Field(min_length=1)
    revision: str = Field(min_length=1)
    split: str = "train"
    config: str | None = None

    @field_validator("revision")
    @classmethod
    def _pinned(cls, v: str) -> str:
        if v.strip().lower() in MOVING_REVISIONS:
            raise ValueError(f"revision '{v}' is a branch that moves; pin a commit sha or a tag")
        return v

    def display(self) -> str:
        return f"hf://{self.id}@{self.revision}/{self.config or 'default'}/{self.split}"


class SourceTags(Strict):
    task: str | None = None
    method: str | None = None  # react / cot / reflexion / ...
    capability: str | None = None


class SourceSpec(Strict):
    """One entry of the spec's `sources:` mapping (its name is the key)."""

    # `type` is declared first so that the `path` check below can see it.
    type: SourceType | None = Field(
        None, description="File type; inferred from the extension (a directory is a save_to_disk dir: arrow)")
    path: str | list[str] | None = Field(
        None, description="File(s) or glob pattern(s) relative to the spec, or fsspec URLs (s3://, gs://, "
        "file://, ...); matched files are read sorted")
    hub: HubSource | None = Field(None, description="A Hugging Face hub dataset pinned to a revision")
    format: str | None = Field(None, description="Registered format that normalises each row (openai, sharegpt, ...)")
    fields: dict[str, str] = Field(
        default_factory=dict, description="Canonical field -> raw field path, overriding the format's defaults")
    tags: SourceTags = Field(default_factory=SourceTags, description="task / method / capability of every row")
    limit: StrictInt | None = Field(None, ge=0, description="Read only the first N rows of the source")
    lookup: str | None = Field(
        None, min_length=1, description="This source is a lookup table keyed by this field (joined, not emitted)")
    license: str | None = Field(None, description="Licence of the data, shown in the dataset card")
    id: str | None = Field(None, min_length=1, description="Raw field holding the row's id (part of the record id)")
    group: str | None = Field(
        None, min_length=1, description="Raw field path grouping rows for splits and caps, e.g. `question_id` or "
        "`messages.1.content` (default: the id field, else the row's prompt: its turns before the first assistant turn)")

    @field_validator("path")
    @classmethod
    def _paths(cls, v: str | list[str] | None, info: ValidationInfo) -> str | list[str] | None:
        patterns = [v] if isinstance(v, str) else v or []
        if isinstance(v, list) and not v:
            raise ValueError("`path` is an empty list; give at least one file or glob pattern")
        for p in patterns:
            if not p.strip():
                raise ValueError("`path` has an empty entry")
            explicit = info.data.get("type")
            suffix = Path(p).suffix.lower()
            if explicit is None and suffix and not glob.has_magic(suffix) and suffix not in EXTENSIONS:
                raise ValueError(f"cannot tell the type of '{p}' from its extension; set `type:` to one of "
                                 f"{allowed_list(SOURCE_TYPES)} (extensions: {allowed_list(EXTENSIONS)})")
        return v

    @field_validator("format")
    @classmethod
    def _format_known(cls, v: str | None) -> str | None:
        return v if v is None else FORMATS.check_name(v)  # ValueError with a did-you-mean

    @field_validator("fields")
    @classmethod
    def _fields_known(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        name = info.data.get("format")
        if v and name is not None:
            get_format(name).check_fields(v)
        return v

    @model_validator(mode="after")
    def _shape(self) -> "SourceSpec":
        if (self.path is None) == (self.hub is None):
            raise ValueError("a source needs exactly one of `path` (files or glob patterns, relative to the spec) "
                             "or `hub` (a Hugging Face dataset: {id, revision, split, config})")
        if self.hub is not None and self.type is not None:
            raise ValueError("`type` applies to `path` sources only (a hub dataset has its own)")
        if self.lookup is not None:
            given = sorted(k for k in ("format", "fields", "tags", "id", "group") if k in self.model_fields_set)
            if given:
                raise ValueError(f"a lookup source (`lookup: {self.lookup}`) is joined, not emitted as rows: "
                                 f"remove {allowed_list(given)}")
        elif self.format is None:
            raise ValueError("missing `format` (how to read each row); registered formats: "
                             + allowed_list(FORMATS.names()))
        return self

    def patterns(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path or [])
