"""The spec's `max_bad_rows`: how many quarantined rows a build tolerates before it fails."""
from __future__ import annotations

from dsc.compiler.engine.rowfiles import QuarantineEntry
from dsc.core.errors import BuildError
from dsc.spec.model import Spec


def bad_row_limit(spec: Spec, rows_read: int) -> int:
    """`max_bad_rows` as a count of rows (a fraction is of the rows read)."""
    limit = spec.max_bad_rows
    if isinstance(limit, float):
        return int(limit * rows_read)
    return int(limit)


def check_bad_rows(spec: Spec, quarantine: list[QuarantineEntry], rows_read: int, where: str) -> None:
    """BuildError naming a few examples when more rows of `quarantine` are bad than allowed."""
    bad = [q for q in quarantine if q.bad]
    limit = bad_row_limit(spec, rows_read)
    if len(bad) > limit:
        examples = "; ".join(q.example() for q in bad[:3])
        raise BuildError(
            f"{len(bad)} of {rows_read} rows were quarantined {where}, more than max_bad_rows allows ({limit}); "
            f"e.g. {examples}. Fix the data, or raise max_bad_rows in the spec.")
