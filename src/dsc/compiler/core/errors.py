"""Errors that the CLI turns into one clear message and an exit code (never a traceback)."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


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
