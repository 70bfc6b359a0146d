"""A spec as a build takes it: read and validated (`dsc.spec.model.read_spec`), then checked against
the file system (inputs exist, the template loads and compiles, a local tokenizer is there) and
across its sections (`check_semantics`), so that every problem is one located error before any
row is read."""
from __future__ import annotations

from pathlib import Path

from dsc.chat.templating import load_template
from dsc.compiler.stages.read.sources import resolve_files
from dsc.compiler.stages.transforms.pipeline import check_semantics
from dsc.spec.model import LoadedSpec, read_spec


def load_spec(path: str | Path) -> LoadedSpec:
    """Read, parse and validate a spec file, then check what can be checked without building."""
    loaded = read_spec(path)
    check_references(loaded)
    check_semantics(loaded)
    return loaded


def check_references(loaded: LoadedSpec) -> None:
    """Checks that need the file system: inputs exist, the template loads and compiles."""
    for name, source in loaded.spec.sources.items():
        if source.path is not None:
            with loaded.at("sources", name, "path"):
                resolve_files(source, loaded.base_dir)
    with loaded.at("template"):
        load_template(loaded.spec.template, loaded.base_dir)
    if loaded.spec.tokenize is not None:
        tok = loaded.spec.tokenize.tokenizer
        candidate = loaded.base_dir / tok
        looks_local = tok.startswith((".", "/")) or candidate.exists()
        if looks_local and not (candidate / "tokenizer.json").is_file():
            raise loaded.error(f"tokenizer directory {tok!r} has no tokenizer.json", ("tokenize", "tokenizer"))
