"""The tokenizer an artifact was built with, found offline to show token boundaries (`dsc inspect`,
`dsc report`): the one the manifest names, used only when its hash matches."""
from __future__ import annotations

from pathlib import Path

from dsc.artifact.inspection import TokenView
from dsc.artifact.manifest import Manifest
from dsc.chat.tokenize import RowTokenizer
from dsc.core.errors import BuildError, SpecError


def _tokenizer_candidates(ref: str, art_path: Path) -> list[Path]:
    out: list[Path] = []
    p = Path(ref).expanduser()
    if p.is_absolute():
        out.append(p)
    else:
        # cwd; the spec's directory when the artifact is at its default <spec dir>/build/<name>
        for base in (Path.cwd(), art_path.parent.parent, art_path.parent, art_path):
            out.append(base / p)
    try:  # a hub id: only a copy already in the local cache (inspect never goes online)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(ref, "tokenizer.json")
        if isinstance(cached, str):
            out.append(Path(cached).parent)
    except Exception:  # noqa: BLE001 - not a valid repo id, or no huggingface_hub: not a candidate
        pass
    return out


def find_tokenizer(manifest: Manifest, art_path: Path, override: Path | None = None
                   ) -> tuple[TokenView | None, str]:
    """The artifact's tokenizer and a note on where it came from (or why there is none).

    Only a tokenizer whose hash equals the manifest's is used: another one would draw wrong
    token boundaries."""
    tok = manifest.tokenizer
    if tok is None:
        return None, "not tokenised: supervised character spans shown"
    from tokenizers import Tokenizer

    candidates = [override] if override is not None else _tokenizer_candidates(tok.ref, art_path)
    mismatched: list[Path] = []
    for cand in candidates:
        if not (cand / "tokenizer.json").is_file():
            continue
        try:
            rt = RowTokenizer.load(str(cand.resolve()), Path("."))
        except (BuildError, SpecError):
            continue
        if rt.sha256 != tok.sha256:
            mismatched.append(cand)
            continue
        return TokenView(Tokenizer.from_file(str(rt.path)), cand), f"tokens from {cand}"
    if mismatched:
        return None, (f"tokenizer at {mismatched[0]} differs from the one the artifact was built with "
                      f"(sha256 {tok.sha256[:12]}…): supervised character spans shown")
    return None, (f"tokenizer '{tok.ref}' not reachable from here (give --tokenizer DIR): "
                  "supervised character spans shown")
