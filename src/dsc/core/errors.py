"""Errors that the CLI turns into one clear message and an exit code (never a traceback)."""
from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError


class DscError(Exception):
    """A user-facing error. `exit_code` 2: bad spec or usage; 1: the build or check failed."""

    exit_code = 1


class SpecError(DscError):
    """A problem in a spec, located at file:line:col (1-based) when known."""

    exit_code = 2

    def __init__(self, message: str, file: str | None = None, line: int | None = None, col: int | None = None):
        # One line, always: a multi-line message (a library's error text) would split the
        # `file:line:col: message` line that editors and CI logs parse.
        self.message = re.sub(r"\s*\n\s*", "; ", message.strip())
        self.file = file
        self.line = line
        self.col = col
        super().__init__(self.located())

    def located(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        return where + self.message


class BuildError(DscError):
    """The build cannot finish (too many bad rows, a tokenizer that cannot load, ...)."""

    exit_code = 1


class LockError(DscError):
    """`dsc build --locked`: an input, the template, the tokenizer or dsc itself no longer
    matches `dsc.lock`."""

    exit_code = 1


class VerifyError(DscError):
    """`dsc verify`: the committed artifact (or lock) is not what its spec builds."""

    exit_code = 1


class ArtifactError(DscError):
    """A path given as an artifact is not a readable dsc artifact (usage error)."""

    exit_code = 2


def did_you_mean(word: str, allowed: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def allowed_list(allowed: Iterable[str]) -> str:
    return ", ".join(f"'{a}'" for a in sorted(allowed))


# ---------------------------------------------------------------------------------------------
# Located configuration errors: a pydantic error over YAML → `file:line:col: message`
# (the spec, `dsc.spec.model`; runtime settings, `dsc.spec.runtime`)
# ---------------------------------------------------------------------------------------------


def yaml_position(tree: Any, loc: tuple[Any, ...], *, top_if_missing: bool = False) -> tuple[int | None, int | None]:
    """1-based (line, col) of the deepest node of `loc` that exists in a round-trip YAML tree:
    the key's own position for a mapping entry (so 'unknown key' points at the key itself).
    `top_if_missing`: where nothing of `loc` exists (a key missing at the top), the start of
    the top-level mapping instead of (None, None)."""
    node, best = tree, (None, None)
    for part in loc:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, dict) and part in node:
                at = lc.key(part) if lc is not None else None
            elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
                at = lc.item(part) if lc is not None else None
            else:
                break
        except (KeyError, TypeError, AttributeError):
            break
        if at is not None:
            best = (at[0] + 1, at[1] + 1)
        node = node[part]
    if top_if_missing and best == (None, None) and hasattr(tree, "lc"):
        best = (tree.lc.line + 1, tree.lc.col + 1)
    return best


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for a in typing.get_args(annotation):
            out.extend(_unwrap(a))
        return out
    return [annotation]


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model whose fields are allowed at `loc` (for did-you-mean); the dict keys
    and list indices that pydantic puts in `loc` are skipped."""
    current: Any = model
    i = 0
    while i < len(loc):
        if not _is_model(current):
            return None
        field = current.model_fields.get(str(loc[i]))
        if field is None:
            return None
        i += 1
        nxt: Any = None
        for t in _unwrap(field.annotation):
            if _is_model(t):
                nxt = t
                break
            if typing.get_origin(t) in (dict, list) and i < len(loc):
                for u in _unwrap(typing.get_args(t)[-1]):
                    if _is_model(u):
                        nxt = u
                        i += 1  # skip the key / index
                        break
                if nxt is not None:
                    break
        current = nxt
    return current if _is_model(current) else None


def fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at `loc` ([] where no model is known)."""
    found = model_at(model, loc)
    return list(found.model_fields) if found is not None else []


def more_problems(n: int) -> str:
    """' (and N more problem(s))' for the problems a message leaves out."""
    return f" (and {n} more problem{'s' if n > 1 else ''})" if n else ""


def value_error_text(msg: str) -> str:
    """A validator's message without pydantic's 'Value error, ' / 'Assertion failed, ' prefix."""
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def one_line(e: ValidationError) -> str:
    """The first problem of a pydantic error as `key: message` (for errors raised in validators)."""
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    more = len(e.errors()) - 1
    return (f"'{loc}': {msg}" if loc else msg) + (f" (and {more} more)" if more else "")
